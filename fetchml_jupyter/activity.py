"""What this JupyterLab is doing, reported to the agent: the source of idle culling.

The agent culls a workspace only when it is idle (docs/capacity.md), and it learns what the
workspace does from here, where every request and every kernel is seen:

- **requests from a person**: any HTTP request by a person (never the server's own credential, the
  agent's checks), except what JupyterLab's frontend sends on its own on a timer (the listings of
  kernels, sessions, terminals, kernel specs and directories, ``/api/me``, ``/api/status``, file
  metadata): an open browser tab that nobody looks at is not a person at work. On open WebSocket
  connections, what a person sends: kernel messages (not the ``kernel_info_request`` /
  ``comm_info_request`` a frontend sends by itself on connecting), keystrokes into a terminal,
  edits to a shared document (not cursor presence, which collaboration renews every few seconds);
- **kernels busy**: Jupyter Server's own record of each kernel's execution state (``busy`` while a
  cell runs, printing or not: a ``time.sleep(3600)`` is busy for an hour);
- **terminals busy**: a terminal whose shell has a command in the foreground (its process group is
  not the shell's).

A report (``POST /access/v1/activity``) goes out at once when something changed that makes the
workspace less idle (the first person request after a quiet interval, a kernel or terminal turning
busy), else once per interval (the agent's answer says how long: a heartbeat, so that the agent can
tell a quiet server from one that stopped reporting). Ages travel, not timestamps: the agent does
not depend on this host's clock.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any

from tornado.ioloop import PeriodicCallback

from . import state
from .agent import AgentUnavailable

__all__ = ["Activity", "is_background"]

log = logging.getLogger("fetchml_jupyter")

_BACKGROUND = re.compile(r"/api/(kernels|sessions|terminals|kernelspecs|me|status)/?$")
_CONTENTS = re.compile(r"/api/contents(/.*)?$")
_QUIET_KERNEL_MESSAGES = frozenset({"kernel_info_request", "comm_info_request"})
DEFAULT_INTERVAL = 30.0


def is_background(method: str, path: str, query: dict[str, Any], root_dir: str) -> bool:
    """Whether a request is one JupyterLab's frontend sends by itself on a timer (a listing, a
    status or metadata poll), which does not show a person at work."""
    if method not in ("GET", "HEAD"):
        return False
    if _BACKGROUND.search(path):
        return True
    m = _CONTENTS.search(path)
    if m is None:
        return False
    if query.get("content") in ("0", b"0", ["0"], [b"0"]):
        return True  # a file's metadata (checking it for changes on disk)
    rel = (m.group(1) or "").lstrip("/")
    return os.path.isdir(os.path.join(root_dir, rel)) if root_dir else not rel


class Activity:
    """Tracks requests and busy kernels/terminals; reports them to the agent (see the module docstring)."""

    def __init__(self, serverapp: Any) -> None:
        self.serverapp = serverapp
        self.root_dir = str(getattr(serverapp, "root_dir", "") or "")
        self.interval = DEFAULT_INTERVAL
        self.last_request: float | None = None  # monotonic time of the last person request
        self.person = ""
        self.kind = ""
        self._sent_at = -1e18  # monotonic time of the last report sent
        self._sent_request: float | None = None
        self._sent_busy = (0, 0)
        self._urgent = True  # the first report goes out at once
        self._sending = False
        self._timer = PeriodicCallback(self.tick, 1000)

    def start(self) -> None:
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    # -- what happens ---------------------------------------------------------------------------

    def note(self, person: str, kind: str) -> None:
        """A person did something (``kind``: api, kernel, terminal, edit)."""
        now = time.monotonic()
        if self._sent_request is None or now - self._sent_request >= self.interval:
            self._urgent = True  # the agent may think this workspace idle: tell it now
        self.last_request, self.person, self.kind = now, person, kind

    def note_request(self, handler: Any, person: str) -> None:
        req = handler.request
        if is_background(req.method, req.path, req.query_arguments, self.root_dir):
            return
        self.note(person, "api")

    def note_kernel_message(self, person: str, msg_type: str | None) -> None:
        if msg_type and msg_type not in _QUIET_KERNEL_MESSAGES:
            self.note(person, "kernel")

    # -- what is busy now -------------------------------------------------------------------------

    def _kernels(self) -> tuple[int, int]:
        km = getattr(self.serverapp, "kernel_manager", None)
        if km is None:
            return 0, 0
        total = busy = 0
        for kid in list(km.list_kernel_ids()):
            total += 1
            try:
                if getattr(km.get_kernel(kid), "execution_state", "") == "busy":
                    busy += 1
            except KeyError:
                continue
        return total, busy

    def _terminals(self) -> tuple[int, int]:
        tm = self.serverapp.web_app.settings.get("terminal_manager")
        terms = getattr(tm, "terminals", None) or {}
        busy = 0
        for term in list(terms.values()):
            proc = getattr(term, "ptyproc", None)
            try:
                if proc is not None and os.tcgetpgrp(proc.fd) != proc.pid:
                    busy += 1  # a command runs in the foreground, not the shell's prompt
            except OSError:
                continue
        return len(terms), busy

    def snapshot(self) -> dict[str, Any]:
        kernels, busy_kernels = self._kernels()
        terminals, busy_terminals = self._terminals()
        now = time.monotonic()
        return {
            "request_age_s": None if self.last_request is None else round(now - self.last_request, 3),
            "person": self.person,
            "kind": self.kind,
            "kernels": kernels,
            "busy_kernels": busy_kernels,
            "terminals": terminals,
            "busy_terminals": busy_terminals,
        }

    # -- reporting --------------------------------------------------------------------------------

    async def tick(self) -> None:
        if self._sending or not state.active():
            return
        doc = self.snapshot()
        busy = (doc["busy_kernels"], doc["busy_terminals"])
        now = time.monotonic()
        more_busy = busy[0] > self._sent_busy[0] or busy[1] > self._sent_busy[1]
        if not (self._urgent or more_busy or (busy != self._sent_busy and now - self._sent_at >= 5)
                or now - self._sent_at >= self.interval):
            return
        self._sending = True
        try:
            status, answer = await state.resolver().client.post("/v1/activity", doc, timeout=5.0)
        except AgentUnavailable as exc:
            log.debug("fetchml_jupyter: activity not reported: %s", exc)
            return
        finally:
            self._sending = False
        if status != 200:
            # 401: a warm pool member, which belongs to no workspace until it is claimed; it
            # retries each tick (cheap: one local request) so that a claim is reported at once.
            level = logging.DEBUG if status == 401 else logging.WARNING
            log.log(level, "fetchml_jupyter: the agent refused the activity report (%s: %s)", status, answer.get("message"))
            return
        self._sent_at, self._sent_request, self._sent_busy, self._urgent = now, self.last_request, busy, False
        state.learn_label(answer.get("workspace"))
        interval = answer.get("interval")
        if isinstance(interval, (int, float)) and 1 <= interval <= 3600:
            self.interval = float(interval)
