"""The audit feed: what people do in JupyterLab, batched to the agent once a second.

Sources, in order of preference:

- Jupyter Server's own events (``jupyter_events``): the contents service schema (open, save,
  rename, copy, delete) and the kernel-actions schema (start, restart, interrupt, shutdown). Each
  is attributed to the person whose request emitted it (:data:`fetchml_jupyter.state.REQUEST`);
  what the server does on its own (a collaboration room loading or autosaving a file) is not a
  person's act and is recorded from the collaboration guard instead (``jupyter.edit``).
- The end of each request (tornado's ``log_function``), for what has no event: downloads and the
  opening of a document for live collaboration.
- Kernel executions from :mod:`fetchml_jupyter.kernels` (who, which notebook, when, how long; the
  code is never recorded), and refusals from the authorizer.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from tornado.ioloop import PeriodicCallback
from tornado.websocket import WebSocketHandler

from . import state
from .agent import AgentUnavailable

__all__ = ["CONTENTS_SCHEMA", "KERNEL_SCHEMA", "Auditor"]

log = logging.getLogger("fetchml_jupyter")

CONTENTS_SCHEMA = "https://events.jupyter.org/jupyter_server/contents_service/v1"
KERNEL_SCHEMA = "https://events.jupyter.org/jupyter_server/kernel_actions/v1"
_CONTENT_ACTIONS = {"get": "jupyter.open", "save": "jupyter.save", "rename": "jupyter.rename",
                    "copy": "jupyter.copy", "delete": "jupyter.delete", "create": "jupyter.create",
                    "upload": "jupyter.upload"}
_MAX_QUEUE = 10000
_DEDUP_S = 60.0


class Auditor:
    """Queues events and sends them to the agent in batches."""

    def __init__(self, root_dir: str = "") -> None:
        self.root_dir = root_dir
        self._queue: list[dict[str, Any]] = []
        self._seen: dict[tuple[str, ...], float] = {}
        self._sending = False
        self._timer = PeriodicCallback(self.flush, 1000)

    def start(self) -> None:
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    def record(self, user: str, action: str, **details: Any) -> None:
        if len(self._queue) >= _MAX_QUEUE:
            self._queue.pop(0)
        self._queue.append({"user": user, "action": action, "at": round(time.time(), 3),
                            **{k: v for k, v in details.items() if v is not None}})

    def once_a_minute(self, key: tuple[str, ...]) -> bool:
        now = time.monotonic()
        if now - self._seen.get(key, -_DEDUP_S) < _DEDUP_S:
            return False
        if len(self._seen) > 5000:
            self._seen = {k: t for k, t in self._seen.items() if now - t < _DEDUP_S}
        self._seen[key] = now
        return True

    def denied(self, user: str, action: str, resource: str, path: str) -> None:
        if self.once_a_minute(("denied", user, action, resource)):
            self.record(user, "jupyter.denied", outcome="denied", permission=f"{action}:{resource}", path=path)

    async def flush(self) -> None:
        if self._sending or not self._queue:
            return
        batch, self._queue = self._queue[:500], self._queue[500:]
        self._sending = True
        try:
            await state.resolver().client.post("/v1/events", {"events": batch})
        except AgentUnavailable as exc:
            log.warning("fetchml_jupyter: audit events kept for later: %s", exc)
            self._queue[:0] = batch
        finally:
            self._sending = False

    # -- jupyter_events listeners -------------------------------------------------------------

    async def on_contents(self, logger: Any, schema_id: str, data: dict[str, Any]) -> None:
        who = _person()
        if who is None:
            return
        handler, user = who
        action = _CONTENT_ACTIONS.get(str(data.get("action")))
        if action is None:
            return
        path = str(data.get("path") or "")
        if action == "jupyter.open":
            if handler.request.method != "GET":
                return  # a save or rename reads the model back: not an open
            if handler.get_query_argument("content", "1") == "0" or handler.get_query_argument("download", ""):
                return  # metadata only, or a download (recorded as such at the end of the request)
            if os.path.isdir(os.path.join(self.root_dir, path.lstrip("/"))):
                return  # a directory listing is not opening a file
        self.record(user.username, action, path=path, source_path=data.get("source_path"))

    async def on_kernel(self, logger: Any, schema_id: str, data: dict[str, Any]) -> None:
        who = _person()
        if who is None:
            return
        self.record(who[1].username, "jupyter.kernel", kernel_action=data.get("action"),
                    kernel_id=data.get("kernel_id"), kernel_name=data.get("kernel_name"),
                    outcome="ok" if data.get("status", "success") == "success" else "error")

    # -- the end of each request --------------------------------------------------------------

    def on_request_end(self, handler: Any) -> None:
        status = handler.get_status()
        user = getattr(handler, "_jupyter_current_user", None)
        if user is None or status >= 400:
            return
        name = type(handler).__name__
        args = getattr(handler, "path_args", None) or []
        path = (getattr(handler, "path_kwargs", None) or {}).get("path") or (args[0] if args else handler.request.path)
        if name == "DocSessionHandler" and handler.request.method == "PUT":
            self.record(user.username, "jupyter.open", path=str(path), collaborative=True)
        elif handler.request.method == "GET" and handler.get_query_argument("download", "") not in ("", "0", "false"):
            self.record(user.username, "jupyter.download", path=str(path))


def _person() -> tuple[Any, Any] | None:
    """The person behind the event being emitted: an HTTP request's user; ``None`` for what a
    WebSocket-driven task (a collaboration room) does on its own."""
    req = state.REQUEST.get()
    if req is None or isinstance(req[0], WebSocketHandler):
        return None
    return req
