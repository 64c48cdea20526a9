"""Experiment runs on the local runtime: the detached runner, in the workspace's own environment.

This is the local runtime's :class:`~fetchml_agent.runtimes.base.RunBackend`. A run executes in
the workspace's environment (its venv Python first on ``PATH``, its variables) as the runner
process ``python -m fetchml_agent.experiments.runner RUN_DIR`` (the server environment's Python,
which has papermill; the notebook's kernel and a script run use the workspace's kernel environment) (started by module name: nothing
of it is imported here), launched either

- through the workspace's *warm runner*: a process of that environment started once with
  ``exec``, papermill already imported, which forks runners on request over a Unix socket under
  ``DATA_DIR/run/<workspace id>/`` (``spec.warm_runner_idle_s`` > 0); or
- with ``exec`` of the runner module (a fresh interpreter).

The runner detaches, so the agent holds only its pid and start time (the run's *state*, with its
directory) and learns of its end by a pidfd. Everything the run produces is written by the runner
into the run's directory on this host: ``result.json`` (the outcome, written last), the executed
notebook, metrics, ``work/outputs/``; so there is nothing to fetch and the status carries the
runner's own result document. Files in the run directory are the contract with the runner
(see :mod:`fetchml_agent.experiments.runner`): a directory is launched at most once (its
``launched`` marker), so nothing runs twice, and an agent restarted meanwhile finds the runner
again from ``state.json``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ...aio import run_blocking
from ...errors import BackendError, FetchmlError, InvalidArgument
from ...jsonfiles import read_json
from ...procs import alive, kill_tree, start_time
from ..base import ExecResult, RunSpec, RunStatus, State, WorkspaceSpec

__all__ = ["RUNNER_MODULE", "LocalRuns"]

log = logging.getLogger("fetchml.experiments")

RUNNER_MODULE = "fetchml_agent.experiments.runner"
EXIT_CANCELLED = 143  # 128 + SIGTERM, as the runner records it
_ADOPT_LAUNCH_WAIT_S = 1.0
_MAX_SOCKET_PATH = 100  # AF_UNIX paths are limited to 108 bytes
_POLL_S = 0.5
_RESULT_STATES = {"succeeded": "succeeded", "failed": "failed", "cancelled": "cancelled"}

Exec = Callable[..., Awaitable[ExecResult]]


class LocalRuns:
    """Launches, watches, cancels and recovers runner processes (see the module docstring)."""

    def __init__(self, data_dir: Path, exec_: Exec, python: str = "python") -> None:
        self.data_dir = data_dir
        self._exec = exec_
        #: The Python the runner runs with (papermill's): the server environment's, while the
        #: notebook's kernel and a script run use the workspace's own (``FETCHML_KERNEL_PYTHON``).
        self.python = python
        self._warm_locks: dict[str, asyncio.Lock] = {}
        self._cancelled: set[str] = set()  # run directories whose cancel was asked for

    # -- submit ---------------------------------------------------------------------------------

    async def submit(self, spec: RunSpec) -> State:
        """Launch the runner of ``spec.run_dir`` (its ``job.json`` written); return its state."""
        ws = spec.workspace_spec
        if ws is None or not spec.run_dir:
            raise InvalidArgument("a local run needs its workspace and its run directory")
        env = {"CUDA_VISIBLE_DEVICES": ",".join(map(str, spec.gpu_ids)), "FETCHML_RUN_DIR": spec.run_dir}
        try:
            launched = await self._launch_warm(ws, spec, env) or await self._launch_exec(ws, spec, env)
        except FetchmlError as exc:
            launched = {"error": exc.message}
        if "launched before" in str(launched.get("error", "")):
            # A warm runner that was stopping may have launched it before answering: adopt it.
            await asyncio.sleep(_ADOPT_LAUNCH_WAIT_S)
            launched = read_json(Path(spec.run_dir) / "state.json") or launched
        if not launched.get("pid"):
            raise BackendError(f"the run could not be started: {launched.get('error') or 'no runner'}")
        return {"run_dir": spec.run_dir, "pid": int(launched["pid"]), "start_time": launched.get("start_time")}

    async def _launch_exec(self, ws: WorkspaceSpec, spec: RunSpec, env: dict[str, str]) -> dict[str, Any]:
        """Launch the runner with ``exec`` of the runner module (a fresh interpreter)."""
        res = await self._exec(ws, spec.workspace_state, [self.python, "-m", RUNNER_MODULE, spec.run_dir], env=env,
                               timeout=60)
        return _last_json(res.output) or {"error": res.output.decode("utf-8", "replace")[-500:] or f"exit code {res.exit_code}"}

    def _warm_socket(self, ws: WorkspaceSpec) -> Path:
        digest = hashlib.sha256(json.dumps(ws.env, sort_keys=True).encode()).hexdigest()[:8]
        return self.data_dir / "run" / ws.id / f"runner-{digest}.sock"

    async def _launch_warm(self, ws: WorkspaceSpec, spec: RunSpec, env: dict[str, str]) -> dict[str, Any] | None:
        """Ask the workspace's warm runner to fork the run, starting the warm runner first when
        none listens; ``None`` when there is none to use (disabled, or it could not start)."""
        sock = self._warm_socket(ws)
        if spec.warm_runner_idle_s <= 0 or len(str(sock)) > _MAX_SOCKET_PATH:
            return None
        request = json.dumps({"run_dir": spec.run_dir, "env": env}).encode() + b"\n"
        async with self._warm_locks.setdefault(ws.id, asyncio.Lock()):
            reply = await _ask_warm(sock, request)
            if reply is not None:
                return reply
            await run_blocking(_prepare_socket_dir, sock)
            argv = [self.python, "-m", RUNNER_MODULE, "--serve", str(sock), str(spec.warm_runner_idle_s)]
            res = await self._exec(ws, spec.workspace_state, argv, timeout=60)
            if res.exit_code != 0:
                log.warning("the warm runner of %s did not start: %s", ws.name, res.output.decode("utf-8", "replace")[-300:])
                return None
            return await _ask_warm(sock, request)

    # -- follow ---------------------------------------------------------------------------------

    def status(self, state: State) -> RunStatus:
        """The runner's result once it wrote one; ``running`` while it lives; else why not."""
        run_dir = Path(state["run_dir"])
        result = read_json(run_dir / "result.json")
        if result is None:
            if alive(state.get("pid"), state.get("start_time")):
                return RunStatus("running")
            result = read_json(run_dir / "result.json")  # written just before it exited
        if result is None:
            if state["run_dir"] in self._cancelled:
                result = {"status": "cancelled", "message": "cancelled (its process was killed)",
                          "exit_code": EXIT_CANCELLED}
            elif state.get("ended_unwatched"):
                result = {"status": "failed",
                          "message": "the run's process ended while the agent was down, without a result"}
            else:
                result = {"status": "failed", "message": "the run's process ended without writing a result (killed?)"}
        self._cancelled.discard(state["run_dir"])
        return RunStatus(_RESULT_STATES.get(result.get("status", ""), "failed"), result.get("message", ""),  # type: ignore[arg-type]
                         exit_code=result.get("exit_code"), result=result)

    async def wait(self, state: State, index: int, wait: float) -> int:
        """Return at once the first time (``index`` 0), then when the runner exits or after ``wait`` s."""
        if index:
            try:
                await asyncio.wait_for(_wait_exit(state.get("pid"), state.get("start_time")), wait)
            except TimeoutError:
                pass
        return index + 1

    # -- cancel and recover -----------------------------------------------------------------------

    async def cancel(self, state: State, grace: float) -> None:
        """SIGTERM to the runner, which kills the attempt's processes and records ``cancelled``;
        SIGKILL to its whole tree when it is still there ``grace`` seconds later."""
        self._cancelled.add(state["run_dir"])
        pid, started = state.get("pid"), state.get("start_time")
        if not alive(pid, started):
            return
        try:
            os.kill(int(pid), signal.SIGTERM)  # type: ignore[arg-type]
        except ProcessLookupError:
            return
        try:
            await asyncio.wait_for(_wait_exit(pid, started), grace + 1)
        except TimeoutError:
            await run_blocking(kill_tree, int(pid))  # type: ignore[arg-type]

    async def recover(self, state: State) -> State | None:
        """After an agent restart: the runner found again from ``state.json`` (a launcher may be
        forking right now); ``None`` when the run directory was never launched."""
        run_dir = Path(state["run_dir"])
        if (run_dir / "result.json").exists():
            return state
        found = read_json(run_dir / "state.json")
        if found is None and (run_dir / "launched").exists():
            await asyncio.sleep(_ADOPT_LAUNCH_WAIT_S)
            found = read_json(run_dir / "state.json")
        if found and (state.get("pid") is None or state.get("pid") == found.get("pid")):
            state = {**state, "pid": found.get("pid"), "start_time": found.get("start_time")}
        if alive(state.get("pid"), state.get("start_time")) or (run_dir / "result.json").exists():
            return state
        if not (run_dir / "launched").exists():
            return None
        return {**state, "ended_unwatched": True}


def _last_json(output: bytes) -> dict[str, Any] | None:
    lines = output.decode("utf-8", "replace").strip().splitlines()
    try:
        doc = json.loads(lines[-1]) if lines else None
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _prepare_socket_dir(sock: Path) -> None:
    sock.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(sock.parent, 0o700)


async def _ask_warm(sock: Path, request: bytes) -> dict[str, Any] | None:
    """One request to a warm runner; ``None`` when none listens there (a stale socket is removed)."""
    try:
        reader, writer = await asyncio.open_unix_connection(str(sock))
    except (FileNotFoundError, ConnectionRefusedError):
        if sock.exists():
            sock.unlink(missing_ok=True)
        return None
    except OSError:
        return None
    try:
        writer.write(request)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 60)
    except (OSError, TimeoutError):
        return None
    finally:
        writer.close()
    return _last_json(line)


async def _wait_exit(pid: int | None, started: int | None) -> None:
    """Return when the process ``pid`` (started at ``started``) has exited."""
    if not pid:
        return
    try:
        fd = os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return
    try:
        if start_time(pid) != started:
            return  # the pid now names another process: ours is gone
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()

        def on_exit() -> None:
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(fd, on_exit)
        try:
            while not exited.done():
                try:
                    await asyncio.wait_for(asyncio.shield(exited), _POLL_S * 20)
                except TimeoutError:
                    if not alive(pid, started):
                        break
        finally:
            loop.remove_reader(fd)
    finally:
        os.close(fd)
