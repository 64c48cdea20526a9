"""Kernel WebSocket connections that audit executions and stop at a lost role.

Each ``execute_request`` a person sends is noted (message id, who, when); its ``execute_reply``
closes the record: ``jupyter.execute`` with the notebook (the kernel's session path), the kernel,
the start time, the duration and the status. The code is never recorded. A message from a person
whose role no longer allows running code is dropped and the connection closed (the watcher does
the same within a second, for connections that stay silent).

A client may close its connection before the reply has passed through it: clients that wait for
the kernel's ``idle`` status (on the iopub channel) stop there, and the reply (on the shell
channel, another socket) can reach the server after the idle status. Once the connection is
closed Jupyter Server buffers or drops what the kernel sends, so the reply never comes here.
Executions still open when the connection closes are therefore recorded at the close, with status
``closed`` and the duration up to the idle status when it was seen (else up to the close).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from jupyter_server.services.kernels.connection.base import deserialize_msg_from_ws_v1
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection

from . import state
from .agent import FetchmlUser
from .watcher import CLOSE_CODE

__all__ = ["FetchmlKernelConnection"]

_V1 = "v1.kernel.websocket.jupyter.org"


class FetchmlKernelConnection(ZMQChannelsWebsocketConnection):
    """Jupyter Server's kernel connection, plus the execution audit and the role check."""

    _pending: dict[str, tuple[float, str]]
    _idle: dict[str, float]
    _notebook: str | None = None

    def _user(self) -> FetchmlUser | None:
        user = getattr(self.websocket_handler, "_jupyter_current_user", None)
        return user if isinstance(user, FetchmlUser) else None

    def connect(self) -> Any:
        self._pending, self._idle = {}, {}
        self._lookup = asyncio.ensure_future(self._find_notebook())
        return super().connect()

    def disconnect(self) -> Any:
        try:
            return super().disconnect()
        finally:
            self._close_pending()

    async def _find_notebook(self) -> str:
        if not self._notebook:
            try:
                sm = self.websocket_handler.session_manager
                model = await sm.get_session(kernel_id=self.kernel_id)
                self._notebook = model.get("path") or model.get("notebook", {}).get("path")
            except Exception:  # no session (yet): a kernel started on its own
                self._notebook = None
        return self._notebook or ""

    def _header(self, message: Any) -> dict[str, Any] | None:
        try:
            if self.subprotocol == _V1:
                _, parts = deserialize_msg_from_ws_v1(message)
                return dict(self.session.unpack(parts[0]))
            if isinstance(message, bytes):
                return None
            return dict(json.loads(message).get("header") or {})
        except Exception:
            return None

    def handle_incoming_message(self, incoming_msg: Any) -> None:
        user = self._user()
        if user is not None and not user.allows("execute", "kernels"):
            self.websocket_handler.close(CLOSE_CODE, "your role no longer allows running code here")
            return
        header = self._header(incoming_msg)
        if user is not None and header and header.get("msg_type") == "execute_request":
            if not hasattr(self, "_pending"):
                self._pending, self._idle = {}, {}
            self._pending[str(header.get("msg_id"))] = (time.time(), user.username)
        super().handle_incoming_message(incoming_msg)

    def handle_outgoing_message(self, stream: Any, outgoing_msg: list[Any]) -> None:
        pending = getattr(self, "_pending", None)
        if pending:
            channel = stream if isinstance(stream, str) else getattr(stream, "channel", None)
            if channel in ("shell", "iopub"):
                self._maybe_done(channel, outgoing_msg)
        super().handle_outgoing_message(stream, outgoing_msg)

    def _maybe_done(self, channel: str, outgoing_msg: list[Any]) -> None:
        try:
            _, parts = self.session.feed_identities(list(outgoing_msg))
            msg_type = self.session.unpack(parts[1]).get("msg_type")
            if msg_type not in ("execute_reply", "status"):
                return
            msg_id = str(self.session.unpack(parts[2]).get("msg_id"))
            if msg_id not in self._pending:
                return
            content = self.session.unpack(parts[4])
        except Exception:
            return
        if channel == "iopub":
            if msg_type == "status" and content.get("execution_state") == "idle":
                self._idle.setdefault(msg_id, time.time())
            return
        if msg_type == "execute_reply":
            ended = self._idle.pop(msg_id, time.time())
            self._schedule(self._pending.pop(msg_id), ended, content)

    def _close_pending(self) -> None:
        """The connection closed: record what is still open (see the module docstring)."""
        pending, self._pending = getattr(self, "_pending", {}), {}
        now = time.time()
        for msg_id, started in pending.items():
            self._schedule(started, self._idle.pop(msg_id, now), {"status": "closed"})

    def _schedule(self, started: tuple[float, str], ended: float, content: dict[str, Any]) -> None:
        self._records: set[asyncio.Future[None]] = getattr(self, "_records", set())
        task = asyncio.ensure_future(self._record(started, ended, content))
        self._records.add(task)
        task.add_done_callback(self._records.discard)

    async def _record(self, started: tuple[float, str], ended: float, content: dict[str, Any]) -> None:
        auditor = state.auditor()
        if auditor is None:
            return
        began, who = started
        status = str(content.get("status", ""))
        auditor.record(who, "jupyter.execute", path=await self._find_notebook(), kernel_id=self.kernel_id,
                       started_at=round(began, 3), duration_s=round(max(0.0, ended - began), 3),
                       status=status, execution_count=content.get("execution_count"),
                       outcome="error" if status in ("error", "aborted") else "ok")
