"""The agent's side of runs: the worker pool, launching, following, cancelling, adopting — one
path for every runtime.

One :class:`Executor` per agent (``agent.services.experiments``). Queued runs wait in the
store; :meth:`Executor.kick` wakes the scheduler, which starts what fits. Where the backend places
runs itself (``capabilities.schedules_runs``: Nomad) every queued run is submitted at once;
otherwise the agent's worker pool applies:

- CPU-only runs: at most ``experiments.cpu_workers`` at once (default 1);
- GPU runs: each claims as many host GPUs as it asked for from the runtime's allocator,
  exclusively (one run per GPU), sharing only its own workspace's; first come, first served among
  GPU runs. A run that asks for more GPUs than the host has is refused when queued.

Every runtime executes runs through its :class:`~fetchml_agent.runtimes.base.RunBackend`: the
local runtime with the detached runner in the workspace's environment (warm runner, pidfd), docker
in a container per run, Nomad as a batch job. The executor publishes the run's snapshot where the
backend reads it, submits the run and keeps the backend's state in ``runtime-job.json`` in the
run's directory (written before submitting, so that an agent killed meanwhile finds it), follows
the run (``run_status``/``wait_run``: a pidfd, ``docker wait``, blocking queries), fetches its
results into the run's directory, and records it: metrics, outputs and the executed notebook are
recorded and synced into the workspace (:mod:`.sync`) before the run's status changes, so a client
that sees ``succeeded`` finds the results in place. Then the backend forgets the run.

After a restart (:meth:`Executor.start`): queued runs stay queued; a running run is recovered
from its stored state (``recover_run``) and followed again — recorded at once when it finished
meanwhile, failed with the reason when it ended without a result or was never started. A run is
started at most once (the local runner's ``launched`` marker; the backend's job name).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..aio import run_blocking
from ..allocators import run_holder, workspace_holder
from ..core import AgentCore
from ..errors import FetchmlError, InvalidState, NotFound, NotSupported
from ..jsonfiles import read_json, write_json
from ..runtimes.base import Resources, RunBackend, RunSpec, RunStatus, State, capability
from .environment import environment_view
from .records import Run, claim_run, get_run, insert_metrics, runs_by_status, update_run
from .results import (
    STATE_FILE,
    list_outputs,
    publish_snapshot,
    read_metrics,
    result_from_status,
    unpublish_snapshot,
    write_results,
)
from .sync import auto_sync

if TYPE_CHECKING:
    from ..store.workspaces import Workspace

__all__ = ["Executor", "experiments_root", "run_view"]

log = logging.getLogger("fetchml.experiments")

_FOLLOW_WAIT_S = 30.0  # longest wait_run while following a run
_RETRY_S = 5.0  # pause after the backend could not be reached
_CANCEL_SUBMIT_WAIT_S = 30.0  # how long a cancel waits for a run being submitted right now
_NEVER_STARTED = "the agent stopped while starting this run; it was not started"


def experiments_root(agent: AgentCore) -> Path:
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
        "environment": environment_view(Path(run.run_dir)),  # issue #18: the environment step
    }
    if run.status == "running":
        progress = read_json(Path(run.run_dir, "progress.json")) or {}
        doc["attempt"] = progress.get("attempt", run.attempt)
        doc["current_cell"] = progress.get("cell")
        doc["cells_total"] = progress.get("cells")
        doc["current_source"] = progress.get("source")
    return doc


def _import_papermill() -> None:
    import papermill  # noqa: F401


def _run_ref(state: State) -> dict[str, Any]:
    """How audit events name a run's workload: the runner's pid, else the backend's job."""
    return {"pid": state["pid"]} if state.get("pid") else {"job": state.get("job_id")}


class Executor:
    """Runs of every workspace on this agent; see the module docstring."""

    def __init__(self, agent: AgentCore, finished_hooks: list[Callable[[Run], Awaitable[None]]] | None = None) -> None:
        self.agent = agent
        self.finished_hooks = finished_hooks if finished_hooks is not None else []  # each run's final record stored
        settings = agent.config.section("experiments")
        self.cpu_workers = int(settings.get("cpu_workers") or 1)
        self.cancel_grace = float(settings.get("cancel_grace", 5))
        self.default_timeout = settings.get("default_timeout")
        self.snapshot_max_bytes = int(settings.get("snapshot_max_file_mb") or 10) * 1024 * 1024
        # issue #18: the data files a run of a remote workspace (docker volume, Nomad) gets, in all
        self.run_data_max_bytes = int(settings.get("run_data_max_mb", 100)) * 1024 * 1024
        self.warm_idle_s = float(settings.get("warm_runner_idle_s", 600))
        self.active: dict[str, Run] = {}  # running runs by id
        self.states: dict[str, State] = {}  # the backend's state of each active run, once submitted
        self.watchers: dict[str, asyncio.Task[None]] = {}
        self.cancel_requested: set[str] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def root(self) -> Path:
        return experiments_root(self.agent)

    @property
    def backend(self) -> RunBackend:
        """The runtime's run backend (NotSupported when it has none)."""
        return capability(self.agent.runtime, RunBackend)

    def run_dir(self, experiment_id: str, run_id: str) -> Path:
        return self.root / experiment_id / "runs" / run_id

    def snapshot_location(self) -> tuple[str, str, Path]:
        """Where runs read their snapshots; NotSupported (naming the setting) when nowhere."""
        runtime = self.agent.runtime
        location = self.backend.run_snapshot_location(self.root)
        if location is None:
            raise NotSupported(
                f"runs on the {runtime.name} runtime need a snapshot volume, and none is configured",
                f"set {runtime.name}.snapshot_volume (a host or CSI volume every client mounts) and "
                f"{runtime.name}.snapshot_dir (where the agent writes into it) in agent.yaml; see docs/nomad.md",
            )
        return location

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

    # issue #18, live updates: every change of a run's record is written here and published.
    async def _save(self, run: Run) -> None:
        """Write the run's record and tell subscribers (``agent.live``)."""
        await self.agent.store.run(update_run, run)
        self.publish(run)

    def publish(self, run: Run) -> None:
        """A ``run`` event: where the run stands, for ``ml status --watch`` and other subscribers."""
        self.agent.live.publish("run", run.id, {
            "id": run.id, "workspace": run.workspace, "experiment": run.experiment_id, "user": run.user,
            "status": run.status, "message": run.message, "exit_code": run.exit_code,
            "peak_memory_bytes": run.peak_memory_bytes, "finished_at": run.finished_at,
        }, workspace_id=run.workspace_id, user=run.user)

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
            self.states.pop(run.id, None)
            self._release(run)

    def _workspace(self, workspace_id: str) -> Workspace | None:
        return next((ws for ws in self.agent.workspaces.values() if ws.id == workspace_id), None)

    async def _schedule(self) -> None:
        queued = await self.agent.store.run(runs_by_status, "queued")
        if self.agent.runtime.capabilities.schedules_runs:
            for run in queued:  # the backend's scheduler places them (or keeps them until capacity frees)
                await self._launch(run, ())
            return
        cpu_busy = sum(1 for r in self.active.values() if r.gpus == 0)
        gpu_blocked = False
        gpus = self.agent.runtime.gpus
        for run in queued:
            if run.gpus == 0:
                if cpu_busy >= self.cpu_workers:
                    continue
                cpu_busy += 1
                await self._launch(run, ())
                continue
            if gpu_blocked:
                continue  # GPU runs start in the order they were queued
            # One GPU per run, exclusively; a run may use the GPUs its own workspace holds.
            ids = None if gpus is None else gpus.try_claim(
                run_holder(run.id), run.gpus, share_with=workspace_holder(run.workspace_id))
            if ids is None:
                gpu_blocked = True
                continue
            await self._launch(run, ids)

    # -- launching --------------------------------------------------------------------------------

    def _run_spec(self, ws: Workspace, run: Run, snapshot_path: Path, gpu_ids: tuple[int, ...]) -> RunSpec:
        """What the backend gets: the workspace's image, CPU and memory, the run's GPUs, parameters,
        timeout (7 days when none) and retries, the workspace's environment (the agent's own
        ``FETCHML_``/Jupyter variables are the run's), and the workspace itself for a backend that
        runs it in the workspace's environment."""
        volume, volume_type, _ = self.snapshot_location()
        ws_spec = self.agent.workspace_spec(ws, gpu_ids)
        env = {k: v for k, v in self.agent.workspace_spec(ws).env.items()
               if not k.startswith("FETCHML_") and k not in ("JUPYTER_TOKEN", "JUPYTER_CONFIG_PATH")}
        return RunSpec(
            run_id=run.id,
            workspace=ws.name,
            notebook=run.target,
            kind=run.kind,
            kernel=(run.config or {}).get("kernel"),
            language=(run.config or {}).get("language"),
            owner=run.user,
            experiment_id=run.experiment_id,
            image=ws.image,
            snapshot_volume=volume,
            snapshot_volume_type=volume_type,
            snapshot_path=snapshot_path.as_posix(),
            parameters=run.parameters,
            timeout=float(run.timeout_s or 7 * 86400),
            retries=run.retries,
            resources=dataclasses.replace(Resources.from_dict(ws.resources), gpu=run.gpus),
            env=env,
            gpu_ids=gpu_ids,
            run_dir=run.run_dir,
            workspace_spec=ws_spec,
            workspace_state=ws.runtime_state,
            warm_runner_idle_s=self.warm_idle_s,
        )

    async def _launch(self, run: Run, gpu_ids: tuple[int, ...]) -> None:
        """Claim ``run``, publish its snapshot, submit it to the backend and follow it."""
        store = self.agent.store
        ws = self._workspace(run.workspace_id)
        now = time.time()
        if not await store.run(claim_run, run.id, "running", now):
            self._release(run)
            return  # cancelled while we looked
        run.status, run.started_at, run.message, run.gpu_indexes = "running", now, "starting", list(gpu_ids)
        self.active[run.id] = run
        if ws is None:
            await self._record(run, {"status": "failed", "message": "its workspace was deleted before the run started"})
            return
        await self._save(run)
        backend = self.backend
        run_dir = Path(run.run_dir)
        try:
            snap_root = self.snapshot_location()[2]
            rel, copied = await run_blocking(publish_snapshot, snap_root, run_dir, run.id)
            spec = self._run_spec(ws, run, rel, gpu_ids)
            # Written before submitting, so that an agent killed meanwhile finds the run to adopt.
            pending = {"job_id": backend.run_job_id(run.id), "run_id": run.id, "run_dir": run.run_dir,
                       "submitted_at": time.time(), "timeout": spec.timeout, "snapshot_path": str(rel),
                       "snapshot_copy": copied}
            await run_blocking(write_json, run_dir / STATE_FILE, pending)
            state = {**pending, **await backend.submit_run(spec)}
        except FetchmlError as exc:
            await self._record(run, {"status": "failed",
                                     "message": f"the {self.agent.runtime.name} runtime did not start the run: {exc.message}",
                                     "error": {"ename": type(exc).__name__, "evalue": exc.message, "cell": None}})
            await run_blocking(unpublish_snapshot, self.snapshot_location()[2], read_json(run_dir / STATE_FILE) or {})
            return
        await run_blocking(write_json, run_dir / STATE_FILE, state)
        self.states[run.id] = state
        run.message = f"waiting for capacity: {state['waiting']}" if state.get("waiting") else ""
        if state.get("pid"):
            run.pid, run.pid_start = int(state["pid"]), state.get("start_time")
        await self._save(run)
        await self.agent.audit(run.user, "run.start", run.workspace, run=run.id, experiment=run.experiment_id,
                               **_run_ref(state),
                               gpus=list(gpu_ids) if self.agent.runtime.gpus is not None else run.gpus)
        self._follow(run, state)

    # -- following --------------------------------------------------------------------------------

    def _follow(self, run: Run, state: State) -> None:
        self.states[run.id] = state
        self.watchers[run.id] = asyncio.create_task(self._follow_one(run, state), name=f"run-{run.id}")

    async def _follow_one(self, run: Run, state: State) -> None:
        """Follow a run to its end; then fetch its results, record it, and have the backend forget it."""
        backend = self.backend
        try:
            status = await self._until_done(run, state)
            fetched = None
            try:
                await backend.fetch_run_outputs(state, Path(run.run_dir))
            except FetchmlError as exc:
                fetched = exc.message
            result = status.result
            if result is None:
                result = result_from_status(run, status, run.id in self.cancel_requested, fetched)
            await self._record(run, result)
            try:
                await backend.purge_run(state)
            except FetchmlError as exc:
                log.warning("could not remove the job of run %s: %s", run.id, exc.message)
            await run_blocking(unpublish_snapshot, self.snapshot_location()[2], state)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Free its worker slot; the record still says running, and the next start adopts it.
            log.exception("following run %s failed", run.id)
            self._deactivate(run)
            self.kick()
        finally:
            self.watchers.pop(run.id, None)

    async def _until_done(self, run: Run, state: State) -> RunStatus:
        """The run's first status that is neither queued nor running; while it waits, its message
        says why (and that the backend is being retried when it cannot be reached)."""
        backend = self.backend
        index = 0
        while True:
            try:
                status = await backend.run_status(state)
                if status.state not in ("queued", "running"):
                    return status
                message = "" if status.state == "running" else f"waiting: {status.message}"
                if message != run.message:
                    run.message = message
                    await self._save(run)
                left = float(state.get("timeout") or 1e12) - (time.time() - float(state.get("submitted_at") or 0))
                index = await backend.wait_run(state, index, min(_FOLLOW_WAIT_S, max(1.0, left + 0.5)))
            except FetchmlError as exc:  # the backend unreachable for a while: keep following
                if run.message != f"following it failed: {exc.message}; retrying":
                    run.message = f"following it failed: {exc.message}; retrying"
                    await self._save(run)
                index = 0
                await asyncio.sleep(_RETRY_S)

    async def _record(self, run: Run, result: dict[str, Any]) -> None:
        """Record the finished run from its result document: metrics, outputs; sync the results
        into the workspace; then its final status."""
        active = run
        run = dataclasses.replace(run)  # readers see the running record until the final one is stored
        run_dir = Path(run.run_dir)
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
        metrics = await run_blocking(read_metrics, run_dir / "metrics.jsonl")
        outputs_dir = run_dir / "work" / "outputs"
        run.outputs = await run_blocking(list_outputs, outputs_dir) if outputs_dir.is_dir() else []
        await self.agent.store.run(insert_metrics, run.id, metrics)
        await run_blocking(write_results, run, run_view(run), metrics)
        sync_note: dict[str, Any] = {}
        ws = self._workspace(run.workspace_id)
        if ws is not None:
            try:
                done = await auto_sync(self.agent, ws, run)
                sync_note = {"synced": len(done["copied"]), "conflicts": len(done["conflicts"])}
            except Exception as exc:  # the run's outcome is recorded whatever the sync did
                log.exception("syncing the results of %s into %s failed", run.id, ws.name)
                sync_note = {"sync_error": str(exc)}
        await self._save(run)
        self._deactivate(active)
        self.cancel_requested.discard(run.id)
        outcome_word = {"succeeded": "ok", "cancelled": "cancelled"}.get(run.status, "error")
        await self.agent.audit("agent", "run.finish", run.workspace, outcome_word, run=run.id, status=run.status,
                               message=run.message, duration_s=run.duration_s, **sync_note)
        for hook in self.finished_hooks:
            try:
                await hook(run)
            except Exception:
                log.exception("run_finished hook failed for %s", run.id)
        self.kick()

    # -- cancel ---------------------------------------------------------------------------------

    async def cancel(self, run_id: str) -> Run:
        """Cancel a queued run at once, or stop a running one through its backend (the local
        runner gets SIGTERM, kills the notebook's processes and records ``cancelled``; SIGKILL to
        its tree after ``cancel_grace``)."""
        store = self.agent.store
        run = await store.run(get_run, run_id)
        if run is None:
            raise NotFound(f"no run {run_id!r}", "`ml status` lists the runs you can see")
        if run.status == "queued" and await store.run(claim_run, run_id, "cancelled"):
            run.status, run.message, run.finished_at = "cancelled", "cancelled before it started", time.time()
            await self._save(run)
            self.kick()
            return run
        active = self.active.get(run_id)
        if active is None:
            run = await store.run(get_run, run_id) or run
            raise InvalidState(f"run {run_id} has already {run.status}" if run.status != "running" else f"run {run_id} is not watched by this agent")
        self.cancel_requested.add(run_id)
        deadline = time.monotonic() + _CANCEL_SUBMIT_WAIT_S
        while run_id not in self.states and self.active.get(run_id) is active and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # it is being submitted right now
        state = self.states.get(run_id) or await run_blocking(read_json, Path(active.run_dir) / STATE_FILE)
        if state:
            await self.backend.cancel_run(state, self.cancel_grace)
        watcher = self.watchers.get(run_id)
        if watcher is not None:
            await asyncio.wait({watcher}, timeout=self.cancel_grace + _FOLLOW_WAIT_S)
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
        """Follow again what ran when the agent stopped (see the module docstring)."""
        gpus = self.agent.runtime.gpus
        for run in await self.agent.store.run(runs_by_status, "running"):
            self.active[run.id] = run
            if gpus is not None and run.gpu_indexes:
                with contextlib.suppress(FetchmlError):  # a GPU the host lost meanwhile is not held
                    gpus.hold(run_holder(run.id), run.gpu_indexes, what=f"run {run.id}")
            stored = read_json(Path(run.run_dir) / STATE_FILE)
            try:
                state = await self.backend.recover_run(stored) if stored else None
            except FetchmlError as exc:
                await self._record(run, {"status": "failed", "message": f"the run could not be adopted: {exc.message}"})
                continue
            if state is None:
                await self._record(run, {"status": "failed", "message": _NEVER_STARTED})
                continue
            if state.get("pid"):
                run.pid, run.pid_start = state["pid"], state.get("start_time")
            if run.message:
                run.message = ""
                await self._save(run)
            await self.agent.audit("agent", "run.adopt", run.workspace, run=run.id, **_run_ref(state))
            self._follow(run, state)
