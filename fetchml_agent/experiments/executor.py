"""The agent's side of runs: the bounded worker pool, launching, watching, cancelling, adopting.

One :class:`Executor` per agent (``agent.extensions["experiments"]``). Queued runs wait in the
store; :meth:`Executor.kick` wakes the scheduler, which starts what fits:

- CPU-only runs: at most ``experiments.cpu_workers`` at once (default 1);
- GPU runs: each takes as many host GPUs as it asked for, exclusively (one run per GPU), from those
  not held by another active workspace; first come, first served among GPU runs. A run that asks
  for more GPUs than the host has is refused when queued.

A run is launched in its workspace's environment: through the workspace's warm runner (a process
of that environment started once with ``runtime.exec``, papermill already imported, which forks
runners on request over a Unix socket), else with ``runtime.exec`` of the runner module. The runner
(:mod:`.runner`) detaches, so the agent only holds its pid and start time and is told of its end
by a pidfd. The outcome is read from ``result.json``; metrics, outputs and the executed notebook
are recorded and synced into the workspace (:mod:`.sync`) before the run's status changes, so a
client that sees ``succeeded`` finds the results in place.

On a runtime that executes runs itself (:mod:`.remote`: Nomad batch jobs, docker containers) the
run is submitted to it and followed (blocking queries, ``docker wait``); its results are fetched
into the run's directory before it is recorded, the same way. Nomad's scheduler places runs
itself (``schedules_runs``): every queued run is submitted at once; docker runs take the worker
pool's slots and GPUs like local ones.

After a restart (:meth:`Executor.start`): queued runs stay queued; a running run whose runner is
alive is adopted (watched again); one whose runner finished meanwhile is recorded from its result
file; one whose runner is gone without a result is marked failed with the reason. A run directory
is launched at most once (the runner's ``launched`` marker), so nothing runs twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..aio import run_blocking
from ..allocators import run_holder, workspace_holder
from ..errors import FetchmlError, InvalidState, NotFound
from ..procs import alive, kill_tree, start_time
from ..runtimes.base import RunBackend, capability
from . import remote
from .records import Run, claim_run, get_run, insert_metrics, runs_by_status, update_run
from .runner import read_json, write_json

if TYPE_CHECKING:
    from ..agent import Agent
    from ..runtimes.base import WorkspaceSpec
    from ..store.workspaces import Workspace

__all__ = ["Executor", "RUNNER_MODULE", "experiments_root", "run_view"]

log = logging.getLogger("fetchml.experiments")

RUNNER_MODULE = "fetchml_agent.experiments.runner"
_ADOPT_LAUNCH_WAIT_S = 1.0
_MAX_SOCKET_PATH = 100  # AF_UNIX paths are limited to 108 bytes
_POLL_S = 0.5
_REMOTE_WAIT_S = 30.0  # longest blocking query while following a remote run
_REMOTE_RETRY_S = 5.0  # pause after the runtime could not be reached


def experiments_root(agent: Agent) -> Path:
    return agent.data_dir / "experiments"


def run_view(run: Run, *, now: float | None = None) -> dict[str, Any]:
    """The run as clients see it; a running run's current cell is read from its progress file."""
    now = now or time.time()
    doc: dict[str, Any] = {
        "id": run.id,
        "experiment": run.experiment_id,
        "workspace": run.workspace,
        "user": run.user,
        "kind": run.kind,
        "target": run.target,
        "parameters": run.parameters,
        "status": run.status,
        "message": run.message,
        "error": run.error,
        "attempt": run.attempt,
        "retries": run.retries,
        "timeout_s": run.timeout_s,
        "gpus": run.gpus,
        "gpu_indexes": run.gpu_indexes,
        "queued_at": run.queued_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "elapsed_s": round((run.finished_at or now) - run.started_at, 1) if run.started_at else None,
        "current_cell": run.current_cell,
        "cells_total": run.cells_total,
        "exit_code": run.exit_code,
        "duration_s": run.duration_s,
        "peak_memory_bytes": run.peak_memory_bytes,
        "outputs": run.outputs,
        "output_notebook": str(Path(run.run_dir, "output.ipynb")) if run.kind == "notebook" else None,
        "warnings": run.warnings,
        "run_dir": run.run_dir,
    }
    if run.status == "running":
        progress = read_json(Path(run.run_dir, "progress.json")) or {}
        doc["attempt"] = progress.get("attempt", run.attempt)
        doc["current_cell"] = progress.get("cell")
        doc["cells_total"] = progress.get("cells")
        doc["current_source"] = progress.get("source")
    return doc


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill: the rest is still good
        if isinstance(rec, dict) and isinstance(rec.get("name"), str):
            out.append(rec)
    return out


def _list_outputs(outputs: Path) -> list[str]:
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(outputs):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if not path.is_symlink():
                found.append(str(path.relative_to(outputs)))
    return found


def _metrics_csv(records: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["attempt", "name", "step", "value", "ts"])
    for r in records:
        writer.writerow([r.get("attempt", 1), r["name"], r.get("step"), r.get("value"), r.get("ts")])
    return buf.getvalue()


def _notebook_metadata(path: Path) -> dict[str, Any]:
    """What papermill recorded in the executed notebook: parameters, kernel, timings per cell."""
    try:
        nb = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    meta = nb.get("metadata", {})
    pm = meta.get("papermill", {})
    cells = []
    for i, cell in enumerate(nb.get("cells", []), start=1):
        cp = cell.get("metadata", {}).get("papermill", {})
        if cell.get("cell_type") == "code":
            cells.append({"cell": i, "status": cp.get("status"), "duration_s": cp.get("duration"),
                          "execution_count": cell.get("execution_count"),
                          "injected_parameters": "injected-parameters" in cell.get("metadata", {}).get("tags", [])})
    return {
        "kernel": meta.get("kernelspec", {}).get("name"),
        "language": meta.get("language_info", {}).get("name"),
        "language_version": meta.get("language_info", {}).get("version"),
        "papermill": {k: pm.get(k) for k in ("parameters", "default_parameters", "start_time", "end_time", "duration", "version", "exception")},
        "cells": cells,
    }


class Executor:
    """Runs of every workspace on this agent; see the module docstring."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        settings = agent.config.section("experiments")
        self.cpu_workers = int(settings.get("cpu_workers") or 1)
        self.cancel_grace = float(settings.get("cancel_grace", 5))
        self.default_timeout = settings.get("default_timeout")
        self.snapshot_max_bytes = int(settings.get("snapshot_max_file_mb") or 10) * 1024 * 1024
        self.warm_idle_s = float(settings.get("warm_runner_idle_s", 600))
        self._warm_locks: dict[str, asyncio.Lock] = {}
        self.active: dict[str, Run] = {}  # running runs by id
        self.watchers: dict[str, asyncio.Task[None]] = {}
        self.cancel_requested: set[str] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def root(self) -> Path:
        return experiments_root(self.agent)

    def run_dir(self, experiment_id: str, run_id: str) -> Path:
        return self.root / experiment_id / "runs" / run_id

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        # Queueing a notebook asks papermill which parameters it declares: import it now, off the
        # loop, so the first queue does not pay for it.
        self._tasks.append(asyncio.create_task(run_blocking(_import_papermill), name="experiments-warm-up"))
        await self.adopt()
        self._tasks.append(asyncio.create_task(self._loop(), name="experiments-scheduler"))
        self.kick()

    async def close(self) -> None:
        """Stop watching; runs keep running and the next agent adopts them."""
        for task in [*self._tasks, *self.watchers.values()]:
            task.cancel()
        for task in [*self._tasks, *self.watchers.values()]:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass

    def kick(self) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._schedule()
            except Exception:  # the scheduler must survive a bad run record
                log.exception("scheduling runs failed")

    # -- scheduling -----------------------------------------------------------------------------

    def _release(self, run: Run) -> None:
        if self.agent.runtime.gpus is not None:
            self.agent.runtime.gpus.release(run_holder(run.id))

    def _deactivate(self, run: Run) -> None:
        """``run`` is no longer running here: free its worker slot and its GPUs."""
        if self.active.get(run.id) is run:
            del self.active[run.id]
            self._release(run)

    def _workspace(self, workspace_id: str) -> Workspace | None:
        return next((ws for ws in self.agent.workspaces.values() if ws.id == workspace_id), None)

    async def _schedule(self) -> None:
        queued = await self.agent.store.run(runs_by_status, "queued")
        on_remote = remote.is_remote(self.agent)
        if on_remote and self.agent.runtime.capabilities.schedules_runs:
            for run in queued:  # Nomad's scheduler places them (or keeps them until capacity frees)
                await self._launch_remote(run, [])
            return
        cpu_busy = sum(1 for r in self.active.values() if r.gpus == 0)
        gpu_blocked = False
        for run in queued:
            if run.gpus == 0:
                if cpu_busy >= self.cpu_workers:
                    continue
                cpu_busy += 1
                await (self._launch_remote(run, []) if on_remote else self._launch(run, []))
                continue
            if gpu_blocked:
                continue  # GPU runs start in the order they were queued
            # One GPU per run, exclusively; a run may use the GPUs its own workspace holds.
            gpus = self.agent.runtime.gpus
            ids = gpus.try_claim(run_holder(run.id), run.gpus, share_with=workspace_holder(run.workspace_id)) \
                if gpus is not None else None
            if ids is None:
                gpu_blocked = True
                continue
            await (self._launch_remote(run, list(ids)) if on_remote else self._launch(run, list(ids)))

    async def _launch(self, run: Run, gpu_ids: list[int]) -> None:
        from ..service.workspaces import spec_for

        store = self.agent.store
        ws = self._workspace(run.workspace_id)
        now = time.time()
        if not await store.run(claim_run, run.id, "running", now):
            self._release(run)
            return  # cancelled while we looked
        run.status, run.started_at, run.gpu_indexes, run.message = "running", now, gpu_ids, "starting"
        self.active[run.id] = run
        if ws is None:
            await self._record(run, {"status": "failed", "message": "its workspace was deleted before the run started"})
            return
        await store.run(update_run, run)
        env = {"CUDA_VISIBLE_DEVICES": ",".join(map(str, gpu_ids)), "FETCHML_RUN_DIR": run.run_dir}
        spec = spec_for(self.agent, ws, tuple(gpu_ids))
        try:
            launched = await self._launch_warm(ws, spec, run, env) or await self._launch_exec(ws, spec, run, env)
        except FetchmlError as exc:
            launched = {"error": exc.message}
        if "launched before" in str(launched.get("error", "")):
            # A warm runner that was stopping may have launched it before answering: adopt it.
            await asyncio.sleep(_ADOPT_LAUNCH_WAIT_S)
            launched = read_json(Path(run.run_dir) / "state.json") or launched
        if not launched.get("pid"):
            await self._record(run, {"status": "failed", "message": f"the run could not be started: {launched.get('error') or 'no runner'}"})
            return
        run.pid, run.pid_start, run.message = int(launched["pid"]), launched.get("start_time"), ""
        await store.run(update_run, run)
        await self.agent.audit(run.user, "run.start", run.workspace, run=run.id, experiment=run.experiment_id,
                               pid=run.pid, gpus=gpu_ids)
        self._watch(run)

    async def _launch_exec(self, ws: Workspace, spec: WorkspaceSpec, run: Run, env: dict[str, str]) -> dict[str, Any]:
        """Launch the runner with ``runtime.exec`` of the runner module (a fresh interpreter)."""
        argv = ["python", "-m", RUNNER_MODULE, run.run_dir]
        res = await self.agent.runtime.exec(spec, ws.runtime_state, argv, env=env, timeout=60)
        return _last_json(res.output) or {"error": res.output.decode("utf-8", "replace")[-500:] or f"exit code {res.exit_code}"}

    def _warm_socket(self, ws: Workspace, spec: WorkspaceSpec) -> Path:
        digest = hashlib.sha256(json.dumps(spec.env, sort_keys=True).encode()).hexdigest()[:8]
        return self.agent.data_dir / "run" / ws.id / f"runner-{digest}.sock"

    async def _launch_warm(self, ws: Workspace, spec: WorkspaceSpec, run: Run, env: dict[str, str]) -> dict[str, Any] | None:
        """Ask the workspace's warm runner to fork the run, starting the warm runner first when
        none listens; ``None`` when there is none to use (disabled, or it could not start)."""
        sock = self._warm_socket(ws, spec)
        if self.warm_idle_s <= 0 or len(str(sock)) > _MAX_SOCKET_PATH:
            return None
        request = json.dumps({"run_dir": run.run_dir, "env": env}).encode() + b"\n"
        async with self._warm_locks.setdefault(ws.id, asyncio.Lock()):
            reply = await _ask_warm(sock, request)
            if reply is not None:
                return reply
            await run_blocking(_prepare_socket_dir, sock)
            argv = ["python", "-m", RUNNER_MODULE, "--serve", str(sock), str(self.warm_idle_s)]
            res = await self.agent.runtime.exec(spec, ws.runtime_state, argv, timeout=60)
            if res.exit_code != 0:
                log.warning("the warm runner of %s did not start: %s", ws.name, res.output.decode("utf-8", "replace")[-300:])
                return None
            return await _ask_warm(sock, request)

    # -- remote runs (Nomad batch jobs, docker containers) ----------------------------------------

    async def _launch_remote(self, run: Run, gpu_ids: list[int]) -> None:
        store = self.agent.store
        ws = self._workspace(run.workspace_id)
        if not await store.run(claim_run, run.id, "running", time.time()):
            self._release(run)
            return  # cancelled while we looked
        run.status, run.started_at, run.message, run.gpu_indexes = "running", time.time(), "submitting", gpu_ids
        self.active[run.id] = run
        if ws is None:
            await self._record(run, {"status": "failed", "message": "its workspace was deleted before the run started"})
            return
        await store.run(update_run, run)
        rt = capability(self.agent.runtime, RunBackend)
        run_dir = Path(run.run_dir)
        try:
            snap_root = remote.snapshot_root(self.agent, self.root)
            rel, copied = await run_blocking(remote.publish_snapshot, snap_root, run_dir, run.id)
            spec = dataclasses.replace(remote.run_spec(self.agent, ws, run, rel, self.root), gpu_ids=tuple(gpu_ids))
            # Written before submitting, so that an agent killed meanwhile finds the job to adopt.
            pending = {"job_id": rt.run_job_id(run.id), "run_id": run.id, "submitted_at": time.time(),
                       "timeout": spec.timeout, "snapshot_path": str(rel), "snapshot_copy": copied}
            await run_blocking(write_json, run_dir / remote.STATE_FILE, pending)
            state = {**pending, **await rt.submit_run(spec)}
        except FetchmlError as exc:
            await self._record(run, {"status": "failed", "message": f"the {self.agent.runtime.name} runtime did not start the run: {exc.message}",
                                     "error": {"ename": type(exc).__name__, "evalue": exc.message, "cell": None}})
            await run_blocking(remote.unpublish_snapshot, remote.snapshot_root(self.agent, self.root),
                               read_json(run_dir / remote.STATE_FILE) or {})
            return
        await run_blocking(write_json, run_dir / remote.STATE_FILE, state)
        run.message = f"waiting for capacity: {state['waiting']}" if state.get("waiting") else ""
        await store.run(update_run, run)
        await self.agent.audit(run.user, "run.start", run.workspace, run=run.id, experiment=run.experiment_id,
                               job=state["job_id"], gpus=run.gpus)
        self._follow(run, state)

    def _follow(self, run: Run, state: dict[str, Any]) -> None:
        self.watchers[run.id] = asyncio.create_task(self._follow_one(run, state), name=f"run-{run.id}")

    async def _follow_one(self, run: Run, state: dict[str, Any]) -> None:
        """Follow a remote run to its end; then fetch its results, record it, and purge its job."""
        rt = capability(self.agent.runtime, RunBackend)
        index = 0
        try:
            while True:
                try:
                    status = await rt.run_status(state)
                    if status.state not in ("queued", "running"):
                        break
                    message = "" if status.state == "running" else f"waiting: {status.message}"
                    if message != run.message:
                        run.message = message
                        await self.agent.store.run(update_run, run)
                    left = float(state.get("timeout") or 1e12) - (time.time() - float(state.get("submitted_at") or 0))
                    index = await rt.wait_run(state, index, min(_REMOTE_WAIT_S, max(1.0, left + 0.5)))
                except FetchmlError as exc:  # the backend unreachable for a while: keep following
                    if run.message != f"following it failed: {exc.message}; retrying":
                        run.message = f"following it failed: {exc.message}; retrying"
                        await self.agent.store.run(update_run, run)
                    index = 0
                    await asyncio.sleep(_REMOTE_RETRY_S)
            fetched = None
            try:
                await rt.fetch_run_outputs(state, Path(run.run_dir))
            except FetchmlError as exc:
                fetched = exc.message
            await self._record(run, remote.result_from_status(run, status, run.id in self.cancel_requested, fetched))
            try:
                await rt.purge_run(state)
            except FetchmlError as exc:
                log.warning("could not remove the job of run %s: %s", run.id, exc.message)
            await run_blocking(remote.unpublish_snapshot, remote.snapshot_root(self.agent, self.root), state)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("following run %s failed", run.id)
            self._deactivate(run)
            self.kick()
        finally:
            self.watchers.pop(run.id, None)

    async def _cancel_remote(self, run_id: str, active: Run) -> Run:
        self.cancel_requested.add(run_id)
        state = await run_blocking(read_json, Path(active.run_dir) / remote.STATE_FILE)
        if state:
            await capability(self.agent.runtime, RunBackend).cancel_run(state, self.cancel_grace)
        watcher = self.watchers.get(run_id)
        if watcher is not None:
            await asyncio.wait({watcher}, timeout=self.cancel_grace + _REMOTE_WAIT_S)
        return await self.agent.store.run(get_run, run_id) or active

    # -- watching -------------------------------------------------------------------------------

    def _watch(self, run: Run) -> None:
        self.watchers[run.id] = asyncio.create_task(self._watch_one(run), name=f"run-{run.id}")

    async def _watch_one(self, run: Run) -> None:
        try:
            await _wait_exit(run.pid, run.pid_start)
            await self._record(run, None)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Free its worker slot; the record still says running, and the next start records it.
            log.exception("recording run %s failed", run.id)
            self._deactivate(run)
            self.kick()
        finally:
            self.watchers.pop(run.id, None)

    async def _record(self, run: Run, outcome: dict[str, Any] | None) -> None:
        """Record the finished run: its result file (or ``outcome`` when the agent decided it),
        metrics, outputs; sync the results into the workspace; then its final status."""
        active = run
        run = dataclasses.replace(run)  # readers see the running record until the final one is stored
        run_dir = Path(run.run_dir)
        result = outcome if outcome is not None else read_json(run_dir / "result.json")
        if result is None:
            if run.id in self.cancel_requested:
                result = {"status": "cancelled", "message": "cancelled (its process was killed)", "exit_code": 143}
            else:
                result = {"status": "failed", "message": "the run's process ended without writing a result (killed?)"}
        progress = read_json(run_dir / "progress.json") or {}
        run.status = result.get("status", "failed")
        run.message = result.get("message", "")
        run.error = result.get("error")
        run.exit_code = result.get("exit_code")
        run.attempts = result.get("attempts") or []
        run.attempt = len(run.attempts) or run.attempt
        run.warnings = sorted(set(run.warnings) | set(result.get("warnings") or []))
        run.peak_memory_bytes = result.get("peak_memory_bytes")
        run.cells_total = result.get("cells_total") or progress.get("cells")
        run.current_cell = progress.get("cell")
        run.finished_at = result.get("finished_at") or time.time()
        run.duration_s = result.get("duration_s") or (round(run.finished_at - run.started_at, 3) if run.started_at else None)
        metrics = await run_blocking(_read_metrics, run_dir / "metrics.jsonl")
        outputs_dir = run_dir / "work" / "outputs"
        run.outputs = await run_blocking(_list_outputs, outputs_dir) if outputs_dir.is_dir() else []
        await self.agent.store.run(insert_metrics, run.id, metrics)
        await run_blocking(self._write_results, run, metrics)
        sync_note: dict[str, Any] = {}
        ws = self._workspace(run.workspace_id)
        if ws is not None:
            from .sync import auto_sync

            try:
                done = await auto_sync(self.agent, ws, run)
                sync_note = {"synced": len(done["copied"]), "conflicts": len(done["conflicts"])}
            except Exception as exc:  # the run's outcome is recorded whatever the sync did
                log.exception("syncing the results of %s into %s failed", run.id, ws.name)
                sync_note = {"sync_error": str(exc)}
        await self.agent.store.run(update_run, run)
        self._deactivate(active)
        self.cancel_requested.discard(run.id)
        outcome_word = {"succeeded": "ok", "cancelled": "cancelled"}.get(run.status, "error")
        await self.agent.audit("agent", "run.finish", run.workspace, outcome_word, run=run.id, status=run.status,
                               message=run.message, duration_s=run.duration_s, **sync_note)
        for hook in self.agent.extensions.get("run_finished_hooks", []):
            try:
                await hook(self.agent, run)
            except Exception:
                log.exception("run_finished hook failed for %s", run.id)
        self.kick()

    def _write_results(self, run: Run, metrics: list[dict[str, Any]]) -> None:
        """The experiment's record of the run, as files: what sync carries into the workspace."""
        run_dir = Path(run.run_dir)
        doc = run_view(run)
        doc["attempts"] = run.attempts
        doc["config"] = run.config
        if run.kind == "notebook":
            doc["notebook"] = _notebook_metadata(run_dir / "output.ipynb")
        latest: dict[str, Any] = {}
        for m in metrics:
            latest[m["name"]] = m.get("value")
        doc["metrics"] = {"count": len(metrics), "latest": latest}
        write_json(run_dir / "run.json", doc)
        (run_dir / "metrics.csv").write_text(_metrics_csv(metrics))
        write_json(run_dir / "experiment-config.json", run.config)

    # -- cancel ---------------------------------------------------------------------------------

    async def cancel(self, run_id: str) -> Run:
        """Cancel a queued run at once, or stop a running one (SIGTERM to its runner, which kills
        the notebook's processes and records ``cancelled``; SIGKILL after ``cancel_grace``)."""
        store = self.agent.store
        run = await store.run(get_run, run_id)
        if run is None:
            raise NotFound(f"no run {run_id!r}", "`ml status` lists the runs you can see")
        if run.status == "queued" and await store.run(claim_run, run_id, "cancelled"):
            run.status, run.message, run.finished_at = "cancelled", "cancelled before it started", time.time()
            await store.run(update_run, run)
            self.kick()
            return run
        active = self.active.get(run_id)
        if active is None:
            run = await store.run(get_run, run_id) or run
            raise InvalidState(f"run {run_id} has already {run.status}" if run.status != "running" else f"run {run_id} is not watched by this agent")
        if remote.is_remote(self.agent):
            return await self._cancel_remote(run_id, active)
        self.cancel_requested.add(run_id)
        deadline = time.monotonic() + 30
        while active.pid is None and active.status == "running" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # it is being launched right now
        if active.pid and alive(active.pid, active.pid_start):
            try:
                os.kill(active.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        watcher = self.watchers.get(run_id)
        if watcher is not None:
            done, _ = await asyncio.wait({watcher}, timeout=self.cancel_grace + 1)
            if not done and active.pid and alive(active.pid, active.pid_start):
                await run_blocking(kill_tree, active.pid)
                await asyncio.wait({watcher}, timeout=10)
        return await store.run(get_run, run_id) or active

    async def cancel_workspace_runs(self, workspace_id: str) -> list[str]:
        """Cancel every queued or running run of a workspace (it is being deleted)."""
        cancelled = []
        for run in await self.agent.store.run(runs_by_status, "queued", "running"):
            if run.workspace_id == workspace_id:
                try:
                    await self.cancel(run.id)
                    cancelled.append(run.id)
                except FetchmlError:
                    pass
        return cancelled

    # -- adoption -------------------------------------------------------------------------------

    async def adopt(self) -> None:
        for run in await self.agent.store.run(runs_by_status, "running"):
            run_dir = Path(run.run_dir)
            self.active[run.id] = run
            if self.agent.runtime.gpus is not None and run.gpu_indexes:
                with contextlib.suppress(FetchmlError):  # a GPU the host lost meanwhile is not held
                    self.agent.runtime.gpus.hold(run_holder(run.id), run.gpu_indexes, what=f"run {run.id}")
            if remote.is_remote(self.agent):
                state = read_json(run_dir / remote.STATE_FILE)
                if state is None:
                    await self._record(run, {"status": "failed", "message": "the agent stopped while starting this run; it was not started"})
                    continue
                await self.agent.audit("agent", "run.adopt", run.workspace, run=run.id, job=state.get("job_id"))
                self._follow(run, state)
                continue
            if (run_dir / "result.json").exists():
                await self._record(run, None)
                continue
            state = read_json(run_dir / "state.json")
            if state is None and (run_dir / "launched").exists():
                await asyncio.sleep(_ADOPT_LAUNCH_WAIT_S)  # a launcher may be forking right now
                state = read_json(run_dir / "state.json")
            if state and (run.pid is None or run.pid == state.get("pid")):
                run.pid, run.pid_start = state.get("pid"), state.get("start_time")
            if run.pid and alive(run.pid, run.pid_start):
                run.message = ""
                await self.agent.store.run(update_run, run)
                await self.agent.audit("agent", "run.adopt", run.workspace, run=run.id, pid=run.pid)
                self._watch(run)
                continue
            if (run_dir / "result.json").exists():
                await self._record(run, None)
            elif not (run_dir / "launched").exists():
                await self._record(run, {"status": "failed", "message": "the agent stopped while starting this run; it was not started"})
            else:
                await self._record(run, {"status": "failed", "message": "the run's process ended while the agent was down, without a result"})


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


def _import_papermill() -> None:
    import papermill  # noqa: F401


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
