"""The local warm pool's members under ``local.isolation: users``: zygotes (docs/warm-pool.md).

A member is a pre-imported JupyterLab process (:mod:`.zygote_server`, started here as root)
under a fresh workspace id, with that id's kernel environment, run directory, directory, port
and cgroup made ahead, all the agent's: no owner, no secret, no listening socket. The claim
does the users-mode steps of a start for the owner then known (:meth:`Zygotes.claim`): the
owner's OS user, the kernel environment, run directory and workspace directory made theirs, the
server's configuration, the uid's firewall rules; then it hands the zygote one line (uid, gid,
environment with the credential, arguments) and the zygote becomes the owner's JupyterLab in
itself. The server is the agent's child as a cold start's is, and its ``/proc/<pid>/environ``
names its run directory (:data:`~.runtime.SERVER_ENV`, set when the zygote was started under
the id the workspace takes), so :meth:`LocalRuntime.discover` adopts it after an agent restart
like any server; an unclaimed zygote reads end of input when the agent dies and exits, and the
pool's marker makes the next agent remove what it had.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fetchml_jupyter import SERVER_EXTENSIONS

from ...aio import run_blocking
from ...allocators import workspace_holder
from ...errors import BackendError
from ..base import Started, State, WorkspaceSpec
from .env import tail
from .users import OsUser, WorkspaceUsers, chown_tree

if TYPE_CHECKING:
    from .runtime import LocalRuntime

__all__ = ["SCRIPT", "Zygotes", "close_pipes"]

SCRIPT = Path(__file__).with_name("zygote_server.py")
_READY_TIMEOUT = 120.0
_CLAIM_POLL = 0.01  # the claim's readiness poll: a claimed server answers within a few hundred ms
#: How much higher than the agent's the claimed server's CPU priority is until it answers (nice
#: steps: -5 weighs about three times a default process): its start-up is what the claim waits for.
_START_BOOST = -5
#: Environment variables a zygote does not inherit from the agent (secrets, other environments).
_NOT_INHERITED = ("FETCHML_", "JUPYTER_TOKEN", "PIP_", "UV_", "CONDA", "VIRTUAL_ENV", "PYTHONHOME")


def _spawn(rt: LocalRuntime, spec: WorkspaceSpec, port: int, log_path: Path) -> subprocess.Popen[str]:
    from .runtime import FILE_ID_DB, SERVER_ENV

    run_dir = rt.server_run_dir(spec.id)
    env = {k: v for k, v in os.environ.items() if not k.startswith(_NOT_INHERITED)}
    env.update({SERVER_ENV: str(run_dir), "PYTHONNOUSERSITE": "1"})
    argv = [str(rt.server_python), str(SCRIPT), f"--port={port}", "--preload=" + ",".join(SERVER_EXTENSIONS),
            f"--file-ids={run_dir / FILE_ID_DB}"]
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with open(fd, "ab", buffering=0) as log:
        proc = subprocess.Popen(argv, cwd=str(run_dir), env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=log, start_new_session=True, text=True)
    rt._children[proc.pid] = proc
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], _READY_TIMEOUT)
    line = proc.stdout.readline() if ready else ""
    if line.strip() != "ready":
        proc.kill()
        proc.wait()
        rt._children.pop(proc.pid, None)
        raise BackendError("a warm pool zygote did not get ready", tail(log_path))
    return proc


def _hand_over(rt: LocalRuntime, spec: WorkspaceSpec, user: OsUser) -> Path:
    """The owner's from here: kernel environment, run directory, workspace directory; the
    server's configuration written for them. Its path."""
    rt._own_env(rt.env_dir(spec.id), user, fresh=True)
    run_dir = rt.server_run_dir(spec.id)
    chown_tree(run_dir, user.uid, user.gid)  # with what the zygote made ahead (its file-id database)
    if spec.path.stat().st_uid == os.geteuid():
        WorkspaceUsers.private_dir(spec.path, user.uid, user.gid)
    return rt._write_server_config(spec, run_dir, user)


def _release(proc: subprocess.Popen[str], request: dict[str, Any]) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(json.dumps(request) + "\n")
        proc.stdin.flush()
    except (BrokenPipeError, ValueError) as exc:
        raise BackendError("the warm pool zygote is gone", str(exc)) from exc
    finally:
        proc.stdin.close()
        proc.stdout.close()


def close_pipes(rt: LocalRuntime, state: State | None) -> None:
    """Close the agent's ends of a waiting zygote's pipes (it reads end of input and exits)."""
    proc = rt._children.get(int((state or {}).get("pid") or 0))
    for pipe in (getattr(proc, "stdin", None), getattr(proc, "stdout", None)):
        if pipe is not None and not pipe.closed:
            try:
                pipe.close()
            except OSError:  # its reader is gone already
                pass


class Zygotes:
    """Prepare and claim zygote members for :class:`~.pool.LocalWarmPool` (``local.isolation: users``)."""

    def __init__(self, rt: LocalRuntime) -> None:
        self.rt = rt

    async def prepare(self, spec: WorkspaceSpec) -> Started:
        rt = self.rt
        port = rt.ports.claim(workspace_holder(spec.id), spec.port)
        await run_blocking(rt._prepare_env, spec, None)
        await run_blocking(lambda: spec.path.mkdir(mode=0o700, parents=True, exist_ok=True))
        disk_limit = await run_blocking(rt._disk, spec)
        run_dir = rt.server_run_dir(spec.id)
        run_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(run_dir, 0o700)
        log_path = rt.data_dir / "logs" / f"{spec.id}.log"
        proc = await run_blocking(_spawn, rt, spec, port, log_path)
        limits: dict[str, Any] = {"enforced": False, "reason": "no cpu or memory limit was asked for"}
        if rt.cgroups is not None:  # the server the zygote becomes stays in it
            limits = await run_blocking(rt.cgroups.apply, spec.id, proc.pid, spec.resources.cpu,
                                        spec.resources.memory_mb)
        limits = {**limits, "disk": disk_limit}
        if spec.gpu_ids:
            limits["gpu"] = (f"GPUs {','.join(map(str, spec.gpu_ids))} assigned (CUDA_VISIBLE_DEVICES): visible "
                             "to the workspace alone among workspaces, not isolated from other host processes")
        state: State = {"pid": proc.pid, "start_time": _start_time(proc.pid), "port": port, "log": str(log_path),
                        "gpu_indexes": list(spec.gpu_ids), "cgroup": spec.id if limits.get("enforced") else None,
                        "zygote": True}
        return Started(state=state, url=f"http://127.0.0.1:{port}/", limits=limits)

    async def claim(self, state: State, spec: WorkspaceSpec) -> State:
        """Make the zygote of ``state`` the owner's server of workspace ``spec``; its state."""
        rt = self.rt
        proc = rt._children.get(int(state.get("pid") or 0))
        if proc is None or proc.poll() is not None or proc.stdin is None or proc.stdin.closed:
            raise BackendError(f"warm pool member {spec.id} has no waiting zygote of this agent")
        user = await run_blocking(rt._os_user, spec)
        assert user is not None
        port = int(state["port"])
        try:
            config_file = await run_blocking(_hand_over, rt, spec, user)
            if rt.firewall is not None:  # rules before the server runs as the uid
                rt._fw_users[spec.id] = (user.name, user.uid, port)
                rt._fw_known[user.name] = user.uid
                await rt._apply_firewall()
            request = {"uid": user.uid, "gid": user.gid, "umask": 0o077, "cwd": str(spec.path), "boost": _START_BOOST,
                       "env": rt._server_env(spec, user), "argv": rt._server_args(spec, port, config_file, user)}
            await run_blocking(_release, proc, request)
            try:
                await rt._wait_ready(proc, f"http://127.0.0.1:{port}/", spec.token, Path(state["log"]),
                                     poll=_CLAIM_POLL)
            finally:
                await run_blocking(_unboost, proc.pid)
        except BaseException:
            await rt._forget_firewall(spec.id)
            raise
        return {**state, "os_user": user.name, "workspace_id": spec.id}


def _unboost(pid: int) -> None:
    """Every thread of the claimed server back to the agent's priority (the start-up boost ends)."""
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:  # it ended
        return
    for tid in tids:
        try:
            os.setpriority(os.PRIO_PROCESS, int(tid), nice)
        except OSError:  # that thread ended
            pass


def _start_time(pid: int) -> Any:
    from ... import procs

    return procs.start_time(pid)
