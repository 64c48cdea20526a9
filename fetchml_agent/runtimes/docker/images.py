"""Images: what an image holds (the startup scan) and custom images (``ml jupyter build``)."""

from __future__ import annotations

import asyncio
import io
import shlex
import tarfile
import time
import urllib.parse
from collections.abc import Sequence

from packaging.requirements import InvalidRequirement, Requirement

from ...aio import run_blocking
from ...errors import (
    BackendError,
    InvalidArgument,
    PolicyDenied,
)
from ...policy.scan import SCAN_ARGV, Installed, installed_from_json
from ..base import (
    Inventory,
    PackageCheck,
    Progress,
    WorkspaceSpec,
)
from .common import _BUILT_BY, _IMAGE_REF, _INSTANCE, LABEL, DockerBase, _docker_errors, image_allowed


class ImagesMixin(DockerBase):
    """Reads images' packages and builds custom images."""

    async def list_distributions(self, image: str) -> list[Installed]:
        """``[(name, version)]`` of the Python distributions installed in ``image``, for the
        startup scan (:func:`fetchml_agent.policy.scan.check_startup`): the policy's
        :data:`~fetchml_agent.policy.scan.SCAN_ARGV` run with the image's ``python`` in a
        throwaway container with no network. Cached per image id (images are immutable)."""
        img = await run_blocking(self._image, image)
        if img.id in self._scans:
            return self._scans[img.id]

        def scan() -> bytes:
            with _docker_errors(f"listing the packages of image {image}"):
                return self.client.containers.run(
                    img.id,
                    ["python", *SCAN_ARGV],
                    remove=True,
                    network_disabled=True,
                    stdout=True,
                    stderr=False,
                    cap_drop=["ALL"],
                    security_opt=["no-new-privileges:true"],
                    labels={_INSTANCE: self.prefix, f"{LABEL}.scan": "true"},
                )

        try:
            found = installed_from_json((await run_blocking(scan)).decode(errors="replace"))
        except (InvalidArgument, BackendError) as exc:
            raise BackendError(
                f"cannot list the Python packages in image {image}",
                f"{exc.details or exc.message}; the image needs `python` on its PATH",
            ) from exc
        self._scans[img.id] = found
        return found

    async def inventory(self, spec: WorkspaceSpec) -> Inventory:
        """The packages of the workspace's image (:meth:`list_distributions`)."""
        image = spec.image or self.image
        return Inventory(list(await self.list_distributions(image)), f"image {image}")

    async def build_image(
        self,
        name: str,
        *,
        base: str,
        packages: Sequence[str],
        check_packages: PackageCheck,
        allowed_bases: Sequence[str] | None,
        progress: Progress,
        gpu_support: bool = False,
        index_url: str | None = None,
    ) -> str:
        """Build image ``name`` FROM ``base`` with ``packages`` pip-installed; returns its tag.

        Refuses (before anything is built) a base outside ``allowed_bases``, a base that is not on
        this host (nothing is pulled), and any package spec that is not a plain requirement
        (``name[extras] <specifiers> ; marker``). ``check_packages(specs)`` is the policy: it
        raises (PolicyDenied, ApprovalRequired) to refuse. pip installs through ``index_url`` (the
        agent's filtering index, which also checks dependencies) when given. ``gpu_support`` adds
        the environment the NVIDIA container runtime reads. The build log streams to ``progress``.
        Images built here are labelled as this runtime's and may be used by ``--image``.
        """
        tag = name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"
        if not _IMAGE_REF.match(tag):
            raise InvalidArgument(
                f"image name {name!r} is not a valid Docker image name", "e.g. team/custom-image:1"
            )
        if not image_allowed(base, allowed_bases):
            raise PolicyDenied(
                f"base image {base} is not in the agent's allowed base images",
                "allowed: " + ", ".join(allowed_bases or []),
            )
        specs = [_plain_requirement(p) for p in packages]
        if not specs:
            raise InvalidArgument("no packages given", 'pass --packages="numpy pandas"')
        checked = check_packages(list(specs))
        if asyncio.iscoroutine(checked) or isinstance(checked, asyncio.Future):
            await checked
        base_img = await run_blocking(self._image, base)
        dockerfile = _custom_dockerfile(base_img.id, specs, gpu_support)
        labels = {
            _BUILT_BY: self.prefix,
            f"{LABEL}.image": "custom",
            f"{LABEL}.base": base,
            f"{LABEL}.packages": " ".join(specs),
            f"{LABEL}.gpu": str(gpu_support).lower(),
        }
        context = io.BytesIO()
        with tarfile.open(fileobj=context, mode="w") as tar:
            data = dockerfile.encode()
            info = tarfile.TarInfo("Dockerfile")
            info.size, info.mtime = len(data), int(time.time())
            tar.addfile(info, io.BytesIO(data))
        context.seek(0)
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        tail: list[str] = []

        def build() -> str | None:
            image_id = None
            try:
                with _docker_errors(f"building image {tag}"):
                    for chunk in self.client.api.build(
                        fileobj=context,
                        custom_context=True,
                        tag=tag,
                        rm=True,
                        forcerm=True,
                        pull=False,
                        decode=True,
                        labels=labels,
                        buildargs={
                            "PIP_INDEX_URL": index_url or "",
                            "PIP_TRUSTED_HOST": urllib.parse.urlsplit(index_url).hostname or ""
                            if index_url
                            else "",
                        },
                    ):
                        if "error" in chunk:
                            raise BackendError(f"building image {tag} failed", str(chunk["error"]).strip())
                        if "aux" in chunk and "ID" in chunk["aux"]:
                            image_id = chunk["aux"]["ID"]
                        for line in str(chunk.get("stream", "")).splitlines():
                            if line.strip():
                                loop.call_soon_threadsafe(lines.put_nowait, line.rstrip())
            finally:
                loop.call_soon_threadsafe(lines.put_nowait, None)
            return image_id

        await progress(f"building {tag} from {base}")
        job = asyncio.ensure_future(run_blocking(build))
        while (line := await lines.get()) is not None:
            tail = [*tail[-19:], line]
            await progress(line)
        try:
            await job
        except BackendError as exc:
            raise BackendError(exc.message, (exc.details + "\n" + "\n".join(tail)).strip()) from exc
        await progress(f"built {tag}")
        return tag



def _plain_requirement(spec: str) -> str:
    """``spec`` if it is a plain requirement safe to write into a Dockerfile, else InvalidArgument."""
    text = spec.strip()
    try:
        req = Requirement(text)
    except InvalidRequirement as exc:
        raise InvalidArgument(f"not a package requirement: {spec!r}", str(exc)) from None
    if req.url or text.startswith("-") or any(ch in text for ch in "\n\r\\$`"):
        raise InvalidArgument(
            f"package {spec!r} is not a plain name and version",
            "custom images install from the package index only: no URLs, paths or pip options",
        )
    return text


def _custom_dockerfile(base_id: str, specs: Sequence[str], gpu_support: bool) -> str:
    lines = [
        "# Built by fetchml's docker runtime (ml jupyter build).",
        f"FROM {base_id}",
        "ARG PIP_INDEX_URL=",
        "ARG PIP_TRUSTED_HOST=",
        # The host's CA bundle, when the base has one, also signs an intercepting proxy.
        'RUN if [ -z "$PIP_INDEX_URL" ]; then unset PIP_INDEX_URL PIP_TRUSTED_HOST; fi'
        " && if [ -f /etc/ssl/certs/ca-certificates.crt ]; then export PIP_CERT=/etc/ssl/certs/ca-certificates.crt; fi"
        " && python -m pip install --no-cache-dir --disable-pip-version-check "
        + " ".join(shlex.quote(s) for s in specs),
    ]
    if gpu_support:
        lines += [
            "ENV NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility",
            'LABEL com.nvidia.volumes.needed="nvidia_driver" io.fetchml.gpu="true"',
        ]
    return "\n".join(lines) + "\n"


