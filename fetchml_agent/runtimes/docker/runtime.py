"""The docker runtime itself; see the package docstring."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import ipaddress
import json
import time
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.types
import httpx
import requests.exceptions

from ...aio import run_blocking
from ...allocators import GpuAllocator, workspace_holder
from ...errors import (
    BackendError,
    FetchmlError,
    Timeout,
)
from ...gpus import detect_gpus
from ...netpolicy import Firewall, NetPolicy
from ...settings import AgentConfig
from .. import disk
from ..base import (
    Capabilities,
    ImageBuilder,
    PackageIndexReach,
    PackageInventory,
    PoolMember,
    Progress,
    RunBackend,
    Runtime,
    Started,
    State,
    Status,
    WarmPool,
    WorkspaceSpec,
)
from ..docker_schema import DEFAULT_IMAGE
from .common import (
    _CONFIG,
    _DEFAULT_PORT,
    _DEFAULT_WORKDIR,
    _GPUS,
    _INSTANCE,
    _MEMBER,
    _NONROOT_USER,
    _WS_ID,
    LABEL,
    PEER_ALIASES_ENV,
    _docker_errors,
    _explain,
    _is_local_address,
    gateway_of,
    peer_alias,
    rewrite_loopback_urls,
)
from .execs import ExecMixin
from .gpu import DockerGpuActivity
from .images import ImagesMixin
from .network import NetworkMixin
from .runs import RunsMixin
from .stats import StatsMixin

__all__ = ["DockerRuntime"]


def _config_digest(kwargs: dict[str, Any], gpu_ids: list[int], *, identity: bool) -> str:
    """What a container was created with, as a short hash: a start that would create a different
    one recreates it. A warm pool member's (and so a claimed workspace's) leaves out what names it
    (name, hostname, labels), which its claim changes or cannot change."""
    if identity:
        doc = {k: v for k, v in kwargs.items() if k != "device_requests"}
    else:
        doc = {k: v for k, v in kwargs.items() if k not in ("device_requests", "name", "hostname", "labels")}
        doc["gpus"] = list(gpu_ids)
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


class DockerRuntime(NetworkMixin, ImagesMixin, StatsMixin, ExecMixin, RunsMixin, DockerGpuActivity, Runtime, RunBackend,
                    PackageIndexReach, ImageBuilder, PackageInventory, WarmPool):
    """Workspaces as containers of the local Docker engine; see the package docstring."""

    name = "docker"
    # Files live in the workspace's volume, reached through exec; the agent assigns host GPUs and
    # runs take its worker pool; the startup scan reads the image before the container starts.
    capabilities = Capabilities(host_files=False, places_gpus=False, schedules_runs=False, package_scan="image")
    gpus: GpuAllocator

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
            disk_dir=config.data_dir / "disks" / "docker",
        )

    # -- connection -----------------------------------------------------------------------

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
        if self._gpu_inventory is None:
            self._gpu_inventory = [g["index"] for g in await run_blocking(detect_gpus)]
        self.gpus.set_inventory(self._gpu_inventory)
        async with self._lock:
            await self._apply_firewall()

    async def close(self) -> None:
        if self._client is not None:
            await run_blocking(self._client.close)
            self._client = None

    def index_base_url(self, scheme: str) -> str | None:
        """The agent's base URL as workspace containers reach it (the index-only listener on
        :attr:`index`); ``None`` before :meth:`open`."""
        if self.index is None or not self.index[0]:
            return None
        host = f"[{self.index[0]}]" if ":" in self.index[0] else self.index[0]
        return f"{scheme}://{host}:{self.index[1]}"

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "image": self.image,
            "prefix": self.prefix,
            "firewall_table": f"inet {self._table}",
            "index": "{}:{}".format(*self.index) if self.index else None,
            "gpus": self.gpu_capacity(),
        }

    # -- lifecycle ------------------------------------------------------------------------

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
        if not spec.backing:  # a warm pool member starts before it has a name (fetchml_jupyter asks)
            env.setdefault("FETCHML_WORKSPACE", spec.name)
        # [issue 13, access] JupyterLab sees connections through the published port as coming
        # from the network's gateway; tell it what that address stands for (see PEER_ALIASES_ENV).
        alias = peer_alias(gateway, self.publish_addr)
        if alias:
            env[PEER_ALIASES_ENV] = alias
        res = spec.resources
        kwargs: dict[str, Any] = {
            "image": image.id,
            "name": self._names(spec.name, spec.backing)[0],
            "hostname": (spec.backing or spec.name)[:63].replace("_", "-"),
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
        kwargs["labels"][_CONFIG] = _config_digest(kwargs, gpu_ids, identity=not spec.backing)
        return kwargs

    async def start(self, spec: WorkspaceSpec, progress: Progress) -> Started:
        """Start (or adopt, or restart) the workspace's container; return once JupyterLab answers."""
        ref = spec.image or self.image
        await progress(f"checking image {ref}")
        image = await run_blocking(self._image, ref)
        self._check_image_allowed(ref, image)
        cname, _, vol_name = self._names(spec.name, spec.backing)
        created: list[str] = []
        async with self._lock:
            existing = await run_blocking(self._find_container, spec.name)
            if existing is None and spec.backing and spec.backing != spec.name:
                # Claimed from a warm pool member, but the agent stopped before renaming it.
                existing = await run_blocking(self._find_container, spec.backing)
                if existing is not None:
                    await run_blocking(self._rename, existing, cname)
            if existing is not None and existing.status == "running":
                await progress("already running: adopting")
                return await self._ready(spec, existing, progress, created)
            # The agent claims a workspace's GPUs before it starts it (spec.gpu_ids); a caller that
            # did not gets free ones from the same allocator.
            holder = workspace_holder(spec.id)
            if spec.gpu_ids:
                gpu_ids = list(self.gpus.hold(holder, spec.gpu_ids, what=f"workspace {spec.name}"))
            else:
                gpu_ids = list(self.gpus.claim(holder, spec.resources.gpu))
            await progress("preparing network")

            def ensure_volume() -> None:
                with _docker_errors(f"creating volume {vol_name}"):
                    try:
                        volume = self.client.volumes.get(vol_name)
                    except docker.errors.NotFound:
                        opts = self._sized_volume(spec)
                        extra = {"driver": "local", "driver_opts": opts} if opts else {}
                        self.client.volumes.create(vol_name, labels=self._labels(spec), **extra)
                        created.append("volume")
                    else:
                        self._sized_volume(spec, volume.attrs.get("Options") or {})

            volume_job = asyncio.ensure_future(run_blocking(ensure_volume))
            try:
                try:
                    net, new_net = await self._ensure_network(spec)
                    if new_net:
                        created.append("network")
                finally:
                    await asyncio.gather(volume_job, return_exceptions=True)
                volume_job.result()
                kwargs = self._container_config(spec, image, gpu_ids, net.name, vol_name, gateway_of(net))
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
            # A warm pool member has no owner yet: the agent answers for no credential of it
            # (docs/warm-pool.md), so it is ready when JupyterLab answers and refuses a stranger.
            member = bool(spec.backing and not spec.owner)
            headers = {} if member else {"Authorization": f"token {spec.token}"}
            async with httpx.AsyncClient(timeout=2.0) as http:
                while True:
                    with contextlib.suppress(httpx.HTTPError):
                        r = await http.get(url + "api/status", headers=headers)
                        if r.status_code == 200 or (member and r.status_code in (401, 403)):
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
        return Started(state=self._state_of(container, port, url), url=url, limits=self._limits(spec))

    def _limits(self, spec: WorkspaceSpec) -> dict[str, Any]:
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
            limits["disk"] = self._disk_how.get(spec.id) or "not enforced: the workspace's volume has no size limit"
        return limits

    def _disk_paths(self, spec: WorkspaceSpec) -> tuple[Path, Path] | None:
        if self.disk_dir is None:
            return None
        return self.disk_dir / f"{spec.id}.img", self.disk_dir / spec.id

    def _sized_volume(self, spec: WorkspaceSpec, existing: dict[str, str] | None = None) -> dict[str, str] | None:
        """``--disk``: the workspace volume's own filesystem of that size, where this host can make
        one (:mod:`..disk`: an ext4 image file loop-mounted by the agent, as root, on a directory
        under the data dir that the volume binds; Docker copies the image's directory, with its
        owner, into it at the first start). For a new volume (``existing`` ``None``): its driver
        options, or ``None``. For an existing one (``existing``: its options): mounts its filesystem
        again when needed (after a reboot). Notes what ``limits`` says."""
        size = spec.resources.disk_mb
        paths = self._disk_paths(spec)
        if not size:
            return None
        if paths is None or not self.base_url.startswith("unix://"):
            self._disk_how[spec.id] = ("not enforced: the Docker engine is not on the agent's host (a size-limited "
                                       "volume is a filesystem the agent mounts on the engine's host)")
            return None
        image, mountpoint = paths
        if existing is not None and existing.get("device") != str(mountpoint):
            self._disk_how[spec.id] = "not enforced: the workspace's volume was made before a size was asked for"
            return None
        mountpoint.mkdir(parents=True, exist_ok=True)
        how = disk.attach(image, mountpoint, size)
        self._disk_how[spec.id] = how
        if not how.startswith("enforced"):
            return None
        return {"type": "none", "o": "bind", "device": str(mountpoint)}

    @staticmethod
    def _state_of(container: Any, port: int | None, url: str | None) -> State:
        gpus = [int(x) for x in (container.labels.get(_GPUS) or "").split(",") if x]
        return {
            "container_id": container.id,
            "container": container.name,
            "port": port,
            "url": url,
            "gpu_indexes": gpus,
            "workdir": container.attrs.get("Config", {}).get("WorkingDir") or _DEFAULT_WORKDIR,
        }

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
        cname, net_name, vol_name = self._names(spec.name, spec.backing)
        if not spec.gpu_ids:  # GPUs this start claimed itself
            self.gpus.release(workspace_holder(spec.id))

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

    async def remove(self, spec: WorkspaceSpec, state: State | None) -> None:
        """Delete the workspace's container, volume (its files), network and firewall rules."""
        cname, net_name, vol_name = self._names(spec.name, spec.backing)

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
        self.gpus.release(workspace_holder(spec.id))
        paths = self._disk_paths(spec)
        if paths is not None and paths[1].exists():  # the volume's filesystem (--disk), after the volume
            await run_blocking(disk.detach, *paths)
            with contextlib.suppress(OSError):
                paths[1].rmdir()
        self._disk_how.pop(spec.id, None)

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
            found.append((c.labels[_WS_ID], self._state_of(c, port, url)))
        return found

    def files_root(self, spec: WorkspaceSpec, state: State | None) -> str:
        """The workspace's directory inside its container (its state says; else the default)."""
        return str((state or {}).get("workdir") or _DEFAULT_WORKDIR)


    # -- warm pool (docs/warm-pool.md) ------------------------------------------------------

    async def prepare_member(self, spec: WorkspaceSpec, progress: Progress) -> Started:
        """A member is a workspace start under the member's name: its own network (behind the
        firewall), its own empty volume, a container with the pool's image and limits and its
        own server credential, JupyterLab answering. Labelled as the pool's, never as a workspace."""
        return await self.start(spec, progress)

    async def claim_member(self, member: PoolMember, spec: WorkspaceSpec) -> Started:
        """Rename the member's running container to the workspace's name; its network, volume and
        firewall rules are the workspace's from now on (they keep the member's name)."""
        cname = self._names(spec.name, spec.backing)[0]
        cid = str(member.state.get("container_id") or "")

        def rename() -> None:
            with _docker_errors(f"claiming warm pool member {member.id}"):
                self.client.api.rename(cid, cname)

        await run_blocking(rename)
        async with httpx.AsyncClient(timeout=2.0) as http:
            try:
                r = await http.get(member.url + "api/status", headers={"Authorization": f"token {spec.token}"})
            except httpx.HTTPError as exc:
                raise BackendError(f"warm pool member {member.id} does not answer", str(exc)) from exc
        if r.status_code != 200:
            raise BackendError(f"warm pool member {member.id} answered {r.status_code}")
        return Started(state={**member.state, "container": cname}, url=member.url, limits=self._limits(spec))

    async def discard_member(self, member_id: str, state: State | None) -> None:
        await self.remove(self._member_spec(member_id), state)

    @staticmethod
    def _member_spec(member_id: str) -> WorkspaceSpec:
        return WorkspaceSpec(id=member_id, name=member_id, owner="", path=Path("/"), token="", backing=member_id)

    async def list_members(self) -> dict[str, State]:
        def members() -> dict[str, State]:
            found: dict[str, State] = {}
            label = {"label": [f"{_INSTANCE}={self.prefix}", _MEMBER]}
            with _docker_errors("listing warm pool members"):
                for c in self.client.containers.list(all=True, filters=label):
                    found[c.labels[_MEMBER]] = {"container_id": c.id, "container": c.name}
                for item in [*self.client.volumes.list(filters=label), *self.client.networks.list(filters=label)]:
                    member = (item.attrs.get("Labels") or {}).get(_MEMBER)
                    if member:
                        found.setdefault(member, {})
            return found

        return await run_blocking(members)
