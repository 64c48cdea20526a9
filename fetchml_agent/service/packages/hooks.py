"""How the package policy takes part in other operations (registered by
:func:`fetchml_agent.agent.build_services`): validating a new workspace's ``security:`` and
``environment:``, forgetting a deleted one, ``reset --hard``, the ``ml status`` section, and the
index's start and shutdown. The startup scan's hooks are in :mod:`.scans`."""

from __future__ import annotations

import shutil
from typing import Any

from ...aio import run_blocking
from ...errors import InvalidArgument
from ...policy.schema import workspace_security_from_document
from ...store.packages import clear_installs, list_requests
from ...store.workspaces import Workspace
from ..calls import Call
from ..context import AgentContext

__all__ = ["close", "forget_workspace", "reset_hard", "start", "status_section", "validate_new_workspace"]

#: Variables a workspace's ``environment:`` may not set: they choose where installers fetch from.
_INSTALLER_VARIABLES = ("PIP_", "UV_", "CONDA")


async def validate_new_workspace(agent: AgentContext, call: Call, ws: Workspace) -> None:
    workspace_security_from_document(ws.config.get("security") or None, source=f"workspace {ws.name}", key="security")
    bad = sorted(k for k in (ws.config.get("env") or {}) if k.startswith(_INSTALLER_VARIABLES))
    if bad:
        raise InvalidArgument(
            f"environment: {', '.join(bad)} would change where installers fetch packages from",
            "the agent points pip, uv and conda at the workspace's own package index; remove these from the "
            "workspace config's or template's environment:")


async def forget_workspace(agent: AgentContext, call: Call, ws: Workspace) -> None:
    svc = agent.services.packages
    svc.forget(ws)
    await run_blocking(shutil.rmtree, svc.index.files_dir(ws), True)


async def reset_hard(agent: AgentContext, call: Call, ws: Workspace) -> None:
    await agent.store.run(clear_installs, ws.id)


async def status_section(agent: AgentContext, call: Call) -> dict[str, Any]:
    policy = agent.services.packages.global_policy
    doc: dict[str, Any] = {
        "mode": policy.mode,
        "blocked_packages": len(policy.blocked_packages),
        "startup_scan": sorted(policy.startup_scan_list) if policy.startup_scan else "off",
        "upstream": agent.services.packages.index.upstream,
    }
    if call.user.is_admin:
        doc["pending_requests"] = len(await agent.store.run(lambda c: list_requests(c, status="pending")))
    return {"packages": doc}


async def start(agent: AgentContext) -> None:
    await agent.services.packages.start()


async def close(agent: AgentContext) -> None:
    await agent.services.packages.close()
