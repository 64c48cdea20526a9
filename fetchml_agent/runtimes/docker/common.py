"""What every part of the docker runtime shares: its labels and names, the translation of the
docker SDK's errors, the state of one runtime (:class:`DockerBase`) and the lookups of containers
and images."""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import ipaddress
import re
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
import docker.types
import requests.exceptions

from ...allocators import GpuAllocator
from ...errors import (
    BackendError,
    BackendUnavailable,
    FetchmlError,
    InvalidArgument,
    NotFound,
    PolicyDenied,
)
from ...netpolicy import Firewall
from ...policy.scan import Installed
from ..base import (
    State,
    WorkspaceSpec,
)
from ..docker_schema import DEFAULT_IMAGE

__all__ = ["LABEL", "PEER_ALIASES_ENV", "DockerBase", "gateway_of", "image_allowed", "peer_alias", "rewrite_loopback_urls"]

LABEL = "io.fetchml"  # every label this runtime writes starts with it
_INSTANCE = f"{LABEL}.instance"
_WS_ID = f"{LABEL}.workspace.id"
_WS_NAME = f"{LABEL}.workspace.name"
_OWNER = f"{LABEL}.owner"
_GPUS = f"{LABEL}.gpus"
_RUN_ID = f"{LABEL}.run.id"
_CONFIG = f"{LABEL}.config"
_BUILT_BY = f"{LABEL}.built-by"
# A warm pool member's resources (docs/warm-pool.md): its pool, and its id (``warm_<hex>``), which
# names its network and volume for good, also once a workspace has claimed it.
_POOL = f"{LABEL}.pool"
_MEMBER = f"{LABEL}.pool.member"
_DEFAULT_WORKDIR = "/home/fetchml/work"
_DEFAULT_PORT = 8888
_NONROOT_USER = "1000:1000"
_BRIDGE_OPT = "com.docker.network.bridge.name"
_IMAGE_REF = re.compile(
    r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$"
)

if TYPE_CHECKING:
    pass

# A run container sees Nomad's task layout (the run launcher and the fetchml helper's variables
# name it): its own task dir, and an alloc dir whose data/ holds the results.
_RUN_TASK_DIR = "/fetchml/task"
_RUN_ALLOC_DIR = "/fetchml/alloc"
_RUN_SNAPSHOT = "/fetchml/snapshot"


def _explain(exc: Exception) -> str:
    text = getattr(exc, "explanation", None) or str(exc)
    return text.decode(errors="replace") if isinstance(text, bytes) else str(text)


@contextlib.contextmanager
def _docker_errors(what: str) -> Iterator[None]:
    """Translate docker SDK errors into project errors at the boundary."""
    try:
        yield
    except FetchmlError:
        raise
    except docker.errors.ImageNotFound as exc:
        raise NotFound(
            f"{what}: image not found on this host",
            f"{_explain(exc)}; images are never pulled: build it (images/build.sh or ml jupyter build)",
        ) from exc
    except docker.errors.NotFound as exc:
        raise NotFound(f"{what}: not found", _explain(exc)) from exc
    except docker.errors.APIError as exc:
        raise BackendError(f"{what} failed", _explain(exc)) from exc
    except (docker.errors.DockerException, requests.exceptions.ConnectionError) as exc:
        raise BackendUnavailable(
            "the Docker engine cannot be reached",
            f"{exc}; is dockerd running, and may the agent use its socket?",
        ) from exc


def image_allowed(image: str, allowed: Sequence[str] | None) -> bool:
    """Whether ``image`` matches the allowed list (``None``: everything is allowed).

    An entry is an image reference or a glob (``fetchml/*``); an entry without a tag allows every
    tag of that repository.
    """
    if allowed is None:
        return True
    repo = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
    for entry in allowed:
        if fnmatch.fnmatchcase(image, entry) or fnmatch.fnmatchcase(repo, entry):
            return True
    return False


def rewrite_loopback_urls(env: dict[str, str], port: int, host: str) -> dict[str, str]:
    """URLs in ``env`` that point at this host's loopback on ``port`` now point at ``host``.

    The agent builds a workspace's index URLs (PIP_INDEX_URL, UV_INDEX_URL, ...) for the local
    runtime, where the workspace shares the host's loopback; a container reaches the agent at
    ``host`` instead.
    """
    h = f"[{host}]" if ":" in host else host
    pattern = re.compile(rf"(?<=://)(?:127\.0\.0\.1|localhost|\[::1\]):{port}(?![0-9])")
    return {k: pattern.sub(f"{h}:{port}", v) for k, v in env.items()}


def _is_local_address(addr: str) -> bool:
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.bind((addr, 0))
        except OSError:
            return False
    return True


# [issue 13, access] Read by the fetchml_jupyter extension (fetchml_jupyter.state, the same name).
PEER_ALIASES_ENV = "FETCHML_ACCESS_PEER_ALIASES"


def peer_alias(gateway: str | None, publish_addr: str) -> str | None:
    """``GATEWAY=PUBLISH_ADDR`` when the port is published on a loopback address, else ``None``.

    A workspace's JupyterLab sees every connection through its published port as coming from its
    network's gateway (Docker's proxy relays loopback clients from there); host processes that
    connect to the container directly come from there too. With the port published on loopback
    only, such a connection can only come from this host, so it is reported as the loopback
    address it came through, and the agent's allowlists and trusted proxies apply to it as on the
    local runtime. Published on any other address, Docker's proxy may relay clients from anywhere
    from the gateway: nothing is aliased, and the agent sees the gateway (docs/access.md).
    """
    if not gateway:
        return None
    try:
        loopback = ipaddress.ip_address(publish_addr).is_loopback
    except ValueError:
        return None
    return f"{gateway}={publish_addr}" if loopback else None


def gateway_of(net: Any) -> str | None:
    """The gateway address of a Docker network (its IPAM config), if it has one."""
    for cfg in (getattr(net, "attrs", None) or {}).get("IPAM", {}).get("Config") or []:
        if cfg.get("Gateway"):
            return str(cfg["Gateway"])
    return None


def _iface_for(prefix: str, workspace_id: str) -> str:
    return "fml" + hashlib.sha1(f"{prefix}/{workspace_id}".encode()).hexdigest()[:11]


class DockerBase:
    """The state of one docker runtime, and the lookups its parts share.

    ``image`` is the default workspace image; ``allowed_images`` (``None``: any) limits what
    ``--image`` may name, besides images this runtime built itself; ``allowed_bases`` is the
    list the agent passes to :meth:`build_image` (``None``: any). ``index`` is the address and
    port at which containers reach the agent's package index (address ``None``: the gateway of
    Docker's default bridge, e.g. 172.17.0.1; the agent must listen there); ``dns`` and
    ``allow`` open more destinations (:class:`~fetchml_agent.netpolicy.NetPolicy`). ``gpus`` are
    the host's GPU indices (``None``: detected with nvidia-smi at :meth:`open`).
    """

    gpus: GpuAllocator

    def __init__(
        self,
        *,
        image: str = DEFAULT_IMAGE,
        allowed_images: Sequence[str] | None = None,
        allowed_bases: Sequence[str] | None = ("fetchml/workspace",),
        base_url: str = "unix:///var/run/docker.sock",
        prefix: str = "fetchml",
        publish_addr: str = "127.0.0.1",
        index: tuple[str | None, int] | None = None,
        dns: Sequence[str] = (),
        allow: Sequence[Any] = (),
        table: str = "fetchml_docker",
        log_rate: str = "10/minute",
        subnet_pool: str = "10.213.0.0/16",
        subnet_prefix: int = 28,
        gpus: Sequence[int] | None = None,
        pids_limit: int | None = 4096,
        ready_timeout: float = 120.0,
        nft: Sequence[str] = ("nft",),
        disk_dir: Path | None = None,
    ) -> None:
        if not re.match(r"^[a-z0-9][a-z0-9_.-]{0,30}$", prefix):
            raise InvalidArgument(f"docker runtime prefix: expected a short lower-case name, got {prefix!r}")
        self.image = image
        self.allowed_images = list(allowed_images) if allowed_images is not None else None
        self.allowed_bases = list(allowed_bases) if allowed_bases is not None else None
        self.base_url = base_url
        self.prefix = prefix
        self.publish_addr = publish_addr
        self._index = index
        self._dns = tuple(dns)
        self._allow = tuple(allow)
        self._table = table
        self._log_rate = log_rate
        self.subnet_pool = ipaddress.ip_network(subnet_pool)
        self.subnet_prefix = subnet_prefix
        self._gpu_inventory: list[int] | None = list(gpus) if gpus is not None else None
        self.gpus = GpuAllocator(gpus or ())
        self.pids_limit = pids_limit
        self.ready_timeout = ready_timeout
        self._nft = tuple(nft)
        #: Where size-limited workspace volumes keep their filesystems (``--disk``): an ext4 image
        #: file per workspace, loop-mounted on a directory the volume binds. ``None``: not offered.
        self.disk_dir = disk_dir
        self._disk_how: dict[str, str] = {}  # workspace id -> what ``limits`` says for disk
        self._client: docker.DockerClient | None = None
        self.firewall: Firewall | None = None
        self._masquerade = True
        self._lock = asyncio.Lock()
        self._scans: dict[str, list[Installed]] = {}

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            raise BackendUnavailable("the docker runtime is not open", "call open() first")
        return self._client

    @property
    def index(self) -> tuple[str, int] | None:
        """Where containers reach the agent's package index (after :meth:`open`)."""
        return self.firewall.policy.index if self.firewall else None

    # -- names ----------------------------------------------------------------------------

    def _names(self, spec_name: str, backing: str = "") -> tuple[str, str, str]:
        """(container, network, volume) names of a workspace. One claimed from a warm pool member
        (``backing``) keeps the member's network and volume: Docker cannot rename those."""
        base = f"{self.prefix}-{backing or spec_name}"
        return f"{self.prefix}-{spec_name}", base, f"{base}-work"

    def _labels(self, spec: WorkspaceSpec) -> dict[str, str]:
        labels = {f"{LABEL}.{k}" if not k.startswith(LABEL) else k: str(v) for k, v in spec.labels.items()}
        labels[_INSTANCE] = self.prefix
        if spec.backing:
            labels[_MEMBER] = spec.backing
        if spec.backing and not spec.owner:
            return labels  # a warm pool member (its labels name its pool) is nobody's: nothing adopts it
        labels.update({_WS_ID: spec.id, _WS_NAME: spec.name, _OWNER: spec.owner})
        return labels

    def _image(self, ref: str) -> Any:
        with _docker_errors(f"image {ref}"):
            return self.client.images.get(ref)

    def _check_image_allowed(self, ref: str, image: Any) -> None:
        labels = image.attrs.get("Config", {}).get("Labels") or {}
        if ref == self.image or labels.get(_BUILT_BY) == self.prefix:
            return
        if not image_allowed(ref, self.allowed_images):
            raise PolicyDenied(
                f"image {ref} is not in the agent's allowed images",
                "allowed: " + ", ".join(self.allowed_images or []) + "; ask an admin to add it",
            )

    def _find_container(self, spec_name: str) -> Any:
        cname = f"{self.prefix}-{spec_name}"
        with _docker_errors(f"looking up container {cname}"):
            try:
                return self.client.containers.get(cname)
            except docker.errors.NotFound:
                return None

    def _container(self, state: State) -> Any:
        with _docker_errors("looking up the workspace container"):
            try:
                return self.client.containers.get(state.get("container_id") or state.get("container"))
            except docker.errors.NotFound:
                return None

    def _rename(self, container: Any, name: str) -> None:
        with _docker_errors(f"renaming container {container.name} to {name}"):
            container.rename(name)
            container.reload()

    def _remove_container(self, container: Any) -> None:
        with _docker_errors(f"removing container {container.name}"):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)

