"""Following Nomad: the event stream (else blocking queries), the agent's model of its own jobs and
allocations built from it, the workspace statuses delivered to the agent, and the wake-ups of
whoever waits on a job (experiment runs).

How the stream is followed (:class:`Follower`; facts about the stream: :mod:`fetchml_agent.nomad.events`):

1. Subscribe to Job, Allocation, Evaluation, Deployment and Node (``Topic:*`` each, in the
   runtime's namespace) from the last position processed.
2. At the first line, list the agent's jobs and allocations (two requests) and take them as the
   model: the buffer behind the stream is short, so whatever happened while the agent was not
   subscribed is read from the lists, not trusted to the replay. The lists' index becomes the
   position when it is ahead of it (and replaces it when Nomad's index went backwards: another or
   a restored cluster).
3. Then apply frame by frame. A frame whose index is not past the position is dropped: Nomad sends
   the frame at the resume index again, and after a reconnect replays what was processed. An
   object (job, allocation) replaces the model's only when its ``ModifyIndex`` is not older, so a
   replayed frame never rolls the model back.
4. After each frame (and each list), the workspaces whose status changed are delivered, with the
   position; jobs that changed wake their waiters (:meth:`Follower.wait_job`).

Refusals fall back: a denial that names Node (the token lacks ``node:read``) subscribes again
without Node; a denial of the rest (403 up to Nomad 1.11, an empty 200 from 2.0) or no stream
(404, Nomad before 1.0) switches to **blocking queries**: one query over the agent's allocations
(``?index=&wait=``), and the jobs list read again when it returns; the stream is tried again after
``nomad.events.fallback_retry`` seconds. Connection failures reconnect with a backoff (0.5 s up
to 30 s) and resync.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

from ...errors import FetchmlError
from ...nomad.events import TOPICS, StreamUnavailable, stream_client, subscribe
from ..base import Deliver, Status, StatusChange
from .common import NomadBase, _current_alloc, _url_from_ports, workload_status

__all__ = ["Follower"]

log = logging.getLogger("fetchml.nomad.follow")

_BLOCKING_WAIT = 30.0  # seconds one blocking query parks at most
_MAX_BACKOFF = 30.0


class NotLive(Exception):
    """The model is not current (the follower is reconnecting): ask Nomad directly."""


class Follower:
    """The runtime's view of its jobs, kept current from Nomad; see the module docstring."""

    def __init__(self, base: NomadBase) -> None:
        self.base = base
        s = base.settings
        self.prefix = s.job_prefix
        self.ws_prefix = f"{s.job_prefix}ws-"
        self.jobs: dict[str, dict[str, Any]] = {}
        self.allocs: dict[str, dict[str, Any]] = {}
        self.by_job: dict[str, set[str]] = {}
        self.gone: dict[str, int] = {}  # purged jobs: the index they went at
        self.ws_of: dict[str, str] = {}  # workspace job -> the agent's workspace id (job meta)
        self.delivered: dict[str, tuple[str, str, str | None]] = {}
        self.position = 0
        self.mode = "starting"
        self.live = False
        self.last_error = ""
        self.counters = {"frames": 0, "events": 0, "dropped": 0, "resyncs": 0, "reconnects": 0}
        self._job_index: dict[str, int] = {}
        self._waiters: dict[str, asyncio.Event] = {}
        self._deliver: Deliver | None = None

    # -- what the runtime asks --------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        return {"mode": self.mode, "position": self.position, "live": self.live,
                "last_error": self.last_error, **self.counters}

    async def wait_job(self, job_id: str, index: int, wait: float) -> int:
        """Until job ``job_id`` (its job, allocations, evaluations, deployments) changed after
        Nomad index ``index``, or ``wait`` seconds pass; returns the index to pass next time (0
        the first time: at once). Raises :class:`NotLive` while the model is not current."""
        if not self.live:
            raise NotLive()
        last = self._job_index.get(job_id, 0)
        if not index:
            return max(last, self.position, 1)
        if last > index:
            return last
        event = self._waiters.setdefault(job_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), wait)
        return max(self._job_index.get(job_id, 0), index)

    # -- following ----------------------------------------------------------------------------

    async def run(self, since: int, deliver: Deliver) -> None:
        """Follow Nomad until cancelled (see the module docstring)."""
        s = self.base.settings
        self.position = max(0, int(since))
        self._deliver = deliver
        topics = list(TOPICS)
        backoff = 0.5
        async with stream_client(s, s.events_read_timeout) as http:
            while True:
                try:
                    if not s.events_enabled:
                        raise StreamUnavailable("the event stream is turned off (nomad.events.enabled)", denied=False)
                    await self._stream(http, topics)
                    backoff = 0.5  # Nomad ended a stream that worked: subscribe again at once
                except StreamUnavailable as exc:
                    if exc.denied and "Node" in topics:
                        log.info("Nomad refused the event stream with the Node topic (the token has no "
                                 "node:read?); following without it: %s", exc.message)
                        topics = [t for t in topics if t != "Node"]
                        continue
                    self.last_error = exc.message
                    log.warning("following Nomad with blocking queries: %s (the stream is tried again "
                                "in %g s)", exc.message, s.events_fallback_retry)
                    await self._blocking(time.monotonic() + s.events_fallback_retry)
                    topics = list(TOPICS)
                except FetchmlError as exc:
                    self.live = False
                    self.mode = "reconnecting"
                    self.last_error = exc.message
                    log.warning("following Nomad: %s; again in %g s", exc.message, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(_MAX_BACKOFF, backoff * 2)
                self.counters["reconnects"] += 1

    async def _stream(self, http: Any, topics: list[str]) -> None:
        self.mode = "connecting"
        resynced = False
        async for frame in subscribe(http, self.base.settings, self.position, topics):
            if not resynced:
                await self._resync()  # the subscription is up: what happened before, from the lists
                resynced = True
                self.live = True
                self.mode = "event stream" + ("" if "Node" in topics else " (without Node)")
                self.last_error = ""
            if "Index" in frame:
                await self._frame(frame)
        self.live = False

    async def _blocking(self, until: float) -> None:
        """Blocking queries over the agent's allocations (and the jobs list when they move),
        until ``until`` (monotonic)."""
        client = self.base.client
        index = 0
        backoff = 0.5
        while time.monotonic() < until:
            try:
                if not index:
                    index = await self._resync()
                    self.live = True
                    self.mode = "blocking queries"
                    continue
                wait = max(1.0, min(_BLOCKING_WAIT, until - time.monotonic()))
                allocs, new = await client.list_allocations(
                    filter_=self._filter(), resources=True, index=index, wait=wait)
                if new != index:
                    stubs = await client.list_jobs(self.prefix)
                    await self._apply_lists(stubs, allocs, new)
                index = new
                backoff = 0.5
            except FetchmlError as exc:
                self.live = False
                self.mode = "reconnecting"
                self.last_error = exc.message
                await asyncio.sleep(backoff)
                backoff = min(_MAX_BACKOFF, backoff * 2)
                index = 0

    def _filter(self) -> str:
        return f'JobID matches "^{self.prefix}"'

    # -- applying lists and frames ----------------------------------------------------------------

    async def _resync(self) -> int:
        client = self.base.client
        stubs = await client.list_jobs(self.prefix)
        allocs, index = await client.list_allocations(filter_=self._filter(), resources=True)
        self.counters["resyncs"] += 1
        if index < self.position:
            log.warning("Nomad's index went back from %d to %d (another or a restored cluster): following "
                        "from %d", self.position, index, index)
            self.position = index
        await self._apply_lists(stubs, allocs, index)
        return index

    async def _apply_lists(self, stubs: list[dict[str, Any]], allocs: list[dict[str, Any]], index: int) -> None:
        """The lists are the truth: the model becomes them; every job whose records differ from
        the model's is a changed one."""
        jobs = {str(j["ID"]): j for j in stubs if str(j.get("ID", "")).startswith(self.prefix)}
        for job_id, stub in jobs.items():
            if job_id.startswith(self.ws_prefix) and job_id not in self.ws_of:
                meta = stub.get("Meta")
                if meta is None and "Meta" not in stub:  # a Nomad without ?meta=true
                    try:
                        meta = (await self.base.client.get_job(job_id)).get("Meta")
                    except FetchmlError:
                        meta = None
                self._remember_workspace(job_id, meta or {})
        by_job: dict[str, set[str]] = {}
        marks: dict[str, list[tuple[str, int]]] = {}
        for alloc in allocs:
            by_job.setdefault(str(alloc["JobID"]), set()).add(str(alloc["ID"]))
            marks.setdefault(str(alloc["JobID"]), []).append((str(alloc["ID"]), int(alloc.get("ModifyIndex") or 0)))
        changed = set()
        for job_id in set(jobs) | set(self.jobs) | set(by_job) | set(self.by_job):
            new_job = jobs.get(job_id)
            sig_new = ((new_job or {}).get("ModifyIndex"), bool((new_job or {}).get("Stop")), new_job is None,
                       tuple(sorted(marks.get(job_id, ()))))
            if self._signature(job_id) != sig_new:
                changed.add(job_id)
        for job_id in set(self.jobs) - set(jobs):
            self.gone[job_id] = index
        self.jobs = jobs
        self.allocs = {str(a["ID"]): a for a in allocs}
        self.by_job = by_job
        self.position = max(self.position, index)
        await self._changed(changed, self.position)

    def _signature(self, job_id: str) -> tuple[Any, ...]:
        job = self.jobs.get(job_id)
        allocs = sorted((a, int(self.allocs[a].get("ModifyIndex") or 0)) for a in self.by_job.get(job_id, ())
                        if a in self.allocs)
        return ((job or {}).get("ModifyIndex"), bool((job or {}).get("Stop")), job is None, tuple(allocs))

    async def _frame(self, frame: Mapping[str, Any]) -> None:
        index = int(frame.get("Index") or 0)
        if index <= self.position:
            self.counters["dropped"] += 1  # seen before: the resume frame, or a replay after a reconnect
            return
        self.counters["frames"] += 1
        changed: set[str] = set()
        for event in frame.get("Events") or []:
            self.counters["events"] += 1
            job_id = await self._event(event, index)
            if job_id:
                changed.add(job_id)
        self.position = index
        await self._changed(changed, index)

    async def _event(self, event: Mapping[str, Any], index: int) -> str | None:
        """Apply one event to the model; the job it concerns when it is one of the agent's."""
        topic = event.get("Topic")
        payload = event.get("Payload") or {}
        if topic == "Job":
            job = payload.get("Job") or {}
            job_id = str(job.get("ID") or "")
            if not job_id.startswith(self.prefix):
                return None
            if job_id.startswith(self.ws_prefix):
                self._remember_workspace(job_id, job.get("Meta") or {})
            deleted = bool(payload.get("Deleted"))
            if not deleted and event.get("Type") == "JobDeregistered" and job_id.startswith(self.ws_prefix):
                # a stop and a purge look alike here: a workspace's job is looked up
                try:
                    deleted = await self.base.client.find_job(job_id) is None
                except FetchmlError:
                    deleted = False
            if deleted:
                self.jobs.pop(job_id, None)
                self.gone[job_id] = index
            elif self._newer(self.jobs.get(job_id), job) and self.gone.get(job_id, 0) < int(job.get("ModifyIndex") or index):
                self.jobs[job_id] = job
                self.gone.pop(job_id, None)
            return job_id
        if topic == "Allocation":
            alloc = payload.get("Allocation") or {}
            job_id = str(alloc.get("JobID") or "")
            if not job_id.startswith(self.prefix) or not alloc.get("ID"):
                return None
            if self._newer(self.allocs.get(str(alloc["ID"])), alloc):
                self.allocs[str(alloc["ID"])] = alloc
                self.by_job.setdefault(job_id, set()).add(str(alloc["ID"]))
            return job_id
        if topic in ("Evaluation", "Deployment"):
            obj = payload.get(str(topic)) or {}
            job_id = str(obj.get("JobID") or "")
            return job_id if job_id.startswith(self.prefix) else None
        if topic == "Node":
            self.base._nodes_cache = None  # GPU types and free GPUs are read again when asked
        return None

    @staticmethod
    def _newer(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
        return old is None or int(new.get("ModifyIndex") or 0) >= int(old.get("ModifyIndex") or 0)

    def _remember_workspace(self, job_id: str, meta: Mapping[str, Any]) -> None:
        if meta.get("fetchml_kind") == "workspace":
            self.ws_of[job_id] = str(meta.get("fetchml_workspace_id") or meta.get("fetchml_workspace") or job_id)

    # -- what changed -------------------------------------------------------------------------

    async def _changed(self, job_ids: set[str], index: int) -> None:
        for job_id in job_ids:
            self._job_index[job_id] = index
            waiter = self._waiters.pop(job_id, None)
            if waiter is not None:
                waiter.set()
        changes = [c for c in (self._status_change(j) for j in sorted(job_ids)) if c is not None]
        if self._deliver is not None:
            await self._deliver(changes, index)

    def _status_change(self, job_id: str) -> StatusChange | None:
        ws_id = self.ws_of.get(job_id)
        if ws_id is None:
            return None
        allocs = [self.allocs[a] for a in self.by_job.get(job_id, ()) if a in self.allocs]
        current = _current_alloc(allocs)
        ports = ((current or {}).get("AllocatedResources") or {}).get("Shared") or {}
        url = _url_from_ports(ports.get("Ports"))
        status: Status = workload_status(job_id, self.jobs.get(job_id), allocs, url)
        key = (status.state, status.message, status.url)
        if self.delivered.get(ws_id) == key:
            return None
        self.delivered[ws_id] = key
        state = None
        if status.state == "running" and current is not None:
            state = {"alloc_id": current.get("ID"), "url": url, "node_id": current.get("NodeID"),
                     "eval_id": current.get("EvalID")}
        return StatusChange(ws_id, status, state)
