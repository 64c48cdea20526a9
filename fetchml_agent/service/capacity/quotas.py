"""Per-user and per-team quotas (agent.yaml ``quotas:``): what is in use, and the check.

A quota is charged to a workspace's *owner*, whoever asks (a collaborator's restart counts against
the owner), and to every team of the owner that has limits. The check compares what the owner (or
the team's members together) would hold after the operation with the limits, and refuses only
what would add to a count that is over its limit: lowering a quota never stops anything, and a
scale down is allowed even while over.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ...errors import QuotaExceeded
from ...runtimes.base import Resources
from ...store.workspaces import Workspace
from ...units import format_size_mb
from ..context import AgentContext
from ..workspaces import ACTIVE
from .settings import QUOTA_KEYS, QuotaLimits, QuotaSettings

__all__ = ["Usage", "check_quota", "usage_of"]

_WHAT = {"workspaces": "own", "running": "run", "cpu": "use", "memory": "use", "gpu": "hold"}


@dataclass
class Usage:
    """What a set of workspaces holds: counts and the resources of the running ones."""

    workspaces: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)
    cpu: float = 0.0
    memory_mb: int = 0
    gpu: int = 0

    def add(self, ws: Workspace, resources: Resources, running: bool) -> None:
        self.workspaces.append(ws.name)
        if running:
            self.running.append(ws.name)
            self.cpu += resources.cpu or 0.0
            self.memory_mb += resources.memory_mb or 0
            self.gpu += resources.gpu

    def value(self, key: str) -> float:
        if key in ("workspaces", "running"):
            return len(self.workspaces if key == "workspaces" else self.running)
        return float(self.memory_mb if key == "memory" else getattr(self, key))

    def to_dict(self) -> dict[str, Any]:
        return {"workspaces": len(self.workspaces), "running": len(self.running), "running_workspaces": self.running,
                "cpu": round(self.cpu, 3), "memory_mb": self.memory_mb, "gpu": self.gpu}


def usage_of(workspaces: Iterable[Workspace], member: Callable[[Workspace], bool], *,
             exclude: str | None = None) -> Usage:
    """What the workspaces for which ``member`` is true hold now (``exclude``: a workspace id left out)."""
    u = Usage()
    for w in workspaces:
        if w.id != exclude and member(w):
            u.add(w, Resources.from_dict(w.resources), w.status in ACTIVE)
    return u


def _show(key: str, value: float) -> str:
    if key == "memory":
        return format_size_mb(int(value)) if value else "0"
    if key == "cpu":
        return f"{value:g} CPUs"
    if key == "gpu":
        return f"{int(value)} GPUs"
    return f"{int(value)} workspaces" + (" running" if key == "running" else "")


def _scopes(agent: AgentContext, settings: QuotaSettings, owner: str) -> list[tuple[str, str, QuotaLimits, Callable[[Workspace], bool]]]:
    out: list[tuple[str, str, QuotaLimits, Callable[[Workspace], bool]]] = []
    where = f"quotas.users.{owner}" if owner in settings.users else "quotas.default"
    out.append(("user " + owner, where, settings.for_user(owner), lambda w: w.owner == owner))
    user = agent.users.get(owner)
    for team in sorted(user.teams if user is not None else ()):
        limits = settings.teams.get(team)
        if limits is None or limits.empty:
            continue

        def in_team(w: Workspace, team: str = team) -> bool:
            u = agent.users.get(w.owner)
            return u is not None and team in u.teams

        out.append((f"team {team}", f"quotas.teams.{team}", limits, in_team))
    return out


def check_quota(agent: AgentContext, settings: QuotaSettings, ws: Workspace, resources: Resources, *,
                new: bool, running: bool) -> None:
    """Raise :class:`QuotaExceeded` when ``ws`` (new, or with new ``resources``, or about to run)
    takes its owner or a team of theirs past a limit that it adds to."""
    if not settings.enabled:
        return
    for who, where, limits, member in _scopes(agent, settings, ws.owner):
        others = usage_of(agent.workspaces.values(), member, exclude=ws.id)
        before = usage_of(agent.workspaces.values(), member)
        after = usage_of(agent.workspaces.values(), member, exclude=ws.id)
        after.add(ws, resources, running)
        for key in QUOTA_KEYS:
            limit = limits.get(key)
            if limit is None or after.value(key) <= limit or (not new and after.value(key) <= before.value(key)):
                continue
            held = others.running if key != "workspaces" else others.workspaces
            raise QuotaExceeded(
                f"quota: {who} may {_WHAT[key]} at most {_show(key, limit)} ({where}.{key}); "
                f"in use: {_show(key, others.value(key))}" + (f" ({', '.join(held)})" if held else "")
                + f", and {ws.name} asks for {_show(key, after.value(key) - others.value(key))} more",
                "stop or delete a workspace (ml jupyter stop NAME), ask for less, or ask an admin to raise the quota",
                quota={"scope": who, "key": key, "setting": f"{where}.{key}"},
                limit=limit,
                in_use=others.to_dict(),
            )
