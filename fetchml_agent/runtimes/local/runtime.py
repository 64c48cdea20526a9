"""The ``local`` runtime itself; see the package docstring."""


from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import logging
import os
import platform
import re
import secrets
import shutil
import signal
import stat
import sys
import sysconfig
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from fetchml_jupyter import IPC_KERNEL_MANAGER, IPC_SUFFIX_LEN, SERVER_EXTENSIONS
from fetchml_jupyter.probe import PROOF_PATH, server_proof

from ... import procs
from ...aio import run_blocking
from ...allocators import GpuAllocator, PortAllocator, workspace_holder
from ...errors import BackendError, NotSupported, Timeout
from ...gpus import detect_gpus
from ...netpolicy import LocalUserNet
from ...policy.scan import installed_from_path
from ...privilege import drop_inherited_capabilities
from ...testpoints import pause_point
from .. import disk
from ..base import (
    ENVIRONMENT_VERSIONS,
    Capabilities,
    ExecResult,
    Inventory,
    Output,
    PackageIndexReach,
    PackageInventory,
    Progress,
    RunBackend,
    RunSpec,
    RunStatus,
    Runtime,
    Started,
    State,
    Status,
    WorkspaceSpec,
    version_mismatch,
)
from ..cgroups import Cgroups
from .env import (
    KERNEL_RUNNER_ENV,
    create_server_env,
    create_workspace_env,
    kernel_base,
    process_tree_stats,
    tail,
)
from .gpu import LocalGpuActivity
from .pool import LocalWarmPool
from .runs import LocalRuns
from .users import OsUser, WorkspaceUsers, chown_tree

if TYPE_CHECKING:
    from ...netpolicy import Firewall

__all__ = ["LocalRuntime"]

log = logging.getLogger(__name__)

_READY_POLL = 0.05
_CPU_WINDOW = 0.25  # seconds over which stats() measures cpu_percent (docker's window)
_CPU_RECENT = 120.0  # a previous sample younger than this is the start of the window instead
_PORT_TRIES = 5
_PORT_TAKEN = "is already in use"  # Jupyter Server's words when it cannot bind its port


def _read_from(path: Path, offset: int) -> str:
    """What ``path`` gained after ``offset`` (a log this start appended to)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read(256 * 1024).decode(errors="replace")
    except OSError:
        return ""


def _version_of(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "none"


#: Set in a JupyterLab's environment to its run directory (``DATA_DIR/run/ID``): how
#: :meth:`LocalRuntime.discover` finds this agent's servers in ``/proc``, recorded or not.
SERVER_ENV = "FETCHML_SERVER_RUN_DIR"
#: In a server's run directory: its file-id database (collaboration's document ids).
FILE_ID_DB = "file_id_manager.db"


def _user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid{uid}"


def _owner_and_port(pid: int) -> dict[str, Any]:
    """A server's real uid and ``--port`` (from /proc), for its firewall rules after a restart."""
    out: dict[str, Any] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                out["uid"] = int(line.split()[1])
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return out
    for arg in args:
        if arg.startswith(b"--port="):
            out["port"] = int(arg.split(b"=", 1)[1])
    return out


def _alive(state: State) -> bool:
    return procs.alive(state.get("pid"), state.get("start_time"))


class LocalRuntime(LocalGpuActivity, Runtime, RunBackend, PackageInventory, PackageIndexReach, LocalWarmPool):
    """Runs ``python -m jupyterlab`` per workspace as a child of its own session."""

    name = "local"
    # Files are the workspace's directory on this host; the agent assigns GPUs and ports and runs
    # take its worker pool; the startup scan reads the workspace's own venv before it starts.
    capabilities = Capabilities(host_files=True, places_gpus=False, schedules_runs=False, package_scan="host")
    gpus: GpuAllocator
    ports: PortAllocator

    def __init__(
        self,
        data_dir: Path,
        *,
        port_base: int = 8888,
        start_timeout: float = 120.0,
        use_cgroups: bool = True,
        gpus: list[dict[str, Any]] | None = None,
        stop_grace: float = 5.0,
        users: WorkspaceUsers | None = None,
        shared: bool = False,
        firewall: Firewall | None = None,
        index_port: int | None = None,
        firewall_off: str | None = None,
    ) -> None:
        self.data_dir = data_dir
        #: ``local.isolation: users`` (:mod:`.users`); ``None``: workspaces run as the agent's user.
        self.users = users
        #: Without users: ``local.isolation: none`` (several people share the agent's OS user,
        #: knowingly) or unset (one person's workspaces only: ``isolation()["single_owner"]``).
        self.shared = shared
        # Where a workspace's venv and JupyterLab's run directory live: the data_dir, or the
        # workspaces_dir that workspace users can reach.
        self._ws_root = users.root if users is not None else data_dir
        #: With users: the agent's nftables table keyed by uid (``meta skuid``), and the loopback
        #: port of the index-only listener that workspaces reach (package index and /access).
        self.firewall = firewall if users is not None else None
        self._index_port = index_port
        #: Why there is no firewall with users (``local.firewall: false``, or no CAP_NET_ADMIN).
        self._firewall_off = firewall_off or "local.firewall: false"
        self._fw_users: dict[str, tuple[str, int, int]] = {}  # workspace id -> (user, uid, port)
        # Every workspace user the rules name, running or not: a user without a chain of its own
        # would not be filtered at all (a process it left behind, a later login).
        self._fw_known: dict[str, int] = {}
        self.port_base = port_base
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace
        self._use_cgroups = use_cgroups
        self._gpu_inventory = gpus
        self._children: dict[int, Any] = {}  # pid -> Popen, so exited children are reaped
        self.cgroups: Cgroups | None = None
        self.gpus = GpuAllocator(g["index"] for g in gpus or [])
        self.ports = PortAllocator(port_base)
        # JupyterLab and the experiment runner run from the server environment, kernels from each
        # workspace's kernel environment over the kernel base (env.py).
        self.server_python = self._ws_root / "server-env" / "bin" / "python"
        self._kernel_base: Path | None = None
        self.runs = LocalRuns(data_dir, self.exec, python=str(self.server_python))
        self._cpu_samples: dict[tuple[Any, Any], tuple[float, float]] = {}  # (pid, start) → (when, cpu s)

    async def open(self) -> None:
        if self.users is not None:
            await run_blocking(self.users.check)
        elif self.shared:
            log.warning("local.isolation: none: every workspace runs as the agent's OS user; code in one can read "
                        "the others' files and the agent's data_dir (docs/security.md)")
        if self.firewall is not None and self.users is not None:  # servers that outlived the agent keep their rules
            self._fw_known.update(await run_blocking(self.users.known_users))
            for wid, state in await self.discover():
                if state.get("uid") and state.get("port"):
                    self._fw_users[wid] = (_user_name(state["uid"]), state["uid"], state["port"])
            await self._apply_firewall()
        self.cgroups = await run_blocking(Cgroups, enabled=self._use_cgroups)
        if self._gpu_inventory is None:
            self._gpu_inventory = await run_blocking(detect_gpus)
        self.gpus.set_inventory(g["index"] for g in self._gpu_inventory)
        for sub in ("envs", "run", "logs"):
            (self.data_dir / sub).mkdir(parents=True, exist_ok=True)

    async def close(self) -> None:
        await self.close_pool_client()

    # -- network (local.isolation: users) ------------------------------------------------------

    @property
    def index(self) -> tuple[str, int] | None:
        """With the firewall, workspaces reach the agent only at an index-only listener on loopback
        (``/index`` and ``/access``, never ``/api`` nor ``/ws``): the uid rules let that port pass."""
        if self.firewall is None or not self._index_port:
            return None
        return ("127.0.0.1", self._index_port)

    def index_base_url(self, scheme: str) -> str | None:
        return f"{scheme}://127.0.0.1:{self._index_port}" if self.index is not None else None

    async def _apply_firewall(self) -> None:
        if self.firewall is None:
            return
        by_user: dict[str, tuple[int, list[int]]] = {name: (uid, []) for name, uid in self._fw_known.items()}
        for name, uid, port in self._fw_users.values():
            by_user.setdefault(name, (uid, []))[1].append(port)
        await self.firewall.apply([], [LocalUserNet(n, uid, tuple(ports)) for n, (uid, ports) in sorted(by_user.items())])

    async def _forget_firewall(self, workspace_id: str | None, port: int | None = None) -> None:
        """Drop a workspace's port from the rules (only that server's, when ``port`` is given: a
        stray server of a workspace ended at start must not take the running one's rule along)."""
        entry = self._fw_users.get(workspace_id or "")
        if self.firewall is None or entry is None or (port is not None and entry[2] != port):
            return
        self._fw_users.pop(workspace_id or "")
        await self._apply_firewall()

    # -- helpers --------------------------------------------------------------------------------

    def env_dir(self, workspace_id: str) -> Path:
        return self._ws_root / "envs" / workspace_id

    def server_run_dir(self, workspace_id: str) -> Path:
        return self._ws_root / "run" / workspace_id

    def _os_user(self, spec: WorkspaceSpec) -> OsUser | None:
        return self.users.user_for(spec.owner) if self.users is not None else None

    def _prepare_env(self, spec: WorkspaceSpec, user: OsUser | None) -> Path:
        """The workspace's kernel environment with its index configuration (owned by its user, if
        it has one), and the server environment; the kernel environment's ``python``."""
        env_dir = self.env_dir(spec.id)
        fresh = not (env_dir / "bin" / "python").exists()
        base_python = self.users.python if self.users is not None else None
        if self._kernel_base is None or not self._kernel_base.is_dir():
            self._kernel_base = kernel_base(self._ws_root / "kernel-base")
        create_server_env(self.server_python.parent.parent, base_python)
        python = create_workspace_env(env_dir, base_python, self._kernel_base)
        self._install_index_config(spec, env_dir)
        if user is not None:
            self._own_env(env_dir, user, fresh)
        return python

    @staticmethod
    def _own_env(env_dir: Path, user: OsUser, fresh: bool) -> None:
        """Make the kernel environment ``user``'s (all of it when the agent just made it)."""
        if fresh:
            chown_tree(env_dir, user.uid, user.gid)
        for name in ("pip.conf", ".condarc"):
            if (env_dir / name).exists():
                os.chown(env_dir / name, user.uid, user.gid)
                os.chmod(env_dir / name, 0o600)
        os.chown(env_dir, user.uid, user.gid)
        os.chmod(env_dir, 0o700)

    def _as_user(self, user: OsUser | None) -> dict[str, Any]:
        """Popen's arguments that make a child the workspace's user (nothing without one)."""
        if user is None:
            return {}
        # preexec: a non-root agent's ambient capabilities would otherwise survive the exec
        return {"user": user.uid, "group": user.gid, "extra_groups": [], "umask": 0o077,
                "preexec_fn": drop_inherited_capabilities}

    def package_layer(self, spec: WorkspaceSpec) -> list[Path]:
        """The site-packages of what the workspace installed itself (its kernel environment's
        venv), without the kernel base (ipykernel and pip, the operator's)."""
        env_dir = self.env_dir(spec.id)
        paths: list[Path] = []
        for key in ("purelib", "platlib"):
            p = Path(sysconfig.get_path(key, vars={"base": str(env_dir), "platbase": str(env_dir)}))
            if p not in paths:
                paths.append(p)
        return paths

    async def inventory(self, spec: WorkspaceSpec) -> Inventory:
        """What a kernel of the workspace can import: its own layer (:meth:`package_layer`) and
        the kernel base; ``own`` the layer alone."""
        paths = [p for p in self.package_layer(spec) if p.is_dir()]
        own = await run_blocking(installed_from_path, paths)
        if self._kernel_base is None or not self._kernel_base.is_dir():
            self._kernel_base = await run_blocking(kernel_base, self._ws_root / "kernel-base")
        everything = await run_blocking(installed_from_path, [*paths, self._kernel_base])
        return Inventory(everything, "kernel environment (workspace layer and kernel base)", own=own)

    def _install_index_config(self, spec: WorkspaceSpec, env_dir: Path) -> None:
        """Copy the agent's pip.conf/.condarc for this workspace into its venv (see the module doc)."""
        for var, name in (("PIP_CONFIG_FILE", "pip.conf"), ("CONDARC", ".condarc")):
            source = spec.env.get(var)
            if source and Path(source).is_file():
                shutil.copyfile(source, env_dir / name)

    def _workspace_env(self, spec: WorkspaceSpec, env_dir: Path) -> dict[str, str]:
        inherited = ("FETCHML_API", "JUPYTER_TOKEN", "PIP_", "UV_", "CONDA", "VIRTUAL_ENV", "PYTHONHOME")
        env = {k: v for k, v in os.environ.items() if not k.startswith(inherited)}
        env.update(
            {
                "VIRTUAL_ENV": str(env_dir),
                "PATH": f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
                "JUPYTER_TOKEN": spec.token,
                "FETCHML_WORKSPACE": spec.name,
                "FETCHML_WORKSPACE_ID": spec.id,
                "PYTHONNOUSERSITE": "1",
                # The workspace's kernelspec (env.write_kernelspec) before any other.
                "JUPYTER_PATH": str(env_dir / "share" / "jupyter"),
                KERNEL_RUNNER_ENV: str(env_dir / "bin" / "python"),
                "HOME": env.get("HOME", str(spec.path)),
            }
        )
        if spec.backing:  # a warm pool member starts before it has a name (fetchml_jupyter asks)
            del env["FETCHML_WORKSPACE"]
        env.update(spec.env)
        if self.users is not None:  # the agent's copies in the data_dir are not the user's to read
            for var, name in (("PIP_CONFIG_FILE", "pip.conf"), ("CONDARC", ".condarc")):
                if var in env:
                    env[var] = str(env_dir / name)
        return env

    def check_environment(self, image: str | None, settings: Mapping[str, Any]) -> bool:
        """A local workspace is a venv of the agent's own Python with the agent's JupyterLab: an
        image, or another Python or JupyterLab version, cannot be had here (NotSupported)."""
        if image:
            raise NotSupported(f"the local runtime runs no images ({image}): a workspace is a venv of the agent's Python",
                               "leave --image (and image:) out here, or use the docker or Nomad runtime")
        have = {"python_version": platform.python_version(), "jupyter_version": _version_of("jupyterlab")}
        wrong = version_mismatch(settings, have)
        if wrong is not None:
            key, want, got = wrong
            what = ENVIRONMENT_VERSIONS[key]
            raise NotSupported(
                f"environment.{key} {want}: the local runtime's workspaces run the agent's {what} {got}",
                f"ask for {key} {'.'.join(got.split('.')[:2])} (or leave it out), or use the docker "
                f"runtime with an image of {what} {want}")
        return False

    # -- lifecycle ------------------------------------------------------------------------------

    def _write_server_config(self, spec: WorkspaceSpec, run_dir: Path, user: OsUser | None) -> Path:
        """Write JupyterLab's configuration into ``run_dir`` (0600, the workspace user's); its path."""
        cfg: dict[str, Any] = {
            # fetchml_jupyter: the agent decides who may do what (docs/access.md); with live
            # collaboration, whose frontend extensions live in the agent's environment.
            "ServerApp": {"open_browser": False, "root_dir": str(spec.path), "jpserver_extensions": SERVER_EXTENSIONS},
            # The workspace's kernelspec only (JUPYTER_PATH), never the server's own Python.
            "KernelSpecManager": {"ensure_native_kernel": False},
            "LabApp": {"news_url": None, "check_for_updates_class": "jupyterlab.NeverCheckForUpdate",
                       "extra_labextensions_path": [str(Path(sysconfig.get_path("data")) / "share/jupyter/labextensions")]},
        }
        # File ids (collaboration's document ids) belong to this workspace, not to a shared data
        # dir under whatever HOME the agent has; they survive restarts with the run dir.
        cfg["BaseFileIdManager"] = {"db_path": str(run_dir / FILE_ID_DB)}
        if user is not None:
            # Kernels talk to their server over Unix sockets in the 0700 runtime dir, not loopback
            # TCP ports: the uid rules then need no port of theirs.
            # One short prefix per workspace, and a suffix of its own per kernel (fetchml_jupyter.ipc:
            # jupyter_client numbers the sockets after it, so two kernels started at once chose the
            # same names); a socket path has at most 107 bytes.
            ipc = run_dir / "k"
            if len(str(ipc)) > 90 - IPC_SUFFIX_LEN:
                raise BackendError(f"kernel socket paths under {run_dir} would be too long for Unix sockets",
                                   "choose a shorter local.workspaces_dir")
            cfg["KernelManager"] = {"transport": "ipc", "ip": str(ipc)}
            cfg["MappingKernelManager"] = {"kernel_manager_class": IPC_KERNEL_MANAGER}
            # The server environment is the operator's (root's), not the owner's to install
            # extensions into: JupyterLab's extension manager lists, never installs (and makes no
            # HTTP client at start, which a warm pool claim waits for).
            cfg["LabApp"]["extension_manager"] = "readonly"
        if spec.password_hash:
            cfg["PasswordIdentityProvider"] = {"hashed_password": spec.password_hash, "password_required": True}
        config_file = run_dir / "jupyter_server_config.json"
        fd = os.open(config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(cfg, fh)
        if user is not None:
            os.chown(config_file, user.uid, user.gid)
        return config_file

    def _server_env(self, spec: WorkspaceSpec, user: OsUser | None) -> dict[str, str]:
        """A workspace server's environment (``JUPYTER_TOKEN``: its own credential)."""
        env = self._workspace_env(spec, self.env_dir(spec.id))
        if user is not None:
            env.update(HOME=str(user.home), USER=user.name, LOGNAME=user.name)
        run_dir = self.server_run_dir(spec.id)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, spec.gpu_ids))
        env["JUPYTER_RUNTIME_DIR"] = str(run_dir / "runtime")
        env[SERVER_ENV] = str(run_dir)
        return env

    @staticmethod
    def _server_args(spec: WorkspaceSpec, port: int, config_file: Path, user: OsUser | None) -> list[str]:
        """JupyterLab's arguments for a workspace server (after ``-m jupyterlab``)."""
        args = ["--no-browser", "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
                f"--config={config_file}", f"--ServerApp.root_dir={spec.path}"]
        if os.geteuid() == 0 and user is None:
            args.append("--allow-root")
        return args

    async def start(self, spec: WorkspaceSpec, progress: Progress) -> Started:
        # The agent claims the port before it starts a workspace (then this is the same one); a
        # caller that did not gets spec.port when free, else the lowest free one.
        port = self.ports.claim(workspace_holder(spec.id), spec.port)
        await progress("preparing environment")
        user = await run_blocking(self._os_user, spec)
        await run_blocking(self._prepare_env, spec, user)
        spec.path.mkdir(parents=True, exist_ok=True)
        disk_limit = await run_blocking(self._disk, spec)
        run_dir = self.server_run_dir(spec.id)
        run_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(run_dir, 0o700)
        if user is not None:
            os.chown(run_dir, user.uid, user.gid)
            if spec.path.stat().st_uid == os.geteuid():  # a directory the agent made: the user's now
                WorkspaceUsers.private_dir(spec.path, user.uid, user.gid)
        config_file = self._write_server_config(spec, run_dir, user)
        env = self._server_env(spec, user)
        gpu_indexes = list(spec.gpu_ids)
        log_path = self.data_dir / "logs" / f"{spec.id}.log"
        if user is not None and self.firewall is not None:  # rules before the server exists
            self._fw_users[spec.id] = (user.name, user.uid, port)
            self._fw_known[user.name] = user.uid
            await self._apply_firewall()
        await progress("starting")
        tried: list[int] = []
        while True:
            argv = [str(self.server_python), "-m", "jupyterlab", *self._server_args(spec, port, config_file, user)]
            log_from = log_path.stat().st_size if log_path.exists() else 0
            proc = await run_blocking(self._spawn, argv, env, spec.path, log_path, self._as_user(user))
            pause_point("start.spawned")  # a crash here leaves a server that only discover() finds
            limits = {"enforced": False, "reason": "no cpu or memory limit was asked for"}
            if self.cgroups is not None:
                limits = await run_blocking(
                    self.cgroups.apply, spec.id, proc.pid, spec.resources.cpu, spec.resources.memory_mb
                )
            limits = {**limits, "disk": disk_limit}
            if gpu_indexes:
                limits["gpu"] = (f"GPUs {','.join(map(str, gpu_indexes))} assigned (CUDA_VISIBLE_DEVICES): visible "
                                 "to the workspace alone among workspaces, not isolated from other host processes")
            state: State = {
                "pid": proc.pid,
                "start_time": procs.start_time(proc.pid),
                "port": port,
                "log": str(log_path),
                "gpu_indexes": gpu_indexes,
                "cgroup": spec.id if limits.get("enforced") else None,
            }
            if user is not None:
                state["os_user"] = user.name
                state["workspace_id"] = spec.id
            url = f"http://127.0.0.1:{port}/"
            try:
                await self._wait_ready(proc, url, spec.token, log_path)
                break
            except BaseException as exc:
                await self.stop(state, grace=2.0)
                # Another process took the port between the claim and JupyterLab's bind (agents
                # on one host, anything else): the next free port, a few times.
                taken = isinstance(exc, BackendError) and _PORT_TAKEN in _read_from(log_path, log_from)
                if not taken or len(tried) >= _PORT_TRIES - 1:
                    if taken:
                        raise BackendError(
                            f"JupyterLab could not bind a port: {', '.join(map(str, [*tried, port]))} were taken "
                            "by other processes as it started",
                            "free ports from local.port_base up, or set another local.port_base") from None
                    raise
                tried.append(port)
                await progress(f"port {port} was taken meanwhile: trying another")
                self.ports.release(workspace_holder(spec.id))
                port = self.ports.claim(workspace_holder(spec.id), avoid=tried)
                if user is not None and self.firewall is not None:  # the user's rules follow the port
                    self._fw_users[spec.id] = (user.name, user.uid, port)
                    await self._apply_firewall()
        await progress("ready")
        return Started(state=state, url=url, limits=limits)

    def _spawn(self, argv: list[str], env: dict[str, str], cwd: Path, log_path: Path,
               creds: dict[str, Any]) -> Any:
        import subprocess

        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with open(fd, "ab", buffering=0) as log:
            proc = subprocess.Popen(
                argv, cwd=str(cwd), env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                **creds,
            )
        self._children[proc.pid] = proc
        return proc

    async def _wait_ready(self, proc: Any, url: str, token: str, log_path: Path, poll: float = _READY_POLL) -> None:
        """Return once the server on ``url`` is this workspace's own: it proves it holds ``token``
        (:mod:`fetchml_jupyter.probe`), or, without the access extension, accepts it. Any other
        answer (another server on the port) is no answer."""
        deadline = time.monotonic() + self.start_timeout
        headers = {"Authorization": f"token {token}"} if token else {}
        nonce = secrets.token_hex(16)
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                if proc.poll() is not None:
                    raise BackendError(
                        f"JupyterLab exited during start-up with code {proc.returncode}",
                        tail(log_path),
                    )
                try:
                    r = await client.get(url + PROOF_PATH, params={"nonce": nonce})
                    if r.status_code == 200:
                        if hmac.compare_digest(str(r.json().get("proof", "")), server_proof(token, nonce)):
                            return
                    elif r.status_code == 404:  # no access extension: Jupyter checks the token itself
                        r = await client.get(url + "api/status", headers=headers)
                        if r.status_code == 200:
                            return
                except (httpx.TransportError, ValueError, AttributeError):
                    pass
                if time.monotonic() > deadline:
                    raise Timeout(
                        f"JupyterLab did not answer within {self.start_timeout:.0f} s",
                        tail(log_path),
                    )
                await asyncio.sleep(poll)

    async def poll(self, state: State) -> Status:
        pid = int(state.get("pid") or 0)
        child = self._children.get(pid) if pid else None
        if child is not None and child.poll() is not None:
            self._children.pop(pid, None)
            code = child.returncode
            if code in (0, -signal.SIGINT, -signal.SIGTERM):
                return Status("stopped", f"JupyterLab exited with code {code}")
            return Status("failed", f"JupyterLab exited with code {code}")
        if _alive(state):
            return Status("running", url=f"http://127.0.0.1:{state.get('port')}/")
        return Status("missing", "the JupyterLab process is gone")

    async def stop(self, state: State, grace: float = 5.0) -> None:
        await run_blocking(self._stop_ladder, state, grace)
        await self._forget_firewall(state.get("workspace_id"), state.get("port"))
        if self.cgroups is not None and state.get("cgroup"):
            await run_blocking(self.cgroups.remove, state["cgroup"])

    def _stop_ladder(self, state: State, grace: float) -> None:
        pid = state.get("pid")
        if not pid or not _alive(state):
            self._reap(pid)
            return
        # Jupyter starts each kernel in a session of its own: note the whole tree first, so no
        # kernel survives a server that had to be killed.
        tree = [(p, procs.start_time(p)) for p in procs.descendants(int(pid))]
        for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(int(pid), sig)
            except (ProcessLookupError, PermissionError):
                try:  # not a group leader (a kernel left behind by a dead server), or not ours
                    os.kill(int(pid), sig)
                except ProcessLookupError:
                    break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                self._reap(pid)
                if not _alive(state):
                    break
                time.sleep(0.05)
            if not _alive(state):
                break
        for p, started in tree:
            if procs.alive(p, started):
                try:
                    os.kill(p, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        self._reap(pid)

    def _reap(self, pid: Any) -> None:
        child = self._children.get(int(pid)) if pid else None
        if child is not None and child.poll() is not None:
            self._children.pop(int(pid), None)

    def _disk(self, spec: WorkspaceSpec) -> str | None:
        """What ``limits`` says for disk; a size asked for is enforced where it can be (:mod:`.disk`)."""
        if not spec.resources.disk_mb:
            return None
        managed = self.users.root / "files" if self.users is not None else self.data_dir / "workspaces"
        if spec.path.resolve().parent != managed.resolve():
            return ("not enforced: the workspace's directory was given with --workspace; the agent mounts a "
                    "size-limited filesystem only over directories it made")
        return disk.attach(self.data_dir / "disks" / f"{spec.id}.img", spec.path, spec.resources.disk_mb)

    async def remove(self, spec: WorkspaceSpec, state: State | None) -> None:
        await self._forget_firewall(spec.id)
        await run_blocking(disk.detach, self.data_dir / "disks" / f"{spec.id}.img", spec.path)
        await run_blocking(shutil.rmtree, self.env_dir(spec.id), True)
        await run_blocking(shutil.rmtree, self.server_run_dir(spec.id), True)
        await run_blocking(shutil.rmtree, self.data_dir / "run" / spec.id, True)
        log = self.data_dir / "logs" / f"{spec.id}.log"
        log.unlink(missing_ok=True)
        if self.cgroups is not None:
            await run_blocking(self.cgroups.remove, spec.id)

    async def reset_environment(self, spec: WorkspaceSpec, state: State | None) -> None:
        await run_blocking(shutil.rmtree, self.env_dir(spec.id), True)

    async def discover(self) -> list[tuple[str, State]]:
        """This agent's JupyterLab servers, recorded or not: the processes whose environment names
        a run directory of this data_dir (:data:`SERVER_ENV`), without the kernels they started.
        A server spawned just before the agent was killed is found here though no row names it;
        an unclaimed warm pool member is not (it is nobody's workspace: :meth:`list_members`)."""
        return [(wid, state) for wid, state in await self.discover_all() if not self.is_member(wid)]

    async def discover_all(self) -> list[tuple[str, State]]:
        """:meth:`discover`'s servers and the warm pool's members."""
        prefix = str(self._ws_root / "run") + os.sep
        found = await run_blocking(procs.tree_roots_with_env, SERVER_ENV, prefix)
        out: list[tuple[str, State]] = []
        for pid, env in found:
            started = procs.start_time(pid)
            if started is None:
                continue
            workspace_id = Path(env[SERVER_ENV]).name
            state: State = {"pid": pid, "start_time": started, "cgroup": workspace_id, "workspace_id": workspace_id}
            state.update(await run_blocking(_owner_and_port, pid))
            out.append((workspace_id, state))
        return out

    async def stats(self, state: State) -> dict[str, Any]:
        """Memory and CPU of JupyterLab's process tree; ``cpu_percent`` (100 = one core busy) since
        this workload's previous sample when that is at most :data:`_CPU_RECENT` seconds old (the
        usage sampler's sweeps), else over :data:`_CPU_WINDOW` seconds, as the docker runtime's."""
        key = (state.get("pid"), state.get("start_time"))
        now = time.monotonic()
        prev = self._cpu_samples.get(key)
        if prev is None or now - prev[0] > _CPU_RECENT:
            first = await run_blocking(process_tree_stats, state)
            if not first.get("running"):
                self._cpu_samples.pop(key, None)
                return first
            prev = (now, float(first["cpu_seconds"]))
            await asyncio.sleep(_CPU_WINDOW)
        second = await run_blocking(process_tree_stats, state)
        if not second.get("running"):
            self._cpu_samples.pop(key, None)
            return second
        t = time.monotonic()
        busy = max(0.0, second["cpu_seconds"] - prev[1])  # an exited child takes its time along
        second["cpu_percent"] = round(busy / max(t - prev[0], 1e-3) * 100.0, 2)
        self._cpu_samples[key] = (t, float(second["cpu_seconds"]))
        # The usage history's OOM kills (issue 17): the workspace cgroup's counter, where limits apply.
        if self.cgroups is not None and state.get("cgroup"):
            oom = await run_blocking(self.cgroups.oom_kills, state["cgroup"])
            if oom is not None:
                second["oom_kills"] = oom
        return second

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
        env_dir = self.env_dir(spec.id)
        user = await run_blocking(self._os_user, spec)
        await run_blocking(self._prepare_env, spec, user)
        full_env = self._workspace_env(spec, env_dir)
        full_env.pop("JUPYTER_TOKEN", None)
        if user is not None:
            full_env.update(HOME=str(user.home), USER=user.name, LOGNAME=user.name)
        full_env.update(env or {})
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=str(spec.path),
            env=full_env,
            stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            **self._as_user(user),
        )
        chunks: list[bytes] = []

        async def feed() -> None:
            if stdin is not None and proc.stdin is not None:
                try:
                    proc.stdin.write(stdin)
                    await proc.stdin.drain()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the command stopped reading: its exit status says why
                finally:
                    proc.stdin.close()

        async def pump() -> None:
            assert proc.stdout is not None
            while True:
                chunk = await proc.stdout.read(4096)
                if not chunk:
                    break
                chunks.append(chunk)
                if output is not None:
                    await output(chunk)

        try:
            await asyncio.wait_for(asyncio.gather(feed(), pump(), proc.wait()), timeout)
        except TimeoutError:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await proc.wait()
            raise Timeout(f"{argv[0]} did not finish within {timeout:.0f} s") from None
        return ExecResult(proc.returncode or 0, b"".join(chunks))

    # -- experiment runs: the detached runner (runs.py) ---------------------------------------------

    def run_job_id(self, run_id: str) -> str:
        return run_id

    def run_snapshot_location(self, experiments_root: Path) -> tuple[str, str, Path]:
        """Runs read their snapshot where the agent wrote it (the run's own ``work/``)."""
        return str(experiments_root), "host", experiments_root

    async def submit_run(self, spec: RunSpec, progress: Progress | None = None) -> State:
        """Launch the run's runner in the workspace's environment; ``{"run_dir", "pid", "start_time"}``.

        With ``isolation: users`` the run is its workspace owner's: the agent copies the run's
        directory (job, snapshot) to ``<workspaces_dir>/runs/<run id>`` (0700, that user's), the
        runner runs there as that user (HOME, venv, firewall rules: the workspace's), and
        :meth:`fetch_run_outputs` copies its regular files back (never a symlink) into the agent's
        run directory when it ends. No warm runner: its socket would be in the agent's data_dir."""
        if self.users is None:
            return await self.runs.submit(spec)
        ws = spec.workspace_spec
        if ws is None or not spec.run_dir:
            raise BackendError("a local run needs its workspace and its run directory")
        user = await run_blocking(self._os_user, ws)
        assert user is not None
        own = await run_blocking(self._user_run_dir, spec, user)
        state = await self.runs.submit(dataclasses.replace(spec, run_dir=str(own), warm_runner_idle_s=0))
        return {**state, "agent_run_dir": spec.run_dir}

    def _user_run_dir(self, spec: RunSpec, user: OsUser) -> Path:
        assert self.users is not None
        src = Path(spec.run_dir)
        dest = self.users.root / "runs" / src.name
        if dest.exists():
            shutil.rmtree(dest)
        # job.json and the directories (the snapshot in work/); not the agent's own files beside them
        shutil.copytree(src, dest, symlinks=True,
                        ignore=lambda d, names: [n for n in names if Path(d) == src and n != "job.json"
                                                 and not (src / n).is_dir()])
        job_file = dest / "job.json"
        job = json.loads(job_file.read_text())
        work = Path(job.get("work_dir") or "")
        if work == src or src in work.parents:
            job["work_dir"] = str(dest / work.relative_to(src))
            job_file.write_text(json.dumps(job))
        chown_tree(dest, user.uid, user.gid)
        os.chmod(dest, 0o700)
        return dest

    async def run_status(self, state: State) -> RunStatus:
        """The runner's own result once it wrote ``result.json`` (it enforces the timeout itself)."""
        return self.runs.status(state)

    async def wait_run(self, state: State, index: int, wait: float) -> int:
        return await self.runs.wait(state, index, wait)

    async def fetch_run_outputs(self, state: State, dest: Path) -> list[str]:
        """Nothing to fetch: the runner writes its results into the run's directory itself; with
        users, into the owner's copy, whose regular files come back here (symlinks stay behind)."""
        if not state.get("agent_run_dir"):
            return []
        return await run_blocking(_copy_back, Path(state["run_dir"]), dest)

    async def cancel_run(self, state: State, grace: float = 5.0) -> None:
        await self.runs.cancel(state, grace)

    async def purge_run(self, state: State) -> None:
        """Nothing to forget: the run's directory is its record (with users, the owner's copy goes)."""
        if state.get("agent_run_dir") and self.users is not None:
            own = Path(state["run_dir"])
            if own.parent == self.users.root / "runs":
                await run_blocking(shutil.rmtree, own, True)

    async def recover_run(self, state: State) -> State | None:
        return await self.runs.recover(state)

    def describe(self) -> dict[str, Any]:
        lay = self.cgroups.layout if self.cgroups else None
        return {
            "name": self.name,
            "python": sys.executable,
            "gpus": self.gpus.capacity,
            "limits": f"cgroup v{lay.version}" if lay else (self.cgroups.reason if self.cgroups else "unknown"),
            "isolation": self.isolation(),
        }

    def isolation(self) -> dict[str, Any]:
        """What keeps workspaces apart on this host (``ml jupyter info`` and the agent's status)."""
        if self.users is None:
            reason = ("every workspace runs as the agent's own OS user: code in one workspace can read "
                      "the others' files and the agent's")
            if self.shared:
                return {"mode": "none", "enforced": False, "reason": reason}
            # local.isolation unset: one person only
            return {"mode": "single", "enforced": False, "single_owner": True,
                    "reason": reason + "; so this agent serves one person's workspaces (it may not switch "
                                       "users: as root or with the fetchml_agent role's capabilities each person "
                                       "gets an OS user; local.isolation: none shares knowingly)"}
        doc: dict[str, Any] = {
            "mode": "users", "enforced": True,
            "how": f"each owner's workspaces run as the OS user {self.users.prefix}<owner> "
                   f"(uids {self.users.uid_range[0]}-{self.users.uid_range[1]}); files, HOME, venv and "
                   "run directory are 0700 and theirs",
        }
        if self.firewall is not None:
            doc["network"] = (f"nftables table inet {self.firewall.policy.table}, by uid: a workspace user reaches its "
                              f"own JupyterLab ports, the package index and /access at 127.0.0.1:{self._index_port}"
                              " and the configured allow-list; nothing else")
        else:
            doc["not_enforced"] = [f"network ({self._firewall_off}: workspaces may reach each other's ports, "
                                   "the agent's API and the internet)"]
        return doc


#: What the runner writes at the top of a run's directory (fetchml_agent/experiments/runner.py).
_RUNNER_FILES = re.compile(r"(result|progress|state|environment)\.json|attempt-\d+\.json|output\.ipynb|run\.log"
                           r"|metrics\.jsonl")


def _copy_back(src: Path, dest: Path) -> list[str]:
    """Copy the regular files under ``src`` (a workspace user's) into ``dest``, the agent's: never
    through a symlink, at any depth and whatever the run swaps meanwhile (``os.fwalk`` holds each
    directory open and follows no link; files open relative to it with ``O_NOFOLLOW``), so a run
    cannot make the agent copy a file of its choice."""
    copied: list[str] = []
    for dirpath, _dirs, filenames, dirfd in os.fwalk(src, follow_symlinks=False):
        rel = Path(dirpath).relative_to(src)
        (dest / rel).mkdir(parents=True, exist_ok=True)
        for name in filenames:
            if rel == Path(".") and not _RUNNER_FILES.fullmatch(name):
                continue  # at the top, only what the runner writes: never the agent's own files
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dirfd)
            except OSError:
                continue  # a symlink (ELOOP), or gone
            with os.fdopen(fd, "rb") as fh:
                if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                    continue
                target = dest / rel / name
                target.unlink(missing_ok=True)
                with open(target, "wb") as out:
                    shutil.copyfileobj(fh, out)
            copied.append(str(rel / name))
    return copied
