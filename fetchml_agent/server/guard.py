"""What a client address may cost the agent before it presents a valid key.

One :class:`PeerGuard` per server, shared by both transports:

- **connections per peer**: at most ``limits.max_connections_per_peer`` WebSocket connections from
  one address at a time; the next handshake is refused with HTTP 429.
- **failures per peer**: wrong keys, unauthenticated frames over the pre-authentication size limit
  and refused connections count against ``limits.auth_failures_per_minute``. Over that budget a
  failure is answered only after :data:`PENALTY_SECONDS` and the WebSocket connection is closed,
  and each new WebSocket connection from that address waits as long before its handshake is
  answered: one address cannot make the agent do more than a handful of attempts a second, and
  the event loop stays free for everyone else.
- **audit**: one ``auth.failed`` event per peer and minute, not one row per frame: the first
  failure of a quiet peer is written at once (so a mistyped key shows up immediately); later ones
  are added up and written as one event when their minute ends, with counts by kind.

The guard knows addresses, never users: a connection from the same address that has presented a
valid key is never slowed down (a new one waits a second while its address is over budget).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MAX_TRACKED_PEERS", "OTHER_PEERS", "PENALTY_SECONDS", "WINDOW_SECONDS", "PeerGuard"]

log = logging.getLogger("fetchml.guard")

WINDOW_SECONDS = 60.0
PENALTY_SECONDS = 1.0
# Failures of addresses beyond this many are counted together under OTHER_PEERS, so that traffic
# from very many addresses cannot grow the guard's memory without bound.
MAX_TRACKED_PEERS = 10_000
OTHER_PEERS = "(other addresses)"

Audit = Callable[[str, dict[str, Any]], Awaitable[None]]


@dataclass
class _Window:
    start: float
    total: int = 0  # failures in this window, including the one already audited
    unreported: Counter[str] = field(default_factory=Counter)
    transports: set[str] = field(default_factory=set)


class PeerGuard:
    """Per-address connection counts and failure accounting (see the module docstring)."""

    def __init__(
        self,
        audit: Audit,
        *,
        max_connections: int = 64,
        failures_per_window: int = 10,
        window: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._audit = audit
        self.max_connections = max_connections
        self.failures_per_window = failures_per_window
        self.window = window
        self._clock = clock
        self._connections: Counter[str] = Counter()
        self._windows: dict[str, _Window] = {}
        self._task: asyncio.Task[None] | None = None

    # -- connections ------------------------------------------------------------------------------

    def open_connection(self, peer: str) -> bool:
        """Count a new connection from ``peer``; False (and nothing counted) when over the limit."""
        if self._connections[peer] >= self.max_connections:
            return False
        self._connections[peer] += 1
        return True

    def close_connection(self, peer: str) -> None:
        self._connections[peer] -= 1
        if self._connections[peer] <= 0:
            del self._connections[peer]

    def connections(self, peer: str) -> int:
        return self._connections.get(peer, 0)

    def over_budget(self, peer: str) -> bool:
        """Whether ``peer`` has used up its failures for this window (its new connections wait)."""
        window = self._windows.get(self._bucket(peer))
        return window is not None and window.total > self.failures_per_window

    def _bucket(self, peer: str) -> str:
        if peer in self._windows or len(self._windows) < MAX_TRACKED_PEERS:
            return peer
        return OTHER_PEERS

    # -- failures ---------------------------------------------------------------------------------

    async def failure(self, peer: str, transport: str, kind: str) -> bool:
        """Record one failure; True when ``peer`` is over its budget for this window."""
        peer = self._bucket(peer)
        window = self._windows.get(peer)
        if window is None:
            self._windows[peer] = _Window(self._clock(), total=1, transports={transport})
            await self._write(peer, {"transport": transport, "failures": 1, kind: 1})
            return self.failures_per_window < 1
        window.total += 1
        window.unreported[kind] += 1
        window.transports.add(transport)
        return window.total > self.failures_per_window

    async def sweep(self) -> None:
        """Write the summary of every window that has ended; forget peers that went quiet."""
        now = self._clock()
        for peer, window in list(self._windows.items()):
            if now - window.start < self.window:
                continue
            if window.unreported:
                await self._summary(peer, window)
                # The peer is still failing: the next window continues without an opening event,
                # so a sustained attack writes exactly one row per minute.
                self._windows[peer] = _Window(now)
            else:
                del self._windows[peer]

    async def flush(self) -> None:
        """Write every pending summary now (at shutdown)."""
        for peer, window in list(self._windows.items()):
            if window.unreported:
                await self._summary(peer, window)
        self._windows.clear()

    async def _summary(self, peer: str, window: _Window) -> None:
        details: dict[str, Any] = {
            "transport": ",".join(sorted(window.transports)),
            "failures": sum(window.unreported.values()),
            "window_seconds": int(self.window),
            **window.unreported,
        }
        await self._write(peer, details)

    async def _write(self, peer: str, details: dict[str, Any]) -> None:
        try:
            await self._audit(peer, details)
        except Exception:  # the audit must not turn a refused frame into a crash
            log.exception("could not audit authentication failures from %s", peer)

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="peer-guard")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(max(self.window / 12, 0.05))
            await self.sweep()
