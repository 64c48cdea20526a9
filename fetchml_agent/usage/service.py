"""The usage history: a sampler of every running workspace, and the events that matter.

Every ``usage.interval`` the agent asks the runtime for each running workspace's use
(:meth:`~fetchml_agent.runtimes.base.Runtime.stats`, at most 16 at a time), turns the runtime's
own keys into one :class:`~fetchml_agent.store.usage.Sample` (CPU in cores, memory and its peak
and limit in bytes, GPU utilization and memory, disk, processes, kernels and busy kernels), and
stores the sweep in one transaction. GPUs the agent assigns itself are read with one
``nvidia-smi`` per sweep; disk use is measured every ``usage.disk_interval`` where the files are on
this host. Every five minutes the samples are rolled up (:func:`~fetchml_agent.store.usage.rollup`).

Events (``usage_events``): ``oom_kill`` (the workload's OOM-kill counter went up: cgroup
``memory.events`` or the container's state), ``restart`` (by a person: restart, reset; or by the
backend itself), ``crash`` (a running workspace was found dead), ``cull`` (idle kernels shut down
by ``optimize --apply``), ``limit_change`` (``scale``), ``start`` and ``stop``. Those people cause
come from the audit log (:meth:`Usage.on_audit`), the others from the sampler. The same listener
keeps the audit and policy counters of ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import httpx

from .. import procs
from ..aio import run_blocking
from ..errors import FetchmlError
from ..experiments.records import Run
from ..gpus import gpu_use
from ..metrics import Metrics
from ..service.calls import Call
from ..service.context import AgentContext
from ..store.usage import (
    Sample,
    events_of,
    forget_workspace_usage,
    insert_events,
    insert_samples,
    last_event,
    rollup,
)
from ..store.workspaces import Workspace
from .config import UsageSettings

__all__ = ["EVENT_KINDS", "Usage"]

log = logging.getLogger("fetchml.usage")

EVENT_KINDS = ("oom_kill", "restart", "crash", "cull", "limit_change", "start", "stop")
ROLLUP_EVERY = 300.0
_CONCURRENCY = 16
_STATS_TIMEOUT = 15.0
_DISK_FILES_MAX = 200_000
_MIB = 1024 * 1024
#: Samples of each running workspace kept in memory for the home page's small charts.
RECENT = 60

# Audit actions that become usage events: action -> (kind, details taken from the event).
_FROM_AUDIT = {
    "workspace.create": "start",
    "workspace.start": "start",
    "workspace.stop": "stop",
    "workspace.restart": "restart",
    "workspace.reset": "restart",
    "workspace.scale": "limit_change",
    "workspace.lost": "crash",
}


@dataclass
class _Prev:
    """What the last sample of one workload left behind (rates and counters need it)."""

    workload: str
    t: float = 0.0
    cpu_seconds: float | None = None
    oom: int = 0
    restarts: int | None = None
    disk_at: float = 0.0
    disk: float | None = None
    kernel_states: dict[str, int] = field(default_factory=dict)


def _workload(state: dict[str, Any]) -> str:
    """A short name of one workload (a pid and start time, a container, an allocation)."""
    return hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _disk_bytes(path: str) -> float | None:
    """Bytes allocated under ``path`` (not following links), counting at most 200,000 entries."""
    total = count = 0
    todo = [path]
    while todo:
        try:
            with os.scandir(todo.pop()) as it:
                for entry in it:
                    count += 1
                    if count > _DISK_FILES_MAX:
                        return float(total)
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += st.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        todo.append(entry.path)
        except OSError:
            continue
    return float(total)


class Usage:
    """One per agent (``agent.services.usage``); see the module docstring."""

    def __init__(self, agent: AgentContext, metrics: Metrics) -> None:
        self.agent = agent
        self.metrics = metrics
        self.settings = UsageSettings.from_section(agent.config.raw.get("usage"))
        self._latest: dict[str, dict[str, Any]] = {}  # workspace id -> its last sample, as shown
        # workspace id -> its last RECENT (ts, cpu cores, memory bytes): the home page's charts
        self._recent: dict[str, deque[tuple[float, float | None, float | None]]] = {}
        self._prev: dict[str, _Prev] = {}
        self.gpu_use: dict[int, dict[str, Any]] = {}  # host GPU index -> {utilization_percent, memory_used_mib}
        self.runs: dict[str, int] = {}  # run status -> count (queued, running), refreshed every sweep
        self.sessions_open = 0
        self.last_sweep: dict[str, Any] = {}
        self._last_rollup = 0.0
        self._task: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Task[Any]] = set()
        self._slots = asyncio.Semaphore(_CONCURRENCY)
        self._http: httpx.AsyncClient | None = None

    # -- what others read ---------------------------------------------------------------------

    def latest(self, workspace_id: str) -> dict[str, Any] | None:
        """The workspace's last sample (``None`` when it has none since the agent started)."""
        return self._latest.get(workspace_id)

    def all_latest(self) -> dict[str, dict[str, Any]]:
        return self._latest

    def recent(self, workspace_id: str) -> list[tuple[float, float | None, float | None]]:
        """The workspace's last samples (at most :data:`RECENT`) as ``(ts, cpu cores, memory bytes)``,
        oldest first, from memory: what the home page draws without asking the store."""
        return list(self._recent.get(workspace_id, ()))

    # -- lifecycle (agent hooks) ----------------------------------------------------------------

    async def start(self, agent: AgentContext) -> None:
        if self.settings.interval:
            self._task = asyncio.create_task(self._loop(self.settings.interval), name="usage-sampler")

    async def stop(self, agent: AgentContext) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()

    async def forget(self, agent: AgentContext, call: Call, ws: Workspace) -> None:
        """Delete hook: the workspace's history goes with it."""
        self._latest.pop(ws.id, None)
        self._recent.pop(ws.id, None)
        self._prev.pop(ws.id, None)
        await agent.store.run(forget_workspace_usage, ws.id)

    async def status_section(self, agent: AgentContext, call: Call) -> dict[str, Any]:
        """``ml status``: the sampler's settings and its last sweep."""
        return {"usage": {"interval_s": self.settings.interval, "last_sweep": self.last_sweep}}

    async def _loop(self, interval: float) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.sweep()
            except Exception:  # the sampler outlives a backend or store hiccup
                log.exception("usage sweep failed")
            await asyncio.sleep(max(1.0, interval - (time.monotonic() - started)))

    # -- sampling -------------------------------------------------------------------------------

    async def sweep(self, now: float | None = None) -> list[Sample]:
        """Sample every running workspace once and store the samples and events."""
        timer = time.perf_counter()
        now = time.time() if now is None else now
        agent = self.agent
        running = [ws for ws in agent.workspaces.values() if ws.status == "running" and ws.runtime_state]
        gpus = agent.runtime.gpus
        if gpus is not None and gpus.capacity > 0 and any(ws.runtime_state.get("gpu_indexes") for ws in running
                                                          if ws.runtime_state):
            self.gpu_use = {g["index"]: g for g in await run_blocking(gpu_use)}
        with procs.one_table():  # the local runtime's process trees: one read of /proc per sweep
            results = await asyncio.gather(*(self._sample_one(ws, now) for ws in running))
        samples = [s for s, _ in results if s is not None]
        events = [e for _, evs in results for e in evs]
        events.extend(self._gone({ws.id for ws in running}, now))
        await agent.store.run(insert_samples, samples)
        if events:
            await agent.store.run(insert_events, events)
            for e in events:
                self.metrics.workspace_events.labels(e[3]).inc()
        if now - self._last_rollup >= ROLLUP_EVERY:
            self._last_rollup = now
            await agent.store.run(rollup, now, self.settings.keep_raw, self.settings.keep_5m)
        self.runs, self.sessions_open = await agent.store.run(_counts)
        seconds = time.perf_counter() - timer
        self.metrics.sweep.observe(seconds)
        self.metrics.samples.labels("ok").inc(len(samples))
        self.last_sweep = {"at": now, "workspaces": len(running), "samples": len(samples), "events": len(events),
                           "seconds": round(seconds, 4)}
        return samples

    def _gone(self, running: set[str], now: float) -> list[tuple[str, str, float, str, dict[str, Any]]]:
        """Workspaces sampled last time and not running now: a crash unless someone stopped them."""
        out = []
        by_id = {ws.id: ws for ws in self.agent.workspaces.values()}
        for wid in [w for w in self._prev if w not in running]:
            self._prev.pop(wid, None)
            self._latest.pop(wid, None)
            self._recent.pop(wid, None)
            ws = by_id.get(wid)
            if ws is not None and ws.status in ("failed", "missing"):
                out.append((ws.id, ws.name, now, "crash", {"status": ws.status, "message": ws.status_message[:500]}))
        return out

    async def _sample_one(self, ws: Workspace, now: float) -> tuple[Sample | None, list[tuple[str, str, float, str, dict[str, Any]]]]:
        state = ws.runtime_state or {}
        async with self._slots:
            try:
                stats = await asyncio.wait_for(self.agent.runtime.stats(state), _STATS_TIMEOUT)
            except (FetchmlError, TimeoutError, OSError) as exc:
                log.debug("no sample of %s: %s", ws.name, exc)
                self.metrics.samples.labels("error").inc()
                return None, []
            if stats.get("running") is False:
                return None, []
            workload = _workload(state)
            prev = self._prev.get(ws.id)
            if prev is None or prev.workload != workload:
                prev = self._prev[ws.id] = _Prev(workload, oom=await self._recorded_oom(ws, workload))
            kernels = await self._kernels(ws) if self.settings.kernels else None
            disk = await self._disk(ws, stats, prev, now)
        sample, events = self._normalize(ws, stats, prev, now, kernels, disk)
        prev.t = now
        self._latest[ws.id] = {"ts": now, **sample.values(), "kernel_states": kernels or {},
                               "oom_kills": prev.oom}
        self._recent.setdefault(ws.id, deque(maxlen=RECENT)).append((now, sample.cpu_cores, sample.memory_bytes))
        return sample, events

    def _normalize(self, ws: Workspace, stats: dict[str, Any], prev: _Prev, now: float,
                   kernels: dict[str, int] | None, disk: float | None) -> tuple[Sample, list[Any]]:
        resources = ws.resources or {}
        cores: float | None = None
        if stats.get("cpu_percent") is not None:
            cores = float(stats["cpu_percent"]) / 100.0
        elif stats.get("cpu_seconds") is not None:
            seconds = float(stats["cpu_seconds"])
            if prev.cpu_seconds is not None and now > prev.t:
                cores = max(0.0, seconds - prev.cpu_seconds) / (now - prev.t)
            prev.cpu_seconds = seconds
        memory = stats.get("memory_bytes")
        if memory is None and stats.get("memory_mb") is not None:
            memory = float(stats["memory_mb"]) * _MIB
        limit = resources.get("memory_mb") or stats.get("memory_limit_mb")
        gpu_util, gpu_mem = self._gpu(ws, stats)
        sample = Sample(
            ws.id, now, cpu_cores=cores, cpu_limit_cores=resources.get("cpu"),
            memory_bytes=float(memory) if memory is not None else None,
            memory_peak_bytes=float(stats.get("memory_peak_bytes") or memory) if memory is not None else None,
            memory_limit_bytes=float(limit) * _MIB if limit else None,
            gpu_utilization=gpu_util, gpu_memory_bytes=gpu_mem, disk_bytes=disk,
            processes=stats.get("processes", stats.get("pids")),
            kernels=float(sum(kernels.values())) if kernels is not None else None,
            busy_kernels=float(kernels.get("busy", 0)) if kernels is not None else None,
        )
        events: list[Any] = []
        oom = stats.get("oom_kills")
        restarts = stats.get("restarts")
        if isinstance(oom, int) and oom > prev.oom:
            events.append((ws.id, ws.name, now, "oom_kill", {
                "count": oom - prev.oom, "total": oom, "workload": prev.workload, "memory_bytes": sample.memory_bytes,
                "memory_limit_bytes": sample.memory_limit_bytes}))
            prev.oom = oom
        if isinstance(restarts, int):
            if prev.restarts is not None and restarts > prev.restarts:
                events.append((ws.id, ws.name, now, "restart", {"by": "runtime", "count": restarts - prev.restarts,
                                                                "oom_killed": bool(stats.get("oom_killed"))}))
                if stats.get("oom_killed") and not isinstance(oom, int):
                    events.append((ws.id, ws.name, now, "oom_kill", {"count": 1, "source": "container state"}))
            prev.restarts = restarts
        return sample, events

    def _gpu(self, ws: Workspace, stats: dict[str, Any]) -> tuple[float | None, float | None]:
        """Mean utilization (0..1) and memory in use (bytes) of the workspace's GPUs."""
        devices = stats.get("gpus")
        if not devices:
            indexes = (ws.runtime_state or {}).get("gpu_indexes") or []
            devices = [self.gpu_use[i] for i in indexes if i in self.gpu_use]
            mem_key = "memory_used_mib"
        else:
            mem_key = "memory_used_mb"
        utils = [float(d["utilization_percent"]) for d in devices if d.get("utilization_percent") is not None]
        mems = [float(d[mem_key]) for d in devices if d.get(mem_key) is not None]
        return (sum(utils) / len(utils) / 100.0 if utils else None), (sum(mems) * _MIB if mems else None)

    async def _disk(self, ws: Workspace, stats: dict[str, Any], prev: _Prev, now: float) -> float | None:
        if stats.get("disk_bytes") is not None:
            return float(stats["disk_bytes"])
        every = self.settings.disk_interval
        if every is None or not self.agent.runtime.capabilities.host_files:
            return None
        if prev.disk is None or now - prev.disk_at >= every:
            prev.disk, prev.disk_at = await run_blocking(_disk_bytes, ws.path), now
        return prev.disk

    async def _kernels(self, ws: Workspace) -> dict[str, int] | None:
        """The workspace's kernels by execution state, asked of its JupyterLab (the server's own
        credential may list kernels); ``None`` when it cannot be asked."""
        if not ws.url or ws.password_hash:
            return None
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=3.0, trust_env=False)
        try:
            r = await self._http.get(ws.url + "api/kernels", headers={"Authorization": f"token {ws.token}"})
            if r.status_code != 200:
                return None
            states: dict[str, int] = {}
            for k in r.json():
                state = str(k.get("execution_state") or "unknown")
                states[state] = states.get(state, 0) + 1
            return states
        except (httpx.HTTPError, ValueError, AttributeError):
            return None

    async def _recorded_oom(self, ws: Workspace, workload: str) -> int:
        """The OOM-kill total already recorded for this workload (after an agent restart)."""
        last = await self.agent.store.run(last_event, ws.id, "oom_kill")
        if last and last["details"].get("workload") == workload and isinstance(last["details"].get("total"), int):
            return int(last["details"]["total"])
        return 0

    # -- events from the audit log ----------------------------------------------------------------

    def on_audit(self, event: dict[str, Any]) -> None:
        """Audit listener: counters of /metrics, and the events people cause."""
        m = self.metrics
        action, outcome, details = event.get("action", ""), event.get("outcome", ""), event.get("details") or {}
        m.audit_events.labels(outcome or "ok").inc()
        if isinstance(event.get("id"), int):
            m.audit_last_id.set(event["id"])
        if action in ("package.decision", "package.index"):
            m.policy_decisions.labels(str(details.get("decision") or outcome), str(details.get("rule") or ""),
                                      str(details.get("via") or ("index" if action == "package.index" else ""))).inc()
        kind = _FROM_AUDIT.get(action)
        extra: dict[str, Any] = {"by": event.get("user")}
        if action == "workspace.optimize" and details.get("kernels_shut_down"):
            kind = "cull"
            extra["kernels"] = details["kernels_shut_down"]
            m.culls.labels("kernel").inc(int(details["kernels_shut_down"]))
        if kind is None or outcome not in ("ok", "error") or (outcome == "error" and kind != "crash"):
            return
        ws = self.agent.workspaces.get(event.get("workspace") or "")
        if ws is None:
            return
        if action == "workspace.scale":
            extra.update(before=details.get("before"), after=details.get("after"))
        elif action == "workspace.reset":
            extra["hard"] = bool(details.get("hard"))
        elif action == "workspace.lost":
            extra["reason"] = details.get("reason")
        m.workspace_events.labels(kind).inc()
        row = (ws.id, ws.name, float(event.get("ts") or time.time()), kind, extra)
        task = asyncio.get_running_loop().create_task(self.agent.store.run(insert_events, [row]))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def run_finished(self, run: Run) -> None:
        """Runs' finished hook: ``fetchml_run_duration_seconds`` by outcome."""
        if run.duration_s is not None:
            self.metrics.run_duration.labels(run.status).observe(run.duration_s)

    async def events(self, ws: Workspace, since: float, until: float) -> list[dict[str, Any]]:
        if self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)
        return await self.agent.store.run(events_of, ws.id, since, until)


def _counts(conn: Any) -> tuple[dict[str, int], int]:
    runs = {r[0]: int(r[1]) for r in conn.execute(
        "SELECT status, count(*) FROM runs WHERE status IN ('queued', 'running') GROUP BY status")}
    sessions = int(conn.execute("SELECT count(*) FROM access_sessions WHERE ended_at IS NULL").fetchone()[0])
    return runs, sessions

