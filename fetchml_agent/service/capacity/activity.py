"""What each running workspace's JupyterLab last reported about itself (``POST /access/v1/activity``).

The reports come from the ``fetchml_jupyter`` extension (``fetchml_jupyter/activity.py`` says what
counts as a person's request and what as busy). Times are this agent's: a report carries ages,
turned into instants on arrival. Kept in memory: after an agent restart every server reports
again within one interval, and until then the culler counts the workspace as active.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ...errors import InvalidArgument

__all__ = ["ActivityBook", "Seen"]

_KINDS = frozenset({"api", "kernel", "terminal", "edit", ""})


@dataclass
class Seen:
    """One workspace's latest report, in agent time."""

    reported_at: float
    request_at: float | None = None  # a person's last request to JupyterLab
    person: str = ""
    kind: str = ""  # what it was: api, kernel, terminal, edit
    kernels: int = 0
    busy_kernels: int = 0
    terminals: int = 0
    busy_terminals: int = 0
    busy_at: float | None = None  # the last report that saw a kernel or a terminal busy

    @property
    def busy(self) -> bool:
        return bool(self.busy_kernels or self.busy_terminals)


def _count(body: dict[str, Any], key: str) -> int:
    value = body.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100000:
        raise InvalidArgument(f"{key}: expected a count")
    return value


class ActivityBook:
    """The latest report of every workspace (by id)."""

    def __init__(self) -> None:
        self.seen: dict[str, Seen] = {}

    def report(self, workspace_id: str, body: dict[str, Any], now: float | None = None) -> Seen:
        """Record a report (validated: a bad one raises InvalidArgument and changes nothing)."""
        now = time.time() if now is None else now
        age = body.get("request_age_s")
        if age is not None and (isinstance(age, bool) or not isinstance(age, (int, float)) or not 0 <= age < 1e9):
            raise InvalidArgument("request_age_s: expected a number of seconds or null")
        person, kind = body.get("person") or "", body.get("kind") or ""
        if not isinstance(person, str) or len(person) > 64 or kind not in _KINDS:
            raise InvalidArgument("person, kind: expected a user name and one of api, kernel, terminal, edit")
        seen = Seen(
            reported_at=now,
            request_at=None if age is None else now - float(age),
            person=person,
            kind=kind,
            kernels=_count(body, "kernels"),
            busy_kernels=_count(body, "busy_kernels"),
            terminals=_count(body, "terminals"),
            busy_terminals=_count(body, "busy_terminals"),
        )
        before = self.seen.get(workspace_id)
        seen.busy_at = now if seen.busy else (before.busy_at if before else None)
        if before is not None and before.request_at is not None and (
                seen.request_at is None or seen.request_at < before.request_at):
            # A restarted server forgot; the agent did not.
            seen.request_at, seen.person, seen.kind = before.request_at, before.person, before.kind
        self.seen[workspace_id] = seen
        return seen

    def get(self, workspace_id: str) -> Seen | None:
        return self.seen.get(workspace_id)

    def forget(self, workspace_id: str) -> None:
        self.seen.pop(workspace_id, None)
