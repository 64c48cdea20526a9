"""Live updates inside the agent: what changed, published once, delivered to every subscriber.

:class:`LiveHub` is the agent's one publish/subscribe point (``agent.live``). The agent publishes
a ``workspace`` event whenever a workspace's record is written (:meth:`Agent.save`: a start, a
stop, a status the runtime reported) and a ``run`` event whenever a run's record changes (the
executor); the subscribe operation (``0x2F``, :mod:`fetchml_agent.service.live`) hands them to
WebSocket clients, ``ml status --watch`` among them, each filtered to what its user may see.

An event is encoded once, as one JSON line (``{"seq", "type", "ts", ...}``), whatever the number
of subscribers. Each subscriber has a bounded queue: one that does not keep up loses its oldest
events and is told so (``lagged``), and never slows the publisher or the others. The last
:data:`REPLAY` events are kept, so a client that read the state up to sequence number N can
subscribe "after N" and miss nothing in between (:meth:`LiveHub.subscribe`).

Pure asyncio, nothing else of the agent: every layer above may publish.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["REPLAY", "LiveEvent", "LiveHub", "Subscription"]

REPLAY = 2048  # events kept for subscribers that resume after a sequence number


@dataclass(frozen=True)
class LiveEvent:
    """One change: what it is about (``kind``, ``key``), who may see it (``workspace_id``, the
    run's ``user``), and the line every subscriber receives."""

    seq: int
    kind: str  # "workspace" | "run" | "gap"
    key: str
    workspace_id: str
    user: str
    owner: str
    ts: float
    line: bytes


class Subscription:
    """A subscriber's queue; iterate with :meth:`next`, release with :meth:`close`."""

    def __init__(self, hub: LiveHub, maxsize: int) -> None:
        self._hub = hub
        self._queue: asyncio.Queue[LiveEvent] = asyncio.Queue(maxsize)
        self.lagged = 0  # events dropped because this subscriber fell behind
        self.closed = False  # the hub closed: :meth:`next` answers ``None`` at once from now on

    def offer(self, event: LiveEvent) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._queue.get_nowait()  # the oldest goes: a slow reader never holds up the agent
            self._queue.put_nowait(event)
            self.lagged += 1

    async def next(self, timeout: float | None = None) -> LiveEvent | None:
        """The next event, or ``None`` when ``timeout`` seconds pass first or the hub closes."""
        if self.closed:
            return None
        try:
            event = await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None
        return None if event is _CLOSED else event

    def close(self) -> None:
        self._hub._subscribers.discard(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Offered to every subscription when the hub closes, to wake a reader that waits.
_CLOSED = LiveEvent(0, "closed", "", "", "", "", 0.0, b"")


class LiveHub:
    """The agent's publish/subscribe point; see the module docstring."""

    def __init__(self) -> None:
        self.seq = 0
        self._subscribers: set[Subscription] = set()
        self._recent: collections.deque[LiveEvent] = collections.deque(maxlen=REPLAY)
        self._closed = False

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, kind: str, key: str, data: dict[str, Any], *, workspace_id: str = "", user: str = "",
                owner: str = "") -> LiveEvent:
        """Encode ``data`` once as the line ``{"seq", "type": kind, "ts", **data}`` and offer it
        to every subscriber."""
        self.seq += 1
        ts = time.time()
        doc = {"seq": self.seq, "type": kind, "ts": round(ts, 6), **data}
        line = json.dumps(doc, separators=(",", ":"), default=str).encode("utf-8") + b"\n"
        event = LiveEvent(self.seq, kind, key, workspace_id, user, owner, ts, line)
        self._recent.append(event)
        for sub in tuple(self._subscribers):
            sub.offer(event)
        return event

    def close(self) -> None:
        """End every subscription (the server is shutting down): each reader's :meth:`~Subscription.next`
        answers ``None`` at once with ``closed`` set, instead of holding the shutdown until its
        next heartbeat."""
        self._closed = True
        for sub in tuple(self._subscribers):
            sub.closed = True
            sub.offer(_CLOSED)

    def subscribe(self, after: int | None = None, maxsize: int = REPLAY + 64) -> Subscription:
        """A new subscription; with ``after``, the kept events after that sequence number come
        first (a ``gap`` event first when some of them are no longer kept)."""
        sub = Subscription(self, maxsize)
        sub.closed = self._closed
        if after is not None and after < self.seq:
            kept = [e for e in self._recent if e.seq > after]
            if not kept or kept[0].seq > after + 1:
                gap = {"seq": after, "type": "gap", "ts": round(time.time(), 6),
                       "message": "some events were not kept: read the state again"}
                sub.offer(LiveEvent(after, "gap", "", "", "", "", time.time(),
                                    json.dumps(gap, separators=(",", ":")).encode() + b"\n"))
            for event in kept:
                sub.offer(event)
        self._subscribers.add(sub)
        return sub
