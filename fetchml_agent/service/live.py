"""Live status: the runtime's change feed applied to the workspaces, and the subscribe operation
(``0x2F``) that hands every change to WebSocket clients (``ml status --watch``).

**Following the runtime.** Where the runtime reports changes as they happen
(:class:`~fetchml_agent.runtimes.base.StatusFeed`: Nomad's event stream), :class:`LiveService`
runs its feed from the position stored last (``runtime_cursors``), applies each workspace's new
status as the reconcile loop would (:func:`~fetchml_agent.service.workspaces.apply_status`), and
stores the position again at most once a second (and at shutdown): a restarted agent resumes
there, and the feed delivers nothing twice that it has not made idempotent. While the feed runs,
the agent polls no workspace (the reconcile loop stands down).

**Subscribers.** The agent publishes a change when a workspace's record is written or a run's
changes (:class:`~fetchml_agent.live.LiveHub`); :func:`subscribe` passes to one WebSocket client
the changes its user may see (workspaces it can view; runs of those, and its own), one JSON line
per log packet, and a ``heartbeat`` every 15 s (which also finds a client that went away).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from ..errors import FetchmlError, InvalidArgument
from ..live import LiveEvent
from ..protocol.opcodes import Opcode
from ..runtimes.base import StatusChange, StatusFeed, find_capability
from ..store.cursors import get_cursor, set_cursor
from .access import visible
from .calls import Call, Result
from .context import AgentContext
from .registry import operation
from .workspaces import apply_status

__all__ = ["HEARTBEAT_S", "LiveService", "subscribe"]

log = logging.getLogger("fetchml.live")

HEARTBEAT_S = 15.0
_CURSOR_EVERY_S = 1.0


class LiveService:
    """Runs the runtime's change feed and keeps its position (``agent.services.live``)."""

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None
        self.feed: StatusFeed | None = None
        self.position = 0
        self._stored = 0
        self._last_store = 0.0
        self._flush: asyncio.Task[None] | None = None
        self.applied = 0

    @property
    def follows_runtime(self) -> bool:
        """Whether the runtime's feed is being followed (the reconcile loop then stands down)."""
        return self.task is not None and not self.task.done()

    async def start(self, agent: AgentContext) -> None:
        """A start hook: follow the runtime's feed, if it has one, from the stored position."""
        feed = find_capability(agent.runtime, StatusFeed)
        if feed is None:
            return
        self.feed = feed
        self.position = self._stored = await agent.store.run(get_cursor, feed.feed_name)

        async def deliver(changes: list[StatusChange], position: int) -> None:
            await self._deliver(agent, changes, position)

        self.task = asyncio.create_task(feed.follow_status(self.position, deliver), name="runtime-feed")

    async def stop(self, agent: AgentContext) -> None:
        """A shutdown hook: stop following and store the last position processed."""
        for task in (self.task, self._flush):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self.feed is not None and self.position != self._stored:
            await agent.store.run(set_cursor, self.feed.feed_name, self.position)
            self._stored = self.position

    async def _deliver(self, agent: AgentContext, changes: list[StatusChange], position: int) -> None:
        by_id = {ws.id: ws for ws in agent.workspaces.values()}
        for change in changes:
            ws = by_id.get(change.workspace_id)
            if ws is None or agent.lock(ws.name).locked():
                continue  # unknown here, or an operation on it is under way and will write its outcome
            try:
                if await apply_status(agent, ws, change.status, change.state):
                    self.applied += 1
            except FetchmlError as exc:
                log.warning("applying Nomad's status of %s failed: %s", ws.name, exc.message)
        self.position = position
        if self._flush is None or self._flush.done():
            self._flush = asyncio.create_task(self._store_position(agent))

    async def _store_position(self, agent: AgentContext) -> None:
        """Store the position at most once per :data:`_CURSOR_EVERY_S` seconds."""
        await asyncio.sleep(max(0.0, self._last_store + _CURSOR_EVERY_S - time.monotonic()))
        if self.feed is not None and self.position != self._stored:
            position = self.position
            await agent.store.run(set_cursor, self.feed.feed_name, position)
            self._stored = position
        self._last_store = time.monotonic()


def live_of(agent: AgentContext) -> LiveService:
    live = agent.services.live
    assert isinstance(live, LiveService)
    return live


# -- subscribe -------------------------------------------------------------------------------------

_TOPICS = {"workspaces": "workspace", "runs": "run"}


def _may_see(agent: AgentContext, call: Call, event: LiveEvent) -> bool:
    if event.kind == "gap" or call.user.is_admin:
        return True
    if event.kind == "run" and event.user == call.user.name:
        return True
    ws = next((w for w in agent.workspaces.values() if w.id == event.workspace_id), None)
    if ws is None:  # deleted: its owner hears of it
        return event.owner == call.user.name
    return visible(agent, call.user, ws)


@operation(
    Opcode.SUBSCRIBE,
    routes=[],
    schema={
        "topics": {"type": "list", "default": ["workspaces", "runs"],
                   "schema": {"type": "string", "allowed": sorted(_TOPICS)}},
        "workspace": {"type": "string", "nullable": True, "default": None},
        "after": {"type": "integer", "nullable": True, "default": None, "min": 0},
        "max_events": {"type": "integer", "default": 0, "min": 0, "max": 1_000_000},
        "timeout": {"type": "number", "default": 0, "min": 0, "max": 86400},
    },
)
async def subscribe(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    """Stream the changes this user may see as log packets until ``max_events``, ``timeout`` or the
    client closes (see the module docstring). A workspace that is named must be visible."""
    kinds = {_TOPICS[t] for t in args["topics"]}
    only = None
    if args.get("workspace"):
        ws = agent.find_workspace(args["workspace"])
        if not visible(agent, call.user, ws):
            raise InvalidArgument(f"no workspace or service named {args['workspace']!r}")
        only = ws.id
    limit, timeout = args["max_events"], float(args["timeout"])
    deadline = time.monotonic() + timeout if timeout else None
    sent = 0
    with agent.live.subscribe(after=args.get("after")) as sub:
        while not limit or sent < limit:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            wait = HEARTBEAT_S if deadline is None else min(HEARTBEAT_S, deadline - now)
            event = await sub.next(wait)
            if sub.closed:  # the agent is shutting down
                break
            try:
                if event is None:
                    if deadline is None or time.monotonic() < deadline:
                        await call.log(b'{"type":"heartbeat","ts":%.3f}\n' % time.time())
                    continue
                if event.kind != "gap" and (event.kind not in kinds or (only and event.workspace_id != only)):
                    continue
                if not _may_see(agent, call, event):
                    continue
                await call.log(event.line)
            except Exception:  # the client went away: nothing more to send
                return Result(f"{sent} changes (the client closed)")
            sent += 1
        lagged = sub.lagged
    note = f"; {lagged} dropped: the client fell behind" if lagged else ""
    return Result(f"{sent} changes{note}")
