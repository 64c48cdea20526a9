"""Experiment runs as Nomad batch jobs: submit, follow, fetch the outputs, cancel, purge."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from ...errors import (
    BackendError,
    FetchmlError,
    NotFound,
)
from ...nomad.render import (
    run_job_id,
)
from ..base import (
    RUN_ENVIRONMENT_REPORT,
    RUN_LOCK,
    RUN_LOCK_DIR,
    Progress,
    RunSpec,
    RunState,
    RunStatus,
    State,
)
from .common import (
    _MAX_OUTPUT_BYTES,
    RUN_TASK,
    NomadBase,
    _current_alloc,
    _no_progress,
    _task_cause,
    placement_cause,
)
from .follow import NotLive


class RunsMixin(NomadBase):
    """The nomad runtime's run backend: each run a batch job."""

    rebuilds_environment = True  # runs start from the image: the launcher installs the workspace's lock

    def run_job_id(self, run_id: str) -> str:
        """The Nomad job ID a run gets (known before it is submitted)."""
        return run_job_id(self.settings, run_id)

    def run_snapshot_location(self, experiments_root: Path) -> tuple[str, str, Path] | None:
        """Where runs read their snapshots: ``(volume, type, its root on the agent's host)`` from
        ``snapshot_volume`` and ``snapshot_dir`` (default: the agent's experiments directory);
        ``None`` when no snapshot volume is configured."""
        vol = self.settings.snapshot_volume
        if vol is None:
            return None
        return vol.source, vol.type, Path(self.settings.snapshot_dir or experiments_root)

    async def submit_run(self, spec: RunSpec, progress: Progress | None = None) -> State:
        """Submit an experiment run as a batch job and return once Nomad has evaluated it.

        Contract: validates and renders the ``experiment-run`` job (the same refusals as
        workspaces), registers it, and waits for its evaluation only (not for the run). When
        every node that could run it is busy (Nomad's ``NodesExhausted``), the job stays and
        Nomad's blocked evaluation places it once capacity frees: the state then carries
        ``"waiting"`` (why). When no node could ever run it (no node with that many GPUs, a
        volume no node has) it raises :class:`InsufficientResources` and the job is purged, so
        nothing stays queued in Nomad. :class:`InvalidArgument`/:class:`PolicyDenied` for bad
        input. Returns the run state to persist: ``{"job_id", "eval_id", "run_id", "namespace",
        "submitted_at" (epoch s), "timeout" (s), "waiting"}``; pass it to :meth:`run_status`,
        :meth:`wait_run`, :meth:`fetch_run_outputs` and :meth:`cancel_run`.
        """
        progress = progress or _no_progress
        job = self.renderer.run(spec, await self._gpu_type_names() if spec.resources.gpu and spec.resources.gpu_type else None)
        job_id = job["Job"]["ID"]
        eval_id, eval_index = await self._register(job)
        try:
            await progress("placing")
            ev = await self._wait_evaluation(
                eval_id, time.monotonic() + self.settings.start_timeout, f"run {spec.run_id}", eval_index,
                blocked_ok=True, job=job["Job"],
            )
        except BaseException:
            await asyncio.shield(self._cleanup(job_id))
            raise
        waiting = placement_cause(ev["FailedTGAllocs"]) if ev.get("FailedTGAllocs") else ""
        if waiting:
            await progress(f"waiting for capacity: {waiting}")
        return {
            "job_id": job_id,
            "eval_id": eval_id,
            "run_id": spec.run_id,
            "namespace": self.settings.namespace,
            "submitted_at": time.time(),
            "timeout": float(spec.timeout),
            "waiting": waiting,
        }

    async def wait_run(self, state: State, index: int, wait: float) -> int:
        """Block until the run's job changes (or ``wait`` seconds pass); return the index to pass
        next time (0 the first time: returns at once). While the agent follows Nomad
        (:meth:`follow_status`) the wake-up comes from that feed, with no request of its own;
        otherwise a blocking query on the job's allocations."""
        if state.get("sampling"):  # a running run: wake in time for the next memory sample
            wait = min(wait, self.settings.run_stats_interval)
        follower = self._follower
        if follower is not None:
            try:
                return int(await follower.wait_job(state["job_id"], index, wait))
            except NotLive:
                pass
        _, new_index = await self.client.job_allocations(state["job_id"], index or None, wait if index else None)
        return int(new_index or 0)

    async def run_status(self, state: State) -> RunStatus:
        """Where a run stands (two Nomad reads).

        ``queued`` until its allocation runs, ``running``, then ``succeeded`` (papermill exited 0)
        or ``failed`` (with the task's last event, e.g. ``Exit Code: 1``). A run past its
        ``timeout`` is stopped here and reported ``timed_out``; a run stopped otherwise is
        ``cancelled``; a job Nomad no longer has (purged, garbage-collected) is ``missing``.
        While it runs, each call samples the allocation's memory (:meth:`_sample_memory`); the
        status carries the peak seen.
        """
        status = await self._run_status(state)
        if status.state == "running" and status.alloc_id:
            await self._sample_memory(state, status.alloc_id)
            await self._environment_report(state, status.alloc_id)
        state["sampling"] = status.state == "running"
        peak = state.get("peak_memory_bytes")
        return dataclasses.replace(status, peak_memory_bytes=int(peak) if peak else None)

    async def _sample_memory(self, state: State, alloc_id: str) -> None:
        """Keep in ``state["peak_memory_bytes"]`` the most memory the run's allocation was seen
        using (Nomad's allocation stats: the cgroup's ``MaxUsage`` where measured, its RSS or
        ``Usage`` otherwise). Nomad keeps no stats of a finished allocation, so the peak is the
        highest of the samples :meth:`wait_run` wakes for, every ``nomad.run_stats_interval`` seconds; a
        failed read skips one sample."""
        try:
            raw = await self.client.allocation_stats(alloc_id)
        except FetchmlError:
            return
        mem = (raw.get("ResourceUsage") or {}).get("MemoryStats") or {}
        seen = max(int(mem.get("MaxUsage") or 0), int(mem.get("RSS") or 0) or int(mem.get("Usage") or 0))
        if seen > int(state.get("peak_memory_bytes") or 0):
            state["peak_memory_bytes"] = seen

    async def _environment_report(self, state: State, alloc_id: str) -> None:
        """While a run with a package lock runs, bring its environment step's report into the
        run's directory as soon as the step wrote it (``ml status`` shows it then, not only once
        the results are fetched); one read per sample until it is there."""
        run_dir = state.get("run_dir")
        if state.get("environment_reported") or not run_dir:
            return
        if not Path(run_dir, "work", RUN_LOCK_DIR, RUN_LOCK).is_file():
            state["environment_reported"] = True  # nothing to install: nothing to report
            return
        try:
            data = await self.client.read_file(alloc_id, f"alloc/data/{RUN_ENVIRONMENT_REPORT}")
        except FetchmlError:
            return  # not written yet
        await asyncio.to_thread(Path(run_dir, RUN_ENVIRONMENT_REPORT).write_bytes, data)
        state["environment_reported"] = True

    async def _run_status(self, state: State) -> RunStatus:
        job_id = state["job_id"]
        job = await self.client.find_job(job_id)
        if job is None:
            return RunStatus("missing", f"Nomad has no job {job_id}")
        allocs, _ = await self.client.job_allocations(job_id)
        alloc = _current_alloc(allocs)
        overdue = time.time() - float(state.get("submitted_at") or 0) > float(state.get("timeout") or 1e12)
        if alloc is not None:
            client_status = alloc.get("ClientStatus")
            exit_code = self._exit_code(alloc)
            if client_status == "complete" and exit_code == 0:
                return RunStatus("succeeded", "papermill finished", alloc["ID"], 0)
            if client_status in ("failed", "lost"):
                return RunStatus("failed", _task_cause(alloc, RUN_TASK), alloc["ID"], exit_code)
        if job.get("Stop"):
            state_name: RunState = "timed_out" if overdue else "cancelled"
            return RunStatus(state_name, f"Nomad job {job_id} was stopped", (alloc or {}).get("ID"))
        if alloc is None or alloc.get("ClientStatus") == "pending":
            return RunStatus(
                "queued",
                _task_cause(alloc, RUN_TASK) if alloc else "waiting for placement",
                (alloc or {}).get("ID"),
            )
        if overdue:
            await self.client.deregister_job(job_id)
            return RunStatus(
                "timed_out", f"the run exceeded its timeout of {state.get('timeout'):g} s", alloc["ID"]
            )
        return RunStatus("running", "", alloc["ID"])

    @staticmethod
    def _exit_code(alloc: Mapping[str, Any]) -> int | None:
        events = ((alloc.get("TaskStates") or {}).get(RUN_TASK) or {}).get("Events") or []
        for event in reversed(events):
            if event.get("Type") == "Terminated":
                details = event.get("Details") or {}
                try:
                    return int(details.get("exit_code", event.get("ExitCode", 0)))
                except (TypeError, ValueError):
                    return int(event.get("ExitCode") or 0)
        return None

    async def fetch_run_outputs(self, state: State, dest: Path) -> list[str]:
        """Copy the run's ``alloc/data`` tree (``output.ipynb``, ``metrics.jsonl``, files the run
        wrote to ``work/outputs/``) into ``dest`` through the allocation filesystem API.

        Returns the relative paths written. Raises :class:`NotFound` when the run has no
        allocation (never placed, or garbage-collected by Nomad), :class:`BackendError` when the
        outputs exceed 1 GiB.
        """
        allocs, _ = await self.client.job_allocations(state["job_id"])
        alloc = _current_alloc(allocs)
        if alloc is None:
            raise NotFound(
                f"run {state.get('run_id')} has no allocation in Nomad (never placed or garbage-collected)"
            )
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        written: list[str] = []
        total = 0
        pending = [PurePosixPath("alloc/data")]
        while pending:
            directory = pending.pop()
            for entry in await self.client.list_files(alloc["ID"], str(directory)):
                name = str(entry.get("Name") or "")
                if not name or "/" in name or name in (".", ".."):
                    continue
                path = directory / name
                rel = path.relative_to("alloc/data")
                if entry.get("IsDir"):
                    pending.append(path)
                    continue
                total += int(entry.get("Size") or 0)
                if total > _MAX_OUTPUT_BYTES:
                    raise BackendError(
                        f"run outputs exceed {_MAX_OUTPUT_BYTES >> 20} MiB; fetch them with `nomad alloc fs`"
                    )
                data = await self.client.read_file(alloc["ID"], str(path))
                target = (root / rel).resolve()
                if root not in target.parents:
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                written.append(str(rel))
        return sorted(written)

    async def cancel_run(self, state: State, grace: float = 5.0) -> None:
        """Stop a run's job (its task's KillTimeout applies; its outputs stay readable until Nomad
        garbage-collects it)."""
        await self.client.deregister_job(state["job_id"])

    async def purge_run(self, state: State) -> None:
        """Forget a run's job in Nomad (after its outputs were fetched)."""
        await self.client.deregister_job(state["job_id"], purge=True)
