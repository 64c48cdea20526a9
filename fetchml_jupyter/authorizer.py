"""What a person may do: the ``(action, resource)`` pairs the agent allowed them, enforced here.

Jupyter Server asks :meth:`FetchmlAuthorizer.is_authorized` before every REST handler and
WebSocket. Two requests are narrowed first (the agent's role table has the pairs):

- saving an existing notebook, or its checkpoints, is ``write notebooks`` (a collaborator may),
  where creating, renaming, deleting or saving any other file stays ``write contents`` (editor);
- opening a document for live collaboration (``PUT /api/collaboration/session/...``) is reading
  it; undo/redo and forks of a live notebook are ``write notebooks``.

A refusal answers 403 naming the role needed and is audited (once a minute per person and pair).
``/api/me`` only *asks* which pairs are allowed: it gets ``False`` quietly.

JupyterLab's own settings API (``PUT /lab/api/settings/...``, jupyterlab_server) asks no
authorizer at all: :func:`install_settings_guard` makes saving a setting ``write config``
(editor), as Jupyter Server's ``/api/config`` is. The layout API (``/lab/api/workspaces``) stays
open to everyone with a role: every frontend saves its open tabs there.
"""

from __future__ import annotations

import os
from typing import Any

from jupyter_server.auth import Authorizer, User
from tornado import web

from . import state
from .agent import FetchmlUser

__all__ = ["FetchmlAuthorizer", "denial_message", "install_settings_guard", "refine"]

_NOTEBOOK_HANDLERS = {"ContentsHandler", "CheckpointsHandler", "ModifyCheckpointsHandler", "TrustNotebooksHandler"}
_COLLAB_READ = {"DocSessionHandler"}
_COLLAB_WRITE = {"UndoRedoHandler", "DocForkHandler"}


def _existing_notebook(handler: Any) -> bool:
    path = (getattr(handler, "path_kwargs", None) or {}).get("path") or ""
    if not path.endswith(".ipynb"):
        return False
    root = getattr(getattr(handler, "contents_manager", None), "root_dir", "") or ""
    full = os.path.normpath(os.path.join(root, path.lstrip("/")))
    return full.startswith(os.path.normpath(root)) and os.path.isfile(full)


def refine(handler: Any, action: str, resource: str) -> tuple[str, str]:
    """The pair the role table is asked about for this request (see the module docstring)."""
    name = type(handler).__name__
    if resource == "contents":
        if name in _COLLAB_READ:
            return "read", "contents"
        if name in _COLLAB_WRITE and action == "write":
            return "write", "notebooks"
        if action == "write" and name in _NOTEBOOK_HANDLERS and handler.request.method in ("PUT", "POST", "DELETE"):
            if name != "ContentsHandler" or handler.request.method == "PUT":
                if _existing_notebook(handler):
                    return "write", "notebooks"
    return action, resource


def denial_message(user: FetchmlUser, action: str, resource: str) -> str:
    needed = user.needed.get(f"{action}:{resource}")
    you = f"you are {user.role}" if user.role else "you have no role here"
    if needed:
        return f"permission denied: {action} on {resource} needs the {needed} role in this workspace ({you})"
    return f"permission denied: no workspace role allows {action} on {resource} ({you})"


class FetchmlAuthorizer(Authorizer):
    """Allows exactly the pairs in the person's answer from the agent."""

    def is_authorized(self, handler: web.RequestHandler, user: User, action: str, resource: str) -> bool:
        if not isinstance(user, FetchmlUser):
            return False
        action, resource = refine(handler, action, resource)
        if user.allows(action, resource):
            return True
        if type(handler).__name__ == "IdentityHandler":  # /api/me asks, it does not gate
            return False
        auditor = state.auditor()
        if auditor is not None:
            auditor.denied(user.username, action, resource, handler.request.path)
        raise web.HTTPError(403, denial_message(user, action, resource))


def install_settings_guard() -> bool:
    """Make JupyterLab's settings API ask the authorizer before saving (``write config``).
    True if done (jupyterlab_server is installed)."""
    try:
        from jupyterlab_server.settings_handler import SettingsHandler
    except ImportError:
        return False
    if getattr(SettingsHandler.put, "_fetchml_guard", False):
        return True
    original = SettingsHandler.put

    def put(self: Any, schema_name: str) -> Any:
        if not self.authorizer.is_authorized(self, self.current_user, "write", "config"):
            raise web.HTTPError(403)
        return original(self, schema_name)

    put._fetchml_guard = True  # type: ignore[attr-defined]
    SettingsHandler.put = put  # type: ignore[method-assign]
    return True
