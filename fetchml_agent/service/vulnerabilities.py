"""Keeps the vulnerability data of ``package_management.vulnerabilities`` loaded (docs/package-policy.md).

At start the dump is read off the event loop (so the first decisions already see it), then
checked for changes every minute: the Ansible refresh job replaces the file and the agent picks
it up without a restart. ``ml status`` shows the data's state (``ok``, ``stale``, ``missing``).
The decisions themselves are the policy engine's (:mod:`fetchml_agent.policy.vulns`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ..aio import run_blocking
from ..policy.vulns import data_for
from .packages import service

if TYPE_CHECKING:
    from ..agent import Agent

__all__ = ["REFRESH_INTERVAL", "setup"]

log = logging.getLogger("fetchml.vulns")

REFRESH_INTERVAL = 60.0


async def _load(agent: Agent) -> None:
    settings = service(agent).global_policy.vulnerabilities
    if settings is None:
        return
    data = data_for(settings)
    await run_blocking(data.reload_if_changed)
    state = data.state(settings)
    if state["state"] != "ok":
        log.warning("vulnerability data %s is %s: %s; installs follow when_unknown: %s", settings.osv,
                    state["state"], state.get("reason", ""), settings.when_unknown)
    agent.extensions.setdefault("vulns_tasks", []).append(asyncio.create_task(_refresh(agent), name="vulns"))


async def _refresh(agent: Agent) -> None:
    settings = service(agent).global_policy.vulnerabilities
    assert settings is not None
    data = data_for(settings)
    while True:
        await asyncio.sleep(REFRESH_INTERVAL)
        try:
            if await run_blocking(data.reload_if_changed):
                log.info("vulnerability data %s reloaded: %d advisories", settings.osv, data.advisories)
        except Exception:  # the loop must survive an unreadable file; the state says missing
            log.exception("reloading the vulnerability data failed")


async def _stop(agent: Agent) -> None:
    for task in agent.extensions.get("vulns_tasks", []):
        task.cancel()


async def _status(agent: Agent, call: Any) -> dict[str, Any]:
    settings = service(agent).global_policy.vulnerabilities
    if settings is None:
        return {}
    return {"vulnerability_data": data_for(settings).state(settings)}


def setup(agent: Agent) -> None:
    ext = agent.extensions
    ext.setdefault("start_hooks", []).append(_load)
    ext.setdefault("shutdown_hooks", []).append(_stop)
    ext.setdefault("status_hooks", []).append(_status)
