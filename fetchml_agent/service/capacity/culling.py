"""Idle culling (agent.yaml ``culling:``): a workspace that nobody uses is stopped; one that works never is.

A running workspace is **idle** when all of these hold, and **active** otherwise:

- no kernel is busy and no terminal runs a command (JupyterLab's report: a cell that runs for an
  hour without printing is busy for that hour);
- no person has sent JupyterLab a request (API, kernel or terminal traffic, edits) since;
- none of its experiment runs is queued or running;
- for a workspace holding GPUs, its processes use them less than ``gpu_threshold`` percent
  (:class:`~fetchml_agent.runtimes.base.GpuActivity`; a measurement that fails counts as active);
- JupyterLab reports at all: a server that has not reported for two intervals may be doing
  anything, so it counts as active (``max_age`` still applies).

It has been idle since the latest of: its start, a person's last request, the last report of a
busy kernel or terminal, the last check that found it active. It is culled ``idle_timeout`` (or
``gpu_idle_timeout``) after that, and ``max_age`` after its start whatever it does; its owner is
warned ``warn_before`` ahead (audit event and webhook ``workspace.cull_warning``, and ``ml jupyter
info`` says when). Just before a cull the agent asks JupyterLab once more for its kernels' states
(the report may be up to one interval old): a busy kernel cancels the cull. Every cull is audited
(``workspace.cull``) with its reason.

:func:`decide` is the rule, pure; :class:`Culler` gathers the facts (one store query for the runs,
one GPU measurement for the workspaces holding GPUs) and acts, once per ``check_interval``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ...errors import FetchmlError
from ...experiments.records import runs_by_status
from ...runtimes.base import GpuActivity, find_capability
from ...store.workspaces import Workspace
from ...units import format_age, format_duration
from ..context import AgentContext
from ..operations import _kernel_delete, _kernels
from ..workspaces import _stop
from .activity import ActivityBook, Seen
from .settings import CullingSettings

__all__ = ["Culler", "Facts", "Verdict", "decide"]

log = logging.getLogger("fetchml.culling")

AGENT = "agent"


@dataclass(frozen=True)
class Facts:
    """What one check knows about one running workspace."""

    now: float
    started_at: float
    holds_gpu: bool = False
    seen: Seen | None = None
    runs: tuple[str, ...] = ()  # its queued or running runs
    gpu_util: float | None = None  # its processes' utilization of its busiest GPU (None: none use one)
    gpu_unknown: bool = False  # it holds GPUs and the measurement failed
    last_active_at: float | None = None  # the last check that found it active
    watching_since: float = 0.0  # when this agent started listening for reports


@dataclass(frozen=True)
class Verdict:
    """What :func:`decide` concludes: why it is active (empty: idle), since when it is idle, when
    it is to be culled and why (``idle`` or ``max_age``), when its owner is to be warned."""

    active: tuple[str, ...]
    idle_since: float | None
    cull_at: float | None
    why: str = ""
    warn_at: float | None = None
    last_person: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"active": list(self.active), "idle_since": self.idle_since, "cull_at": self.cull_at,
                "why": self.why, "warn_at": self.warn_at, "last_person": self.last_person}


def _ago(now: float, then: float) -> str:
    return format_age(now - then) + " ago"


def decide(f: Facts, s: CullingSettings) -> Verdict:
    """The culling rule for one workspace (see the module docstring). Pure."""
    reasons: list[str] = []
    if f.runs:
        shown = ", ".join(f.runs[:3]) + (" ..." if len(f.runs) > 3 else "")
        reasons.append(f"{len(f.runs)} experiment run(s) queued or running ({shown})")
    seen = f.seen
    grace = 2 * s.report_interval + 15.0
    if seen is None:
        since = max(f.started_at, f.watching_since)
        reasons.append("waiting for JupyterLab's first activity report" if f.now - since <= grace else
                       f"JupyterLab has not reported its activity since {_ago(f.now, since)} "
                       "(fetchml_jupyter missing from its environment, or the agent unreachable from it)")
    else:
        if f.now - seen.reported_at > grace:
            reasons.append(f"JupyterLab stopped reporting its activity {_ago(f.now, seen.reported_at)}")
        if seen.busy_kernels:
            reasons.append(f"{seen.busy_kernels} kernel(s) busy")
        if seen.busy_terminals:
            reasons.append(f"{seen.busy_terminals} terminal(s) running a command")
    if f.holds_gpu:
        if f.gpu_unknown:
            reasons.append("its GPU utilization cannot be measured now")
        elif f.gpu_util is not None and f.gpu_util >= s.gpu_threshold:
            reasons.append(f"its processes use {f.gpu_util:.0f}% of a GPU (idle below {s.gpu_threshold:g}%)")
    person_at = seen.request_at if seen is not None else None
    marks = [f.started_at, person_at, seen.busy_at if seen else None, f.last_active_at]
    idle_since = None if reasons else max(m for m in marks if m is not None)
    timeout = s.timeout_for(f.holds_gpu)
    candidates: list[tuple[float, str]] = []
    if idle_since is not None and timeout:
        candidates.append((idle_since + timeout, "idle"))
    if s.max_age:
        candidates.append((f.started_at + s.max_age, "max_age"))
    if not candidates:
        return Verdict(tuple(reasons), idle_since, None, last_person=seen.person if seen else "")
    cull_at, why = min(candidates)
    start = idle_since if why == "idle" and idle_since is not None else f.started_at
    warn_at = max(start, cull_at - s.warn_before)
    return Verdict(tuple(reasons), idle_since, cull_at, why, warn_at, seen.person if seen else "")


def describe_cull(v: Verdict, s: CullingSettings, holds_gpu: bool, now: float) -> str:
    """The reason a cull gives, in words."""
    if v.why == "max_age":
        return f"it reached culling.max_age ({format_duration(s.max_age or 0)} since its start)"
    timeout = s.timeout_for(holds_gpu) or 0
    key = "gpu_idle_timeout" if holds_gpu and s.gpu_idle_timeout else "idle_timeout"
    parts = ["no kernel busy", "no terminal running a command",
             "no request from a person" + (f" since {v.last_person}'s" if v.last_person else ""),
             "no experiment run queued or running"]
    if holds_gpu:
        parts.append(f"its GPU processes below {s.gpu_threshold:g}%")
    return f"idle for {format_age(now - (v.idle_since or now))} (culling.{key} {format_duration(timeout)}): " + \
        ", ".join(parts)


@dataclass
class _Memory:
    """What the culler remembers of one workspace between checks (in memory)."""

    last_active_at: float | None = None
    warned_for: float | None = None  # the cull time the owner was warned about
    kernels_culled_for: float | None = None  # the idle_since whose kernels were shut down
    runs: tuple[str, ...] = ()  # what the last check found
    gpu_util: float | None = None
    gpu_unknown: bool = False


@dataclass
class Culler:
    """Checks every running workspace once per ``check_interval``; see the module docstring."""

    agent: AgentContext
    settings: CullingSettings
    activity: ActivityBook
    counters: Counter[str] = field(default_factory=Counter)
    memory: dict[str, _Memory] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    last_sweep_s: float | None = None
    _task: asyncio.Task[None] | None = None
    _acting: set[str] = field(default_factory=set)
    _jobs: set[asyncio.Task[None]] = field(default_factory=set)

    def start(self) -> None:
        """Check once per interval; without ``culling:`` the checks only keep ``ml jupyter info``'s
        idle time up to date (runs, GPUs) and cull nothing."""
        self.started_at = time.time()
        self._task = asyncio.create_task(self._loop(), name="culling")

    async def close(self) -> None:
        for task in [self._task, *self._jobs]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.check_interval)
            try:
                await self.sweep()
            except Exception:  # the loop outlives a bad check
                log.exception("culling check failed")

    # -- facts ------------------------------------------------------------------------------------

    async def _runs(self) -> dict[str, list[str]]:
        by_ws: dict[str, list[str]] = {}
        for run in await self.agent.store.run(runs_by_status, "queued", "running"):
            by_ws.setdefault(run.workspace_id, []).append(run.id)
        return by_ws

    async def _gpus(self, workspaces: list[Workspace]) -> tuple[dict[str, float], bool]:
        """Utilization per workspace holding GPUs, and whether the measurement failed."""
        holding = {ws.id: ws.runtime_state or {} for ws in workspaces if int(ws.resources.get("gpu") or 0) > 0}
        if not holding:
            return {}, False
        gpu = find_capability(self.agent.runtime, GpuActivity)
        if gpu is None:
            return {}, True
        try:
            return await gpu.gpu_utilization(holding), False
        except FetchmlError as exc:
            log.warning("culling: %s", exc)
            return {}, True

    def facts(self, ws: Workspace, now: float, runs: dict[str, list[str]], gpu: dict[str, float],
              gpu_failed: bool) -> Facts:
        holds_gpu = int(ws.resources.get("gpu") or 0) > 0
        mem = self.memory.get(ws.id)
        return Facts(
            now=now,
            started_at=ws.started_at or ws.created_at,
            holds_gpu=holds_gpu,
            seen=self.activity.get(ws.id),
            runs=tuple(runs.get(ws.id, ())),
            gpu_util=gpu.get(ws.id, 0.0) if holds_gpu and not gpu_failed else None,
            gpu_unknown=holds_gpu and gpu_failed,
            last_active_at=mem.last_active_at if mem else None,
            watching_since=self.started_at,
        )

    # -- the check ----------------------------------------------------------------------------------

    async def sweep(self, now: float | None = None) -> dict[str, Verdict]:
        """One check of every running workspace: decide, warn, cull. Returns the verdicts."""
        t0 = time.perf_counter()
        now = time.time() if now is None else now
        running = [ws for ws in self.agent.workspaces.values() if ws.status == "running"]
        runs = await self._runs()
        gpu, gpu_failed = await self._gpus(running)
        verdicts: dict[str, Verdict] = {}
        for ws in running:
            facts = self.facts(ws, now, runs, gpu, gpu_failed)
            v = decide(facts, self.settings)
            mem = self.memory.setdefault(ws.id, _Memory())
            if v.active:
                mem.last_active_at = now
            mem.runs, mem.gpu_util, mem.gpu_unknown = facts.runs, facts.gpu_util, facts.gpu_unknown
            verdicts[ws.id] = v
            if not self.settings.enabled or v.cull_at is None or ws.id in self._acting:
                continue
            if v.why == "idle" and self.settings.action == "kernels" and mem.kernels_culled_for == v.idle_since:
                continue  # its kernels went already; nothing new happened since
            if now >= v.cull_at:
                self._act(self._cull(ws, v), ws.id)
            elif v.warn_at is not None and now >= v.warn_at and mem.warned_for != v.cull_at:
                mem.warned_for = v.cull_at
                self._act(self._warn(ws, v), ws.id)
        live = {ws.id for ws in self.agent.workspaces.values()}
        for wid in [w for w in self.memory if w not in live]:
            del self.memory[wid]
        self.last_sweep_s = time.perf_counter() - t0
        return verdicts

    def _act(self, coro: Any, workspace_id: str) -> None:
        self._acting.add(workspace_id)
        task = asyncio.get_running_loop().create_task(coro)
        self._jobs.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._jobs.discard(t)
            self._acting.discard(workspace_id)
            if not t.cancelled() and t.exception() is not None:
                log.error("culling %s failed: %s", workspace_id, t.exception())

        task.add_done_callback(done)

    def verdict(self, ws: Workspace, now: float | None = None) -> Verdict:
        """The verdict for ``ws`` now (for ``ml jupyter info``): JupyterLab's latest report, and
        what the last check found of its runs and GPU use."""
        mem = self.memory.get(ws.id) or _Memory()
        holds_gpu = int(ws.resources.get("gpu") or 0) > 0
        facts = Facts(
            now=time.time() if now is None else now,
            started_at=ws.started_at or ws.created_at,
            holds_gpu=holds_gpu,
            seen=self.activity.get(ws.id),
            runs=mem.runs,
            gpu_util=mem.gpu_util,
            gpu_unknown=holds_gpu and mem.gpu_unknown,
            last_active_at=mem.last_active_at,
            watching_since=self.started_at,
        )
        return decide(facts, self.settings)

    # -- acting -------------------------------------------------------------------------------------

    async def _warn(self, ws: Workspace, v: Verdict) -> None:
        what = "its kernels shut down" if self.settings.action == "kernels" and v.why == "idle" else "stopped"
        self.counters["warnings"] += 1
        await self.agent.audit(AGENT, "workspace.cull_warning", ws.name, owner=ws.owner, will_cull_at=v.cull_at,
                               cull_action="stop" if v.why == "max_age" else self.settings.action, why=v.why,
                               idle_since=v.idle_since,
                               message=f"workspace {ws.name} will be {what} at {_clock(v.cull_at or 0)} unless it is used")

    async def _busy_now(self, ws: Workspace) -> tuple[bool, list[dict[str, Any]]]:
        """JupyterLab's kernels now, and whether one is busy (the last look before a cull)."""
        try:
            kernels = await _kernels(ws)
        except FetchmlError:
            return False, []
        return any(k.get("execution_state") == "busy" for k in kernels), kernels

    async def _cull(self, ws: Workspace, v: Verdict) -> None:
        lock = self.agent.lock(ws.name)
        if lock.locked():
            return  # someone is working on it right now: not idle
        async with lock:
            if ws.status != "running":
                return
            now = time.time()
            busy, kernels = await self._busy_now(ws)
            if busy and v.why == "idle":
                self.memory.setdefault(ws.id, _Memory()).last_active_at = now
                self.counters["cancelled"] += 1
                return
            reason = describe_cull(v, self.settings, int(ws.resources.get("gpu") or 0) > 0, now)
            base: dict[str, Any] = {"owner": ws.owner, "why": v.why, "reason": reason, "idle_since": v.idle_since,
                    "started_at": ws.started_at}
            if v.why == "idle" and self.settings.action == "kernels":
                shut = []
                for k in kernels:
                    if k.get("execution_state") != "busy":
                        with contextlib.suppress(Exception):
                            await _kernel_delete(ws, str(k["id"]))
                            shut.append(str(k["id"]))
                self.memory.setdefault(ws.id, _Memory()).kernels_culled_for = v.idle_since
                self.counters["culls_kernels"] += 1
                await self.agent.audit(AGENT, "workspace.cull", ws.name, cull_action="kernels",
                                       kernels_shut_down=len(shut), **base)
                return
            await _stop(self.agent, ws)
            ws.status_message = f"stopped by the agent: {reason}"
            await self.agent.save(ws)
            self.counters[f"culls_stop_{v.why}"] += 1
        await self.agent.audit(AGENT, "workspace.cull", ws.name, cull_action="stop", **base)


def _clock(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(ts))
