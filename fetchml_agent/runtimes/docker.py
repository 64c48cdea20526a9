"""The docker runtime: one container per workspace on this host, each on a network of its own.

A workspace ``NAME`` owns, all named with the runtime's ``prefix`` (default ``fetchml``) and
labelled ``io.fetchml.instance=<prefix>`` so that :meth:`DockerRuntime.discover` adopts them
after an agent restart:

- the container ``<prefix>-NAME`` from the workspace image: non-root user, every capability
  dropped, ``no-new-privileges``, an init process, ``--cpu``/``--memory`` as hard cgroup limits
  (NanoCpus; Memory with no swap beyond it), ``--gpu N`` as N GPUs by device request;
  JupyterLab's port published on ``publish_addr`` (loopback by default) only;
- the volume ``<prefix>-NAME-work`` mounted at the image's work directory (kept by stop,
  removed by :meth:`~DockerRuntime.remove`);
- the bridge network ``<prefix>-NAME`` (its own /28 from ``subnet_pool``, interface
  ``fml<hash>``, no inter-container traffic), whose egress the host firewall
  (:mod:`fetchml_agent.netpolicy`, table ``inet <table>``) limits to the agent's package index,
  DNS and the allowlist. The firewall is installed before the network exists and the start fails
  when it cannot be: a workspace never runs unfiltered.

Why a published loopback port and not an ``--internal`` network: Docker publishes no port of a
container on an internal network, and an internal network still reaches every service on the
host; the nftables table closes both the host and the forward path instead, so the user reaches
JupyterLab at ``http://127.0.0.1:PORT/`` with no proxy in the agent to keep alive.

An experiment run is a container of its own, ``<prefix>-run-<run id>`` (the workspace's image and
network, the same hardening and limits, the run's GPUs), labelled with the run's id and not with a
workspace id, so that it is never adopted as a workspace; see :meth:`DockerRuntime.submit_run`.

A stopped workspace keeps its container, so packages installed into it survive stop/start; the
container is recreated (and says so in progress) when the image, resources, environment or token
changed. Docker SDK calls run in threads, off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fnmatch
import hashlib
import io
import ipaddress
import json
import os
import re
import shlex
import shutil
import socket
import tarfile
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
import docker.types
import httpx
import requests.exceptions
from packaging.requirements import InvalidRequirement, Requirement

from fetchml_agent.aio import run_blocking
from fetchml_agent.errors import (
    BackendError,
    BackendUnavailable,
    FetchmlError,
    InsufficientResources,
    InvalidArgument,
    InvalidState,
    NotFound,
    PolicyDenied,
    Timeout,
)
from fetchml_agent.gpus import detect_gpus
from fetchml_agent.netpolicy import Firewall, NetPolicy, WorkspaceNet
from fetchml_agent.policy.scan import SCAN_ARGV, Installed, installed_from_json
from fetchml_agent.runtimes.base import (
    ExecResult,
    Output,
    Progress,
    Runtime,
    Started,
    State,
    Status,
    WorkspaceSpec,
)
from fetchml_agent.runtimes.docker_schema import DEFAULT_IMAGE

__all__ = [
    "DEFAULT_IMAGE",
    "DockerRuntime",
    "LABEL",
    "PackageCheck",
    "image_allowed",
    "rewrite_loopback_urls",
]

LABEL = "io.fetchml"  # every label this runtime writes starts with it
_INSTANCE = f"{LABEL}.instance"
_WS_ID = f"{LABEL}.workspace.id"
_WS_NAME = f"{LABEL}.workspace.name"
_OWNER = f"{LABEL}.owner"
_GPUS = f"{LABEL}.gpus"
_RUN_ID = f"{LABEL}.run.id"
_CONFIG = f"{LABEL}.config"
_BUILT_BY = f"{LABEL}.built-by"
_DEFAULT_WORKDIR = "/home/fetchml/work"
_DEFAULT_PORT = 8888
_NONROOT_USER = "1000:1000"
_BRIDGE_OPT = "com.docker.network.bridge.name"
_IMAGE_REF = re.compile(
    r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$"
)

if TYPE_CHECKING:
    from fetchml_agent.config import AgentConfig
    from fetchml_agent.nomad.render import RunSpec
    from fetchml_agent.runtimes.nomad import RunStatus

# A run container sees Nomad's task layout (the run launcher and the fetchml helper's variables
# name it): its own task dir, and an alloc dir whose data/ holds the results.
_RUN_TASK_DIR = "/fetchml/task"
_RUN_ALLOC_DIR = "/fetchml/alloc"
_RUN_SNAPSHOT = "/fetchml/snapshot"

PackageCheck = Callable[[list[str]], "Awaitable[None] | None"]


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


def _gateway_of(net: Any) -> str | None:
    for cfg in (getattr(net, "attrs", None) or {}).get("IPAM", {}).get("Config") or []:
        if cfg.get("Gateway"):
            return str(cfg["Gateway"])
    return None


def _iface_for(prefix: str, workspace_id: str) -> str:
    return "fml" + hashlib.sha1(f"{prefix}/{workspace_id}".encode()).hexdigest()[:11]


class DockerRuntime(Runtime):
    """Workspaces as containers of the local Docker engine; see the module docstring.

    ``image`` is the default workspace image; ``allowed_images`` (``None``: any) limits what
    ``--image`` may name, besides images this runtime built itself; ``allowed_bases`` is the
    list the agent passes to :meth:`build_image` (``None``: any). ``index`` is the address and
    port at which containers reach the agent's package index (address ``None``: the gateway of
    Docker's default bridge, e.g. 172.17.0.1; the agent must listen there); ``dns`` and
    ``allow`` open more destinations (:class:`~fetchml_agent.netpolicy.NetPolicy`). ``gpus`` are
    the host's GPU indices (``None``: detected with nvidia-smi at :meth:`open`).
    """

    name = "docker"

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
        self._gpus: list[int] | None = list(gpus) if gpus is not None else None
        self.pids_limit = pids_limit
        self.ready_timeout = ready_timeout
        self._nft = tuple(nft)
        self._client: docker.DockerClient | None = None
        self.firewall: Firewall | None = None
        self._masquerade = True
        self._lock = asyncio.Lock()
        self._scans: dict[str, list[Installed]] = {}

    @classmethod
    def from_config(cls, config: AgentConfig) -> DockerRuntime:
        """From agent.yaml's ``docker:`` section (:data:`~fetchml_agent.runtimes.docker_schema.
        DOCKER_SECTION_SCHEMA`). The index defaults to the agent's own port on the gateway of
        Docker's default bridge."""
        d = config.section("docker")
        index_addr: str | None = None
        index_port = config.port
        if d.get("index"):
            host, _, port = str(d["index"]).rpartition(":")
            index_addr, index_port = (host.strip("[]") or None), int(port)
        return cls(
            image=d.get("image") or DEFAULT_IMAGE,
            allowed_images=d.get("allowed_images"),
            allowed_bases=d.get("allowed_bases", ["fetchml/workspace"]),
            base_url=d.get("socket") or "unix:///var/run/docker.sock",
            prefix=d.get("prefix") or "fetchml",
            publish_addr=d.get("publish_addr") or "127.0.0.1",
            index=(index_addr, index_port),
            dns=d.get("dns") or (),
            allow=d.get("allow") or (),
            table=d.get("firewall_table") or "fetchml_docker",
            log_rate=d.get("log_rate") or "10/minute",
            subnet_pool=d.get("subnet_pool") or "10.213.0.0/16",
            subnet_prefix=int(d.get("subnet_prefix") or 28),
            gpus=d.get("gpus"),
            pids_limit=d.get("pids_limit", 4096),
            ready_timeout=float(d.get("start_timeout") or 120),
        )

    # -- connection -----------------------------------------------------------------------

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            raise BackendUnavailable("the docker runtime is not open", "call open() first")
        return self._client

    async def open(self) -> None:
        """Connect to the engine, detect GPUs, and (re)install the firewall for existing networks."""

        def connect() -> tuple[docker.DockerClient, str | None]:
            with _docker_errors("connecting to the Docker engine"):
                client = docker.DockerClient(base_url=self.base_url, timeout=120)
                client.ping()
                gateway = None
                if self._index is not None and self._index[0] is None:
                    ipam = client.networks.get("bridge").attrs.get("IPAM") or {}
                    cfg = (ipam.get("Config") or [{}])[0]
                    gateway = cfg.get("Gateway") or str(next(ipaddress.ip_network(cfg["Subnet"]).hosts()))
                return client, gateway

        self._client, gateway = await run_blocking(connect)
        index = None
        if self._index is not None:
            index = (self._index[0] or gateway or "", int(self._index[1]))
        policy = NetPolicy.from_config(
            {
                "table": self._table,
                "index": {"addr": index[0], "port": index[1]} if index else None,
                "dns": list(self._dns),
                "allow": [a if isinstance(a, dict) else dataclasses.asdict(a) for a in self._allow],
                "log_rate": self._log_rate,
            }
        )
        self.firewall = Firewall(policy, self._nft)
        # Replies from allowlisted places outside the host need NAT; with nothing outside
        # allowed, a network without masquerading is a second lock on the same door.
        self._masquerade = bool(policy.allow or policy.dns) or (
            policy.index is not None and not _is_local_address(policy.index[0])
        )
        if self._gpus is None:
            self._gpus = [g["index"] for g in await run_blocking(detect_gpus)]
        async with self._lock:
            await self._apply_firewall()

    async def close(self) -> None:
        if self._client is not None:
            await run_blocking(self._client.close)
            self._client = None

    @property
    def index(self) -> tuple[str, int] | None:
        """Where containers reach the agent's package index (after :meth:`open`)."""
        return self.firewall.policy.index if self.firewall else None

    def index_base_url(self, agent: Any) -> str | None:
        """The agent's base URL as workspace containers reach it (the index-only listener on
        :attr:`index`); ``None`` before :meth:`open`."""
        if self.index is None or not self.index[0]:
            return None
        host = f"[{self.index[0]}]" if ":" in self.index[0] else self.index[0]
        return f"{agent.config.scheme}://{host}:{self.index[1]}"

    def gpu_capacity(self) -> int:
        return len(self._gpus or [])

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "image": self.image,
            "prefix": self.prefix,
            "firewall_table": f"inet {self._table}",
            "index": "{}:{}".format(*self.index) if self.index else None,
            "gpus": self.gpu_capacity(),
        }

    # -- names ----------------------------------------------------------------------------

    def _names(self, spec_name: str) -> tuple[str, str, str]:
        """(container, network, volume) names of a workspace."""
        return f"{self.prefix}-{spec_name}", f"{self.prefix}-{spec_name}", f"{self.prefix}-{spec_name}-work"

    def _labels(self, spec: WorkspaceSpec) -> dict[str, str]:
        labels = {f"{LABEL}.{k}" if not k.startswith(LABEL) else k: str(v) for k, v in spec.labels.items()}
        labels.update({_INSTANCE: self.prefix, _WS_ID: spec.id, _WS_NAME: spec.name, _OWNER: spec.owner})
        return labels

    # -- firewall and networks ------------------------------------------------------------

    def _our_networks(self) -> list[Any]:
        with _docker_errors("listing workspace networks"):
            return list(self.client.networks.list(filters={"label": [f"{_INSTANCE}={self.prefix}"]}))

    @staticmethod
    def _net_entry(net: Any) -> WorkspaceNet:
        attrs = net.attrs
        cfg = ((attrs.get("IPAM") or {}).get("Config") or [{}])[0]
        return WorkspaceNet(
            name=(attrs.get("Labels") or {}).get(_WS_NAME, net.name),
            iface=(attrs.get("Options") or {}).get(_BRIDGE_OPT, ""),
            subnet=cfg.get("Subnet", ""),
        )

    async def _apply_firewall(self, extra: WorkspaceNet | None = None, without: str | None = None) -> None:
        """Render the table for our networks (+ ``extra``, - network ``without``). Hold the lock."""
        assert self.firewall is not None
        nets = [n for n in await run_blocking(self._our_networks) if n.name != without]
        entries = [self._net_entry(n) for n in nets]
        entries = [e for e in entries if e.iface]
        if extra is not None and all(e.name != extra.name for e in entries):
            entries.append(extra)
        await self.firewall.apply(entries)

    def _free_subnet(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        used = []
        with _docker_errors("listing networks"):
            for net in self.client.networks.list():
                for cfg in (net.attrs.get("IPAM") or {}).get("Config") or []:
                    with contextlib.suppress(KeyError, ValueError):
                        used.append(ipaddress.ip_network(cfg["Subnet"], strict=False))
        for candidate in self.subnet_pool.subnets(new_prefix=self.subnet_prefix):
            if not any(candidate.overlaps(u) for u in used if u.version == candidate.version):
                return candidate
        raise InsufficientResources(
            f"no free /{self.subnet_prefix} left in the workspace subnet pool {self.subnet_pool}",
            "delete unused workspaces or configure a larger docker.subnet_pool",
        )

    async def _ensure_network(self, spec: WorkspaceSpec) -> tuple[Any, bool]:
        """The workspace's network, created (firewall first) when missing. Hold the lock."""
        _, net_name, _ = self._names(spec.name)

        def find() -> Any:
            with _docker_errors(f"looking up network {net_name}"):
                try:
                    return self.client.networks.get(net_name)
                except docker.errors.NotFound:
                    return None

        net = await run_blocking(find)
        if net is not None:
            await self._apply_firewall()
            return net, False
        subnet = await run_blocking(self._free_subnet)
        iface = _iface_for(self.prefix, spec.id)
        await self._apply_firewall(extra=WorkspaceNet(spec.name, iface, str(subnet)))

        def create() -> Any:
            gateway = str(next(subnet.hosts()))
            ipam = docker.types.IPAMConfig(
                pool_configs=[docker.types.IPAMPool(subnet=str(subnet), gateway=gateway)]
            )
            with _docker_errors(f"creating network {net_name}"):
                return self.client.networks.create(
                    net_name,
                    driver="bridge",
                    ipam=ipam,
                    check_duplicate=True,
                    labels=self._labels(spec),
                    options={
                        _BRIDGE_OPT: iface,
                        "com.docker.network.bridge.enable_icc": "false",
                        "com.docker.network.bridge.enable_ip_masquerade": str(self._masquerade).lower(),
                        "com.docker.network.bridge.host_binding_ipv4": self.publish_addr,
                    },
                )

        try:
            return await run_blocking(create), True
        except FetchmlError:
            await self._apply_firewall()
            raise

    # -- images ---------------------------------------------------------------------------

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

    # -- lifecycle ------------------------------------------------------------------------

    def _find_container(self, spec_name: str) -> Any:
        cname, _, _ = self._names(spec_name)
        with _docker_errors(f"looking up container {cname}"):
            try:
                return self.client.containers.get(cname)
            except docker.errors.NotFound:
                return None

    def _gpus_in_use(self, except_name: str) -> set[int]:
        used: set[int] = set()
        with _docker_errors("listing workspace containers"):
            for c in self.client.containers.list(
                all=True,
                filters={
                    "label": [f"{_INSTANCE}={self.prefix}"],
                    "status": ["created", "running", "restarting"],
                },
            ):
                if c.name == self._names(except_name)[0]:
                    continue
                used.update(int(x) for x in (c.labels.get(_GPUS) or "").split(",") if x)
        return used

    def _container_config(
        self, spec: WorkspaceSpec, image: Any, gpu_ids: list[int], net_name: str, vol_name: str,
        gateway: str | None = None,
    ) -> dict[str, Any]:
        cfg = image.attrs.get("Config") or {}
        labels = cfg.get("Labels") or {}
        workdir = labels.get(f"{LABEL}.workdir") or (
            cfg.get("WorkingDir") if cfg.get("WorkingDir") not in (None, "", "/") else _DEFAULT_WORKDIR
        )
        port = int(labels.get(f"{LABEL}.port") or _DEFAULT_PORT)
        user = cfg.get("User") or ""
        if user.split(":")[0] in ("", "root", "0"):
            user = _NONROOT_USER
        env = dict(spec.env)
        if self.index is not None:
            env = rewrite_loopback_urls(env, self.index[1], self.index[0])
            # pip and uv refuse plain-HTTP indexes off loopback unless the host is trusted.
            env.setdefault("PIP_TRUSTED_HOST", self.index[0])
            env.setdefault("UV_INSECURE_HOST", self.index[0])
        env["JUPYTER_TOKEN"] = spec.token
        if spec.password_hash:
            env["FETCHML_JUPYTER_PASSWORD_HASH"] = spec.password_hash
        env.setdefault("FETCHML_WORKSPACE", spec.name)
        # [issue 13, access] JupyterLab sees connections through the published port as coming
        # from the network's gateway; tell it what that address stands for (see PEER_ALIASES_ENV).
        alias = peer_alias(gateway, self.publish_addr)
        if alias:
            env[PEER_ALIASES_ENV] = alias
        res = spec.resources
        kwargs: dict[str, Any] = {
            "image": image.id,
            "name": self._names(spec.name)[0],
            "hostname": spec.name[:63],
            "user": user,
            "environment": env,
            "labels": {**self._labels(spec), _GPUS: ",".join(map(str, gpu_ids)), f"{LABEL}.port": str(port)},
            "network": net_name,
            "ports": {f"{port}/tcp": (self.publish_addr, spec.port)},
            "volumes": {vol_name: {"bind": workdir, "mode": "rw"}},
            "working_dir": workdir,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges:true"],
            "init": True,
            "detach": True,
            "pids_limit": self.pids_limit,
        }
        if res.cpu:
            kwargs["nano_cpus"] = int(res.cpu * 1e9)
        if res.memory_mb:
            kwargs["mem_limit"] = f"{res.memory_mb}m"
            kwargs["memswap_limit"] = f"{res.memory_mb}m"
        if gpu_ids:
            kwargs["device_requests"] = [
                docker.types.DeviceRequest(device_ids=[str(g) for g in gpu_ids], capabilities=[["gpu"]])
            ]
            kwargs["environment"].setdefault("NVIDIA_DRIVER_CAPABILITIES", "compute,utility")
        digest = json.dumps(
            {k: v for k, v in kwargs.items() if k != "device_requests"}, sort_keys=True, default=str
        )
        kwargs["labels"][_CONFIG] = hashlib.sha256(digest.encode()).hexdigest()[:16]
        return kwargs

    async def start(self, spec: WorkspaceSpec, progress: Progress) -> Started:
        """Start (or adopt, or restart) the workspace's container; return once JupyterLab answers."""
        ref = spec.image or self.image
        await progress(f"checking image {ref}")
        image = await run_blocking(self._image, ref)
        self._check_image_allowed(ref, image)
        cname, _, vol_name = self._names(spec.name)
        created: list[str] = []
        async with self._lock:
            existing = await run_blocking(self._find_container, spec.name)
            if existing is not None and existing.status == "running":
                await progress("already running: adopting")
                return await self._ready(spec, existing, progress, created)
            gpu_ids = list(spec.gpu_ids)
            if spec.resources.gpu and not gpu_ids:  # the agent did not assign them: pick here
                in_use = await run_blocking(self._gpus_in_use, spec.name)
                free = [g for g in (self._gpus or []) if g not in in_use]
                if len(free) < spec.resources.gpu:
                    raise InsufficientResources(
                        f"workspace {spec.name} asks for {spec.resources.gpu} GPU(s) but this host has "
                        f"{len(self._gpus or [])}, {len(free)} of them free",
                        "stop a workspace that holds GPUs or ask for fewer (--gpu)",
                    )
                gpu_ids = free[: spec.resources.gpu]
            elif any(g not in (self._gpus or []) for g in gpu_ids):
                raise InsufficientResources(
                    f"workspace {spec.name} was assigned GPU(s) {gpu_ids} but this host has {self._gpus or 'none'}"
                )
            await progress("preparing network")

            def ensure_volume() -> None:
                with _docker_errors(f"creating volume {vol_name}"):
                    try:
                        self.client.volumes.get(vol_name)
                    except docker.errors.NotFound:
                        self.client.volumes.create(vol_name, labels=self._labels(spec))
                        created.append("volume")

            volume_job = asyncio.ensure_future(run_blocking(ensure_volume))
            try:
                try:
                    net, new_net = await self._ensure_network(spec)
                    if new_net:
                        created.append("network")
                finally:
                    await asyncio.gather(volume_job, return_exceptions=True)
                volume_job.result()
                kwargs = self._container_config(spec, image, gpu_ids, net.name, vol_name, _gateway_of(net))
                if existing is not None and existing.labels.get(_CONFIG) != kwargs["labels"][_CONFIG]:
                    await progress("settings changed: recreating the container (files are kept)")
                    await run_blocking(self._remove_container, existing)
                    existing = None

                def create() -> Any:
                    with _docker_errors(f"creating container {cname}"):
                        container = self.client.containers.create(**kwargs)
                        created.append("container")
                        return container

                container = existing if existing is not None else await run_blocking(create)
            except BaseException:
                await self._undo(spec, created, locked=True)
                raise
        # The container exists (and holds its GPUs) now: starting it needs no lock.
        await progress("starting")
        try:
            with _docker_errors(f"starting container {cname}"):
                await run_blocking(container.start)
        except BaseException:
            await self._undo(spec, created)
            raise
        return await self._ready(spec, container, progress, created)

    async def _ready(
        self, spec: WorkspaceSpec, container: Any, progress: Progress, created: list[str]
    ) -> Started:
        try:
            port = await run_blocking(self._published_port, container)
            url = f"http://{self.publish_addr}:{port}/"
            deadline = time.monotonic() + self.ready_timeout
            polls = 0
            async with httpx.AsyncClient(timeout=2.0) as http:
                while True:
                    with contextlib.suppress(httpx.HTTPError):
                        r = await http.get(
                            url + "api/status", headers={"Authorization": f"token {spec.token}"}
                        )
                        if r.status_code == 200:
                            break
                    polls += 1
                    if polls % 10 == 0:  # a dead container is noticed within half a second
                        await run_blocking(container.reload)
                    if container.status not in ("running", "created"):
                        logs = (await run_blocking(container.logs, tail=15)).decode(errors="replace")
                        raise BackendError(f"workspace {spec.name} exited while starting", logs.strip())
                    if time.monotonic() > deadline:
                        raise Timeout(
                            f"JupyterLab of workspace {spec.name} did not answer within {self.ready_timeout:.0f}s",
                            f"container {container.name}; see `docker logs {container.name}`",
                        )
                    await asyncio.sleep(0.025)
        except BaseException:
            await self._undo(spec, created)
            raise
        await progress("ready")
        res = spec.resources
        how = [
            f"{res.cpu:g} CPUs (NanoCpus)" if res.cpu else "",
            f"{res.memory_mb} MiB memory, no swap" if res.memory_mb else "",
        ]
        limits: dict[str, Any] = {
            "enforced": bool(res.cpu or res.memory_mb),
            "how": "docker cgroup limits: " + ", ".join(h for h in how if h)
            if any(how)
            else "no limits asked for",
        }
        if res.disk_mb:
            limits["disk"] = "not enforced: Docker's storage driver on this host has no quota"
        gpus = [int(x) for x in (container.labels.get(_GPUS) or "").split(",") if x]
        state = {
            "container_id": container.id,
            "container": container.name,
            "port": port,
            "url": url,
            "gpu_indexes": gpus,
            "workdir": container.attrs.get("Config", {}).get("WorkingDir") or _DEFAULT_WORKDIR,
        }
        return Started(state=state, url=url, limits=limits)

    def _published_port(self, container: Any) -> int:
        with _docker_errors(f"inspecting container {container.name}"):
            container.reload()
            ports = container.attrs["NetworkSettings"]["Ports"] or {}
            want = f"{container.labels.get(f'{LABEL}.port', _DEFAULT_PORT)}/tcp"
            bindings = ports.get(want) or []
            if not bindings:
                raise BackendError(f"container {container.name} publishes no port {want}", str(ports))
            return int(bindings[0]["HostPort"])

    async def _undo(self, spec: WorkspaceSpec, created: list[str], locked: bool = False) -> None:
        """Remove what a failed start created (never a volume that held files before).

        ``locked``: the caller holds ``self._lock`` already.
        """
        cname, net_name, vol_name = self._names(spec.name)

        def undo() -> None:
            with contextlib.suppress(docker.errors.DockerException, requests.exceptions.RequestException):
                if "container" in created:
                    self.client.containers.get(cname).remove(force=True)
                if "volume" in created:
                    self.client.volumes.get(vol_name).remove(force=True)
                if "network" in created:
                    self.client.networks.get(net_name).remove()

        if created:
            await run_blocking(undo)
            if "network" in created:
                async with contextlib.AsyncExitStack() as stack:
                    if not locked:
                        await stack.enter_async_context(self._lock)
                    with contextlib.suppress(FetchmlError):
                        await self._apply_firewall(without=net_name)
            created.clear()

    def _container(self, state: State) -> Any:
        with _docker_errors("looking up the workspace container"):
            try:
                return self.client.containers.get(state.get("container_id") or state.get("container"))
            except docker.errors.NotFound:
                return None

    async def poll(self, state: State) -> Status:
        container = await run_blocking(self._container, state)
        if container is None:
            return Status("missing", "the container is gone")
        s = container.status
        if s == "running":
            return Status("running", url=state.get("url"))
        if s in ("created", "restarting"):
            return Status("starting")
        code = int(container.attrs.get("State", {}).get("ExitCode", 0))
        if s in ("exited", "dead") and code not in (0, 130, 143, 137):
            logs = (await run_blocking(container.logs, tail=3)).decode(errors="replace").strip()
            return Status("failed", f"exited with code {code}: {logs.splitlines()[-1] if logs else ''}")
        return Status("stopped", f"container {s}")

    async def stop(self, state: State, grace: float = 5.0) -> None:
        """SIGINT, then SIGTERM after ``grace`` s, then SIGKILL; the container and files stay."""
        container = await run_blocking(self._container, state)
        if container is None:
            return
        for sig in ("SIGINT", "SIGTERM", "SIGKILL"):
            if not await self._signal_and_wait(container, sig, grace):
                return
        raise BackendError(f"container {container.name} did not stop after SIGKILL")

    async def _signal_and_wait(self, container: Any, sig: str, grace: float) -> bool:
        """Send ``sig``; True while the container is still running ``grace`` seconds later."""

        def run() -> bool:
            try:
                container.kill(signal=sig)
            except docker.errors.APIError as exc:
                if exc.status_code == 409 or "is not running" in _explain(exc):
                    return False
                raise
            try:
                container.wait(timeout=grace)
                return False
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
                container.reload()
                return container.status == "running"

        with _docker_errors(f"stopping container {container.name}"):
            try:
                return await run_blocking(run)
            except docker.errors.NotFound:
                return False

    def _remove_container(self, container: Any) -> None:
        with _docker_errors(f"removing container {container.name}"):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)

    async def remove(self, spec: WorkspaceSpec, state: State | None) -> None:
        """Delete the workspace's container, volume (its files), network and firewall rules."""
        cname, net_name, vol_name = self._names(spec.name)

        def remove_all() -> None:
            with _docker_errors(f"removing workspace {spec.name}"):
                with contextlib.suppress(docker.errors.NotFound):
                    container = self.client.containers.get(cname)
                    if container.labels.get(_INSTANCE) == self.prefix:
                        container.remove(force=True)
                with contextlib.suppress(docker.errors.NotFound):
                    volume = self.client.volumes.get(vol_name)
                    if (volume.attrs.get("Labels") or {}).get(_INSTANCE) == self.prefix:
                        volume.remove(force=True)
                with contextlib.suppress(docker.errors.NotFound):
                    network = self.client.networks.get(net_name)
                    if (network.attrs.get("Labels") or {}).get(_INSTANCE) == self.prefix:
                        network.remove()

        async with self._lock:
            await run_blocking(remove_all)
            await self._apply_firewall(without=net_name)

    async def reset_environment(self, spec: WorkspaceSpec, state: State | None) -> None:
        """``reset --hard``: remove the (stopped) container, whose layer holds the installed
        packages; the volume with the files stays, and the next start creates a fresh container."""
        existing = await run_blocking(self._find_container, spec.name)
        if existing is not None and existing.labels.get(_INSTANCE) == self.prefix:
            await run_blocking(self._remove_container, existing)

    async def discover(self) -> list[tuple[str, State]]:
        def running() -> list[Any]:
            with _docker_errors("listing workspace containers"):
                return list(
                    self.client.containers.list(
                        filters={"label": [f"{_INSTANCE}={self.prefix}", _WS_ID], "status": "running"}
                    )
                )

        found = []
        for c in await run_blocking(running):
            port = None
            bindings = (c.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(
                f"{c.labels.get(f'{LABEL}.port', _DEFAULT_PORT)}/tcp"
            ) or []
            if bindings:
                port = int(bindings[0]["HostPort"])
            url = f"http://{self.publish_addr}:{port}/" if port else None
            gpus = [int(x) for x in (c.labels.get(_GPUS) or "").split(",") if x]
            found.append(
                (
                    c.labels[_WS_ID],
                    {
                        "container_id": c.id,
                        "container": c.name,
                        "port": port,
                        "url": url,
                        "gpu_indexes": gpus,
                        "workdir": c.attrs.get("Config", {}).get("WorkingDir") or _DEFAULT_WORKDIR,
                    },
                )
            )
        return found

    async def stats(self, state: State) -> dict[str, Any]:
        """CPU (percent of one core, over 0.25 s), memory, processes of the container now.

        Read from the container's cgroup files when the agent shares the host's /proc (the
        usual single-host case, and the only one that works where dockerd reports empty stats),
        else from the engine's stats API.
        """
        container = await run_blocking(self._container, state)
        if container is None:
            raise NotFound("the workspace's container is gone")
        if container.status != "running":
            raise InvalidState(f"container {container.name} is not running")
        pid = int(container.attrs.get("State", {}).get("Pid") or 0)
        first = await run_blocking(_cgroup_sample, pid)
        if first is not None:
            t0 = time.monotonic()
            await asyncio.sleep(0.25)
            second = await run_blocking(_cgroup_sample, pid)
            if second is not None:
                elapsed_ns = (time.monotonic() - t0) * 1e9
                cpu = max(0, second["cpu_ns"] - first["cpu_ns"]) / elapsed_ns * 100.0
                return {
                    "cpu_percent": round(cpu, 2),
                    "memory_mb": second["memory_mb"],
                    "memory_limit_mb": second["memory_limit_mb"],
                    "pids": second["pids"],
                }

        def sample() -> dict[str, Any]:
            with _docker_errors(f"reading stats of {container.name}"):
                return self.client.api.stats(container.id, stream=False)

        s = await run_blocking(sample)
        cpu, pre = s.get("cpu_stats") or {}, s.get("precpu_stats") or {}
        cpu_delta = cpu.get("cpu_usage", {}).get("total_usage", 0) - pre.get("cpu_usage", {}).get(
            "total_usage", 0
        )
        sys_delta = (cpu.get("system_cpu_usage") or 0) - (pre.get("system_cpu_usage") or 0)
        ncpu = cpu.get("online_cpus") or 1
        mem = s.get("memory_stats") or {}
        cache = (mem.get("stats") or {}).get("total_inactive_file", 0)
        return {
            "cpu_percent": round(cpu_delta / sys_delta * ncpu * 100.0, 2) if sys_delta > 0 else None,
            "memory_mb": round(max(0, mem.get("usage", 0) - cache) / 2**20, 1) if mem else None,
            "memory_limit_mb": round(mem["limit"] / 2**20, 1) if mem.get("limit") else None,
            "pids": (s.get("pids_stats") or {}).get("current"),
        }

    async def exec(
        self,
        spec: WorkspaceSpec,
        state: State | None,
        argv: list[str],
        output: Output | None = None,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
        stdin: bytes | None = None,
    ) -> ExecResult:
        """Run ``argv`` in the running container as its user; stdout and stderr interleaved.
        ``stdin``, when given, is written to the command and closed."""
        container = await run_blocking(self._container, state or {"container": self._names(spec.name)[0]})
        if container is None or container.status != "running":
            raise InvalidState(
                f"workspace {spec.name} is not running", "start it first: commands run inside its container"
            )
        # Commands run beside the server, not by it: they get no Jupyter secrets.
        cmd = ["env", "-u", "JUPYTER_TOKEN", "-u", "FETCHML_JUPYTER_PASSWORD_HASH", *argv]
        if timeout is not None:
            cmd = ["timeout", "--kill-after=5", f"{max(timeout, 0.1):g}", *cmd]
        if self.index is not None and env:
            env = rewrite_loopback_urls(env, self.index[1], self.index[0])
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[bytes | None] = asyncio.Queue()

        def run() -> int:
            try:
                with _docker_errors(f"running a command in {container.name}"):
                    api = self.client.api
                    exec_id = api.exec_create(container.id, cmd, environment=env or None, stdin=stdin is not None)["Id"]
                    if stdin is None:
                        for chunk in api.exec_start(exec_id, stream=True):
                            loop.call_soon_threadsafe(chunks.put_nowait, chunk)
                    else:
                        _exec_with_stdin(api, exec_id, stdin, lambda c: loop.call_soon_threadsafe(chunks.put_nowait, c))
                    return int(api.exec_inspect(exec_id)["ExitCode"])
            finally:
                loop.call_soon_threadsafe(chunks.put_nowait, None)

        job = asyncio.ensure_future(run_blocking(run))
        collected = bytearray()
        while (chunk := await chunks.get()) is not None:
            if output is not None:
                await output(chunk)
            else:
                collected += chunk
        code = await job
        if timeout is not None and code in (124, 137):
            raise Timeout(f"`{shlex.join(argv)}` did not finish within {timeout:g}s in workspace {spec.name}")
        return ExecResult(code, bytes(collected))


    # -- experiment runs: one container each ------------------------------------------------

    @property
    def workspace_root(self) -> str:
        """The workspace's directory inside its container when its state does not say."""
        return _DEFAULT_WORKDIR

    def run_job_id(self, run_id: str) -> str:
        """The name of a run's container (known before it is created)."""
        return f"{self.prefix}-run-{run_id}"

    def run_snapshot_location(self, experiments_root: Path) -> tuple[str, str, Path]:
        """Runs read their snapshot from the agent's own experiments directory (bind-mounted)."""
        return str(experiments_root), "bind", experiments_root

    async def submit_run(self, spec: RunSpec, progress: Progress | None = None) -> State:
        """Start an experiment run in a container of its own and return its state.

        The container: the workspace's image (the allowed-images check applies), on the
        workspace's network (so the firewall lets it reach the package index and nothing
        else), non-root, every capability dropped, the workspace's CPU and memory as limits, the
        run's GPUs by device request (free ones now, else :class:`InsufficientResources`),
        ``on-failure`` restarts for ``retries``. The run's snapshot is bind-mounted read-only;
        the task and alloc directories (parameters, results) are host directories next to it.
        """
        from fetchml_agent.nomad.render import RUN_LAUNCHER, run_task

        task = run_task(spec)
        ref = spec.image or self.image
        image = await run_blocking(self._image, ref)
        self._check_image_allowed(ref, image)
        name = self.run_job_id(spec.run_id)
        _, net_name, _ = self._names(spec.workspace)
        root = Path(spec.snapshot_volume or "")
        host_dir = root / ".docker-runs" / spec.run_id
        user = (image.attrs.get("Config") or {}).get("User") or ""
        if user.split(":")[0] in ("", "root", "0"):
            user = _NONROOT_USER
        await run_blocking(_prepare_run_dirs, host_dir, task.parameters_json, user)
        env = {k: v.replace("${NOMAD_ALLOC_DIR}", _RUN_ALLOC_DIR).replace("${NOMAD_TASK_DIR}", _RUN_TASK_DIR)
               for k, v in task.env.items()}
        env.update(NOMAD_ALLOC_DIR=_RUN_ALLOC_DIR, NOMAD_TASK_DIR=_RUN_TASK_DIR)
        if self.index is not None:
            env = rewrite_loopback_urls(env, self.index[1], self.index[0])
            env.setdefault("PIP_TRUSTED_HOST", self.index[0])
        command = [a.replace("${NOMAD_ALLOC_DIR}", _RUN_ALLOC_DIR).replace("${NOMAD_TASK_DIR}", _RUN_TASK_DIR)
                   for a in task.command]
        res = spec.resources
        kwargs: dict[str, Any] = {
            "image": image.id,
            "name": name,
            "command": ["/bin/sh", "-c", RUN_LAUNCHER, "fetchml-run", _RUN_SNAPSHOT, *command],
            "entrypoint": [],
            "user": user,
            "environment": env,
            "labels": {_INSTANCE: self.prefix, _RUN_ID: spec.run_id, _WS_NAME: spec.workspace, _OWNER: spec.owner},
            "network": net_name,
            "volumes": {
                str(root / spec.snapshot_path): {"bind": _RUN_SNAPSHOT, "mode": "ro"},
                str(host_dir / "task"): {"bind": _RUN_TASK_DIR, "mode": "rw"},
                str(host_dir / "alloc"): {"bind": _RUN_ALLOC_DIR, "mode": "rw"},
            },
            "working_dir": _RUN_TASK_DIR,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges:true"],
            "init": True,
            "detach": True,
            "pids_limit": self.pids_limit,
            "restart_policy": {"Name": "on-failure", "MaximumRetryCount": spec.retries} if spec.retries else None,
        }
        if res.cpu:
            kwargs["nano_cpus"] = int(res.cpu * 1e9)
        if res.memory_mb:
            kwargs["mem_limit"] = f"{res.memory_mb}m"
            kwargs["memswap_limit"] = f"{res.memory_mb}m"
        async with self._lock:
            if res.gpu:
                # The agent's worker pool assigns GPUs (a run may use its own workspace's); without
                # an assignment, take free ones.
                in_use = set() if spec.gpu_ids else await run_blocking(self._gpus_in_use, "")
                free = [g for g in (spec.gpu_ids or self._gpus or []) if g not in in_use]
                if len(free) < res.gpu:
                    await run_blocking(shutil.rmtree, host_dir, True)
                    raise InsufficientResources(
                        f"run {spec.run_id} asks for {res.gpu} GPU(s); this host has {len(self._gpus or [])}, "
                        f"{len(free)} of them free", "wait for a GPU to free, or queue it with resources.gpu: 0")
                kwargs["labels"][_GPUS] = ",".join(map(str, free[: res.gpu]))
                kwargs["device_requests"] = [
                    docker.types.DeviceRequest(device_ids=[str(g) for g in free[: res.gpu]], capabilities=[["gpu"]])
                ]

            def create() -> Any:
                with _docker_errors(f"starting run container {name}"):
                    try:
                        self.client.networks.get(net_name)
                    except docker.errors.NotFound:
                        raise InvalidState(f"workspace {spec.workspace} has no network: is it running?",
                                           f"start it: ml jupyter start {spec.workspace}") from None
                    if not kwargs["restart_policy"]:
                        del kwargs["restart_policy"]
                    return self.client.containers.run(**kwargs)

            try:
                container = await run_blocking(create)
            except BaseException:
                await run_blocking(shutil.rmtree, host_dir, True)
                raise
        if progress is not None:
            await progress("running")
        return {"job_id": name, "container_id": container.id, "run_id": spec.run_id, "host_dir": str(host_dir),
                "submitted_at": time.time(), "timeout": float(spec.timeout), "waiting": ""}

    def _run_container(self, state: State) -> Any:
        with _docker_errors("looking up a run container"):
            try:
                return self.client.containers.get(state.get("container_id") or state["job_id"])
            except docker.errors.NotFound:
                return None

    async def run_status(self, state: State) -> RunStatus:
        """``running`` (also while restarting for a retry), ``succeeded``, ``failed`` (exit code and
        the last line it printed), ``timed_out`` (stopped here once past its timeout),
        ``missing`` (the container is gone)."""
        from fetchml_agent.runtimes.nomad import RunStatus

        container = await run_blocking(self._run_container, state)
        if container is None:
            return RunStatus("missing", f"the run's container {state['job_id']} is gone")
        st = container.attrs.get("State") or {}
        if container.status in ("exited", "dead"):
            code = int(st.get("ExitCode") or 0)
            if code == 0:
                return RunStatus("succeeded", "", container.id, 0)
            logs = (await run_blocking(container.logs, tail=5)).decode(errors="replace").strip().splitlines()
            last = next((line for line in reversed(logs) if line.strip()), "")
            return RunStatus("failed", f"exited with code {code}" + (f": {last}" if last else ""), container.id, code)
        if time.time() - float(state.get("submitted_at") or 0) > float(state.get("timeout") or 1e12):
            await self.cancel_run(state)
            return RunStatus("timed_out", f"the run exceeded its timeout of {state.get('timeout'):g} s", container.id)
        return RunStatus("running", "", container.id)

    async def wait_run(self, state: State, index: int, wait: float) -> int:
        """Block until the run's container stops (or ``wait`` seconds pass)."""
        container = await run_blocking(self._run_container, state)
        if container is None or not index:
            return index + 1

        def block() -> None:
            with contextlib.suppress(requests.exceptions.RequestException, docker.errors.DockerException):
                container.wait(timeout=wait)

        await run_blocking(block)
        return index + 1

    async def fetch_run_outputs(self, state: State, dest: Path) -> list[str]:
        """Copy the results (the alloc dir's ``data/``) into ``dest``; return the paths written."""
        src = Path(state["host_dir"]) / "alloc" / "data"
        if not src.is_dir():
            raise NotFound(f"run {state.get('run_id')} left no results ({src} is gone)")
        return await run_blocking(_copy_tree, src, Path(dest))

    async def cancel_run(self, state: State) -> None:
        """Stop the run's container (SIGTERM, SIGKILL after 30 s); its results stay until purged."""
        container = await run_blocking(self._run_container, state)
        if container is not None:
            with _docker_errors(f"stopping run container {container.name}"):
                with contextlib.suppress(docker.errors.NotFound):
                    await run_blocking(lambda: container.stop(timeout=30))

    async def purge_run(self, state: State) -> None:
        """Remove the run's container and its task and alloc directories."""
        container = await run_blocking(self._run_container, state)
        if container is not None:
            await run_blocking(self._remove_container, container)
        await run_blocking(shutil.rmtree, state["host_dir"], True)


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


def _cgroup_sample(pid: int) -> dict[str, Any] | None:
    """CPU time, memory and pids of the cgroup of process ``pid`` (cgroup v1 or v2), or None."""
    try:
        lines = open(f"/proc/{pid}/cgroup").read().splitlines() if pid else []
    except OSError:
        return None
    paths: dict[str, str] = {}
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for ctrl in controllers.split(",") if controllers else ["unified"]:
            paths[ctrl] = path

    def read(*candidates: str) -> str | None:
        for c in candidates:
            with contextlib.suppress(OSError):
                return open(c).read()
        return None

    root = "/sys/fs/cgroup"
    if "memory" in paths:  # v1 (or hybrid)
        usage = read(f"{root}/memory{paths['memory']}/memory.usage_in_bytes")
        limit = read(f"{root}/memory{paths['memory']}/memory.limit_in_bytes")
        stat = read(f"{root}/memory{paths['memory']}/memory.stat") or ""
        cpu = read(f"{root}/cpuacct{paths.get('cpuacct', '')}/cpuacct.usage")
        pids = read(f"{root}/pids{paths.get('pids', '')}/pids.current")
        inactive = next(
            (int(x.split()[1]) for x in stat.splitlines() if x.startswith("total_inactive_file ")), 0
        )
        if usage is None or cpu is None:
            return None
        cpu_ns = int(cpu)
        mem = max(0, int(usage) - inactive)
        lim = int(limit) if limit else 0
        lim_mb = round(lim / 2**20, 1) if 0 < lim < 2**60 else None
    else:
        base = f"{root}{paths.get('unified', '')}"
        usage = read(f"{base}/memory.current")
        limit = read(f"{base}/memory.max")
        cpu_stat = read(f"{base}/cpu.stat")
        pids = read(f"{base}/pids.current")
        if usage is None or cpu_stat is None:
            return None
        usec = next((int(x.split()[1]) for x in cpu_stat.splitlines() if x.startswith("usage_usec ")), 0)
        cpu_ns = usec * 1000
        mem = int(usage)
        lim_mb = round(int(limit) / 2**20, 1) if limit and limit.strip() != "max" else None
    return {
        "cpu_ns": cpu_ns,
        "memory_mb": round(mem / 2**20, 1),
        "memory_limit_mb": lim_mb,
        "pids": int(pids) if pids else None,
    }


def _exec_with_stdin(api: Any, exec_id: str, data: bytes, emit: Callable[[bytes], Any]) -> None:
    """Start an exec created with ``stdin=True``: write ``data``, close its stdin, and pass what
    it prints (stdout and stderr) to ``emit``."""
    from docker.utils.socket import frames_iter

    sock = api.exec_start(exec_id, socket=True)
    raw = getattr(sock, "_sock", sock)
    try:
        raw.sendall(data)
        raw.shutdown(socket.SHUT_WR)
        for _stream, chunk in frames_iter(sock, tty=False):
            emit(chunk)
    finally:
        sock.close()


def _prepare_run_dirs(host_dir: Path, parameters_json: str, user: str) -> None:
    """The run's task dir (with parameters.json) and alloc/data, owned by the container's user."""
    (host_dir / "alloc" / "data").mkdir(parents=True, exist_ok=True)
    (host_dir / "task").mkdir(parents=True, exist_ok=True)
    (host_dir / "task" / "parameters.json").write_text(parameters_json)
    uid, _, gid = user.partition(":")
    for path in (host_dir / "task", host_dir / "alloc", host_dir / "alloc" / "data", host_dir / "task" / "parameters.json"):
        try:
            os.chown(path, int(uid), int(gid or uid))
        except (ValueError, PermissionError):  # a named user, or an agent not running as root
            os.chmod(path, 0o777 if path.is_dir() else 0o644)


def _copy_tree(src: Path, dest: Path) -> list[str]:
    written = []
    for dirpath, _dirs, files in os.walk(src):
        for name in files:
            path = Path(dirpath, name)
            if path.is_symlink():
                continue
            rel = path.relative_to(src)
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest / rel)
            written.append(rel.as_posix())
    return sorted(written)
