"""Open WebSocket connections follow revocations and role changes within about a second.

Every WebSocket a person opens (kernel channels, terminals, collaboration, the event stream) is
tracked with the credential it was opened with. Once a second the watcher asks the agent again
about all of them in one request (bypassing the cache): a connection whose credential is no
longer valid, or whose person's role no longer allows what the connection does, is closed
(code 1008, with the reason). A role change that still allows the connection updates the
person's pairs in place, which the collaboration guard and the kernel connection read.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

from tornado.ioloop import PeriodicCallback

from . import state
from .agent import AgentUnavailable, Answer, FetchmlUser

__all__ = ["Watcher", "needed_for"]

log = logging.getLogger("fetchml_jupyter")

_NEEDS = {
    "KernelWebsocketHandler": ("execute", "kernels"),
    "TermSocket": ("execute", "terminals"),
    "YDocWebSocketHandler": ("read", "contents"),
    "SubscribeWebsocket": ("execute", "events"),
}
CLOSE_CODE = 1008


def needed_for(handler: Any) -> tuple[str, str]:
    """What a WebSocket connection of this kind keeps needing while it is open."""
    return _NEEDS.get(type(handler).__name__, ("read", "api"))


class Watcher:
    def __init__(self, interval_ms: int = 1000) -> None:
        self._open: weakref.WeakKeyDictionary[Any, tuple[FetchmlUser, str, str, str]] = weakref.WeakKeyDictionary()
        self._timer = PeriodicCallback(self.tick, interval_ms)
        self._busy = False

    def start(self) -> None:
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    def track(self, handler: Any, user: FetchmlUser, credential: str, peer: str, forwarded: str) -> None:
        from tornado.websocket import WebSocketHandler

        if isinstance(handler, WebSocketHandler):
            self._open[handler] = (user, credential, peer, forwarded)

    def __len__(self) -> int:
        return len(self._open)

    async def tick(self) -> None:
        if self._busy or not self._open:
            return
        self._busy = True
        try:
            # Not yet open (still in its handshake) or already closed: skipped this time; a closed
            # handler leaves the weak mapping once it is collected.
            live = {h: v for h, v in list(self._open.items()) if h.ws_connection is not None}
            keys = sorted({(c, p, f) for _, c, p, f in live.values()})
            if not keys:
                return
            try:
                answers = await state.resolver().refresh(keys)
            except AgentUnavailable as exc:
                log.warning("fetchml_jupyter: cannot re-check open connections: %s", exc)
                return
            for handler, (user, cred, peer, fwd) in live.items():
                result = answers.get((cred, peer, fwd))
                if result is None:
                    continue
                if not isinstance(result, Answer):
                    self._close(handler, user, result.message)
                    continue
                user.update_from(result.user)
                action, resource = needed_for(handler)
                if not user.allows(action, resource):
                    self._close(handler, user, f"your role ({user.role or 'none'}) no longer allows {action} on {resource}")
        finally:
            self._busy = False

    def _close(self, handler: Any, user: FetchmlUser, reason: str) -> None:
        self._open.pop(handler, None)
        auditor = state.auditor()
        if auditor is not None:
            auditor.record(user.username, "jupyter.disconnected", outcome="denied", reason=reason[:200],
                           connection=type(handler).__name__, path=handler.request.path)
        try:
            handler.close(CLOSE_CODE, reason[:120])
        except Exception:  # already closing
            log.debug("closing %r failed", handler, exc_info=True)
