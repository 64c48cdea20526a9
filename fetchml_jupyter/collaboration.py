"""Live collaboration (jupyter-collaboration) under the roles: a viewer sees edits, makes none.

The collaboration WebSocket needs ``read contents`` to connect (Jupyter Server checks that). What
a client then sends is Y protocol: document updates (sync step 2 and updates), awareness (cursors,
names) and a ``save`` request. Updates and saves from a person whose role does not allow changing
the document (``write notebooks`` for a notebook, ``write contents`` for any other file) are
dropped before the room sees them, so nothing of theirs reaches the document, the other clients or
the file; awareness still flows, so others see them present. Edits that do go through are audited
as ``jupyter.edit`` (once a minute per person and document).

jupyter-collaboration has no hook for this, so the guard wraps its handler's ``on_message``: the
one place every client message passes. The version is pinned in the project's dependencies.
"""

from __future__ import annotations

import logging
from typing import Any

from . import state
from .agent import FetchmlUser

__all__ = ["install_guard", "may_change"]

log = logging.getLogger("fetchml_jupyter")

_SYNC, _RAW = 0, 2
_STEP2, _UPDATE = 1, 2


def _room_kind(handler: Any) -> str:
    parts = str(getattr(handler, "_room_id", "")).split(":")
    return parts[1] if len(parts) >= 3 else ""


def may_change(user: Any, kind: str) -> bool:
    if not isinstance(user, FetchmlUser):
        return False
    return user.allows("write", "notebooks" if kind == "notebook" else "contents")


def _path(handler: Any) -> str:
    room = getattr(handler, "room", None)
    file = getattr(room, "_file", None)
    return str(getattr(file, "path", "") or getattr(handler, "_room_id", ""))


def install_guard() -> bool:
    """Wrap the collaboration handler (when jupyter-collaboration is installed). True if done."""
    try:
        from jupyter_server_ydoc.handlers import YDocWebSocketHandler
    except ImportError:
        return False
    if getattr(YDocWebSocketHandler.on_message, "_fetchml_guard", False):
        return True
    original = YDocWebSocketHandler.on_message

    async def on_message(self: Any, message: Any) -> Any:
        data = bytes(message) if isinstance(message, (bytes, bytearray, memoryview)) else b""
        changes = (len(data) > 1 and data[0] == _SYNC and data[1] in (_STEP2, _UPDATE)) or (
            len(data) > 1 and data[0] == _RAW and b"save" in data[:16])
        if changes:
            user = getattr(self, "_jupyter_current_user", None)
            kind = _room_kind(self)
            if not may_change(user, kind):
                auditor = state.auditor()
                if auditor is not None and isinstance(user, FetchmlUser):
                    auditor.denied(user.username, "write", "notebooks" if kind == "notebook" else "contents",
                                   _path(self))
                return None  # dropped: the room, the file and the other clients never see it
            if data[0] == _SYNC and data[1] == _UPDATE:
                state.note_person(user, "edit")  # an edit is a person at work; presence is not
            auditor = state.auditor()
            if auditor is not None and data[0] == _SYNC and data[1] == _UPDATE and kind and user is not None:
                path = _path(self)
                if auditor.once_a_minute(("edit", user.username, path)):
                    auditor.record(user.username, "jupyter.edit", path=path, collaborative=True)
        return await original(self, message)

    on_message._fetchml_guard = True  # type: ignore[attr-defined]
    YDocWebSocketHandler.on_message = on_message  # type: ignore[method-assign]
    return True
