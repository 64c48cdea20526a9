"""The capacity concern (issue #16): quotas, warm pools and idle culling, as the agent sees them.

:class:`CapacityService` implements :class:`~fetchml_agent.service.context.Capacity` for the
workspace operations (the quota check, a warm pool claim, what ``ml jupyter info`` shows) and
registers its hooks in :func:`fetchml_agent.agent.build_services`: the culler and the pools start
with the agent and stop with it, ``ml status`` gets a ``capacity`` section, a deleted workspace's
activity is forgotten. JupyterLab's activity reports arrive at ``POST /access/v1/activity``
(:mod:`fetchml_agent.access.http`), authenticated by the server's own credential.

Counters (claims, misses, culls, warnings) live in :attr:`CapacityService.counters`, a
:class:`collections.Counter` that ``ml status`` shows and a metrics module can read.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from ...runtimes.base import PoolMember, Resources
from ...store.workspaces import Workspace
from ...units import format_duration
from ..calls import Call
from ..context import AgentContext
from .activity import ActivityBook
from .culling import Culler
from .pools import PoolManager
from .quotas import check_quota, usage_of
from .settings import CapacitySettings, parse_capacity

__all__ = ["CapacityService"]


class CapacityService:
    """Quotas, warm pools and culling of one agent; see the module docstring."""

    def __init__(self, agent: AgentContext) -> None:
        self.agent = agent
        self.settings: CapacitySettings = parse_capacity(agent.config)
        self.counters: Counter[str] = Counter()
        self.activity = ActivityBook()
        self.culler = Culler(agent, self.settings.culling, self.activity, self.counters)
        self.pools = PoolManager(agent, self.settings.pools, self.counters)

    # -- lifecycle hooks ------------------------------------------------------------------------------

    async def start(self, agent: AgentContext) -> None:
        self.culler.start()
        await self.pools.start()

    async def close(self, agent: AgentContext) -> None:
        await self.pools.close()
        await self.culler.close()

    async def on_delete(self, agent: AgentContext, call: Call, ws: Workspace) -> None:
        self.activity.forget(ws.id)

    # -- what the workspace operations ask (service.context.Capacity) -------------------------------

    def check_quota(self, ws: Workspace, resources: Resources, *, new: bool, running: bool) -> None:
        check_quota(self.agent, self.settings.quotas, ws, resources, new=new, running=running)

    def reserve(self, ws: Workspace, asked: dict[str, Any]) -> PoolMember | None:
        return self.pools.reserve(ws, asked)

    async def start_reserved(self, call: Call, ws: Workspace, member: object) -> bool:
        assert isinstance(member, PoolMember)
        return await self.pools.start_reserved(call, ws, member)

    def report_activity(self, ws: Workspace, body: dict[str, Any]) -> dict[str, Any]:
        """A report of ``ws``'s JupyterLab (validated by :class:`ActivityBook`); the answer says
        how often to report and the workspace's name."""
        self.activity.report(ws.id, body)
        return {"interval": self.settings.culling.report_interval, "workspace": ws.name}

    def view(self, ws: Workspace) -> dict[str, Any]:
        """``ml jupyter info``'s activity and start: idle since, why active, the cull to come."""
        doc: dict[str, Any] = {"start": ws.config.get("start")}
        if ws.status != "running":
            return doc
        v = self.culler.verdict(ws)
        c = self.settings.culling
        doc["activity"] = {
            "idle_since": v.idle_since,
            "active_because": list(v.active),
            "will_stop_at": v.cull_at if c.enabled else None,
            "will_stop_why": v.why if c.enabled and v.cull_at else None,
            "action": ("stop" if v.why == "max_age" else c.action) if c.enabled and v.cull_at else None,
            "last_person": v.last_person or None,
            "culling": c.enabled,
        }
        return doc

    # -- ml status ------------------------------------------------------------------------------------

    async def status_section(self, agent: AgentContext, call: Call) -> dict[str, Any]:
        c = self.settings.culling
        doc: dict[str, Any] = {
            "pools": self.pools.view(),
            "culling": {
                "enabled": c.enabled,
                "idle_timeout": format_duration(c.idle_timeout) if c.idle_timeout else None,
                "gpu_idle_timeout": format_duration(c.gpu_idle_timeout) if c.gpu_idle_timeout else None,
                "max_age": format_duration(c.max_age) if c.max_age else None,
                "check_interval": format_duration(c.check_interval),
                "action": c.action,
                "last_sweep_ms": None if self.culler.last_sweep_s is None else round(self.culler.last_sweep_s * 1000, 2),
            },
            "counters": dict(self.counters),
        }
        if self.settings.quotas.enabled:
            mine = usage_of(agent.workspaces.values(), lambda w: w.owner == call.user.name)
            limits = self.settings.quotas.for_user(call.user.name)
            doc["quota"] = {"user": call.user.name, "in_use": mine.to_dict(),
                            "limits": {"workspaces": limits.workspaces, "running": limits.running, "cpu": limits.cpu,
                                       "memory_mb": limits.memory_mb, "gpu": limits.gpu}}
        return {"capacity": doc}
