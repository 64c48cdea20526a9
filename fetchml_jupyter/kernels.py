"""Kernel WebSocket connections that audit executions and stop at a lost role.

Each ``execute_request`` a person sends is noted (message id, who, when); its ``execute_reply``
closes the record: ``jupyter.execute`` with the notebook (the kernel's session path), the kernel,
the start time, the duration and the status. The code is never recorded. A message from a person
whose role no longer allows running code is dropped and the connection closed (the watcher does
the same within a second, for connections that stay silent).
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
    _notebook: str | None = None

    def _user(self) -> FetchmlUser | None:
        user = getattr(self.websocket_handler, "_jupyter_current_user", None)
        return user if isinstance(user, FetchmlUser) else None

    def connect(self) -> Any:
        self._pending = {}
        self._lookup = asyncio.ensure_future(self._find_notebook())
        return super().connect()

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
                self._pending = {}
            self._pending[str(header.get("msg_id"))] = (time.time(), user.username)
        super().handle_incoming_message(incoming_msg)

    def handle_outgoing_message(self, stream: Any, outgoing_msg: list[Any]) -> None:
        pending = getattr(self, "_pending", None)
        if pending:
            channel = stream if isinstance(stream, str) else getattr(stream, "channel", None)
            if channel == "shell":
                self._maybe_reply(outgoing_msg)
        super().handle_outgoing_message(stream, outgoing_msg)

    def _maybe_reply(self, outgoing_msg: list[Any]) -> None:
        try:
            _, parts = self.session.feed_identities(list(outgoing_msg))
            header = self.session.unpack(parts[1])
            if header.get("msg_type") != "execute_reply":
                return
            parent = self.session.unpack(parts[2])
            started = self._pending.pop(str(parent.get("msg_id")), None)
            if started is None:
                return
            content = self.session.unpack(parts[4])
        except Exception:
            return
        self._records: set[asyncio.Future[None]] = getattr(self, "_records", set())
        task = asyncio.ensure_future(self._record(started, time.time(), content))
        self._records.add(task)
        task.add_done_callback(self._records.discard)

    async def _record(self, started: tuple[float, str], ended: float, content: dict[str, Any]) -> None:
        auditor = state.auditor()
        if auditor is None:
            return
        began, who = started
        auditor.record(who, "jupyter.execute", path=await self._find_notebook(), kernel_id=self.kernel_id,
                       started_at=round(began, 3), duration_s=round(ended - began, 3),
                       status=str(content.get("status", "")), execution_count=content.get("execution_count"),
                       outcome="ok" if content.get("status") == "ok" else "error")
