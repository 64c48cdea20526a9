"""Keeps the vulnerability data of ``package_management.vulnerabilities`` loaded (docs/package-policy.md).

At start the dump is read off the event loop (so the first decisions already see it), then
checked for changes every minute: the Ansible refresh job replaces the file and the agent picks
it up without a restart. ``ml status`` shows the data's state (``ok``, ``stale``, ``missing``).
The decisions themselves are the policy engine's (:mod:`fetchml_agent.policy.vulns`). One
:class:`VulnerabilityData` per agent, whose hooks :func:`fetchml_agent.agent.build_services` adds.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ...aio import run_blocking
from ...policy.vulns import data_for
from ..calls import Call
from ..context import AgentContext

__all__ = ["REFRESH_INTERVAL", "VulnerabilityData"]

log = logging.getLogger("fetchml.vulns")

REFRESH_INTERVAL = 60.0


class VulnerabilityData:
    """The start, refresh and status of the vulnerability data (nothing when none is configured)."""

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    async def start(self, agent: AgentContext) -> None:
        settings = agent.services.packages.global_policy.vulnerabilities
        if settings is None:
            return
        data = data_for(settings)
        await run_blocking(data.reload_if_changed)
        state = data.state(settings)
        if state["state"] != "ok":
            log.warning("vulnerability data %s is %s: %s; installs follow when_unknown: %s", settings.osv,
                        state["state"], state.get("reason", ""), settings.when_unknown)
        self._task = asyncio.create_task(self._refresh(agent), name="vulns")

    async def _refresh(self, agent: AgentContext) -> None:
        settings = agent.services.packages.global_policy.vulnerabilities
        assert settings is not None
        data = data_for(settings)
        while True:
            await asyncio.sleep(REFRESH_INTERVAL)
            try:
                if await run_blocking(data.reload_if_changed):
                    log.info("vulnerability data %s reloaded: %d advisories", settings.osv, data.advisories)
            except Exception:  # the loop must survive an unreadable file; the state says missing
                log.exception("reloading the vulnerability data failed")

    async def stop(self, agent: AgentContext) -> None:
        if self._task is not None:
            self._task.cancel()

    async def status_section(self, agent: AgentContext, call: Call) -> dict[str, Any]:
        settings = agent.services.packages.global_policy.vulnerabilities
        if settings is None:
            return {}
        return {"vulnerability_data": data_for(settings).state(settings)}
