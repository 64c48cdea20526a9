"""What a workspace has installed: the startup scan, the inventory (``ml jupyter packages``).

Where the startup scan can look is the runtime's declaration (``capabilities.package_scan``):
the workspace's own layer on this host (local) or its image (docker), read with the runtime's
:class:`~fetchml_agent.runtimes.base.PackageInventory` before the workload starts; otherwise only
the environment of the workload just started, listed from inside it (a hit stops it again). A
blocked package already in the environment stops the start.
"""

from __future__ import annotations

from typing import Any

from ...aio import run_blocking
from ...core import AgentCore
from ...errors import BackendError, PolicyDenied
from ...policy.names import normalize_name
from ...policy.scan import SCAN_ARGV, check_startup, installed_from_json
from ...policy.schema import STARTUP_BLOCKED_ENV, PackagePolicy
from ...runtimes.base import PackageInventory, State, capability
from ...store.packages import list_installs
from ...store.workspaces import Workspace
from ..calls import Call
from ..context import AgentContext

__all__ = ["SCAN_TIMEOUT", "inventory", "scan_after_start", "scan_before_start", "scan_environment",
           "startup_installed"]

SCAN_TIMEOUT = 120.0


async def scan_environment(agent: AgentCore, ws: Workspace, state: State | None = None) -> list[tuple[str, str]]:
    """Every distribution the workspace's Python sees, from inside the workspace."""
    result = await agent.runtime.exec(agent.workspace_spec(ws), state or ws.runtime_state,
                                      ["python3", *SCAN_ARGV], None, None, SCAN_TIMEOUT)
    text = result.output.decode("utf-8", errors="replace")
    if result.exit_code != 0:
        raise BackendError(f"could not list the packages of workspace {ws.name} (exit code {result.exit_code})",
                           text[-1500:])
    return installed_from_json(text.strip().splitlines()[-1] if text.strip() else "")


def scans_before_start(agent: AgentCore) -> bool:
    """Whether the startup scan runs before the workload starts (``package_scan`` is not ``workload``)."""
    return agent.runtime.capabilities.package_scan != "workload"


async def startup_installed(agent: AgentCore, ws: Workspace, state: State | None = None) -> tuple[list[tuple[str, str]], str]:
    """What the startup scan looks at, and its scope: what the runtime's :class:`PackageInventory`
    lists before the start (what a kernel can import: local; its image: docker), or the
    environment of the workload just started (``state``)."""
    if scans_before_start(agent):
        found = await capability(agent.runtime, PackageInventory).inventory(agent.workspace_spec(ws))
        return found.packages, found.scope
    return await scan_environment(agent, ws, state), "environment"


async def scan_before_start(agent: AgentContext, call: Call, ws: Workspace) -> None:
    """A before-start hook: write the workspace's index files; scan where that can be done now."""
    svc = agent.services.packages
    policy = svc.policy_for(ws)
    await run_blocking(svc.index.write_index_files, ws, policy)
    if scans_before_start(agent):
        await _check_startup(agent, call, ws, policy, None)


async def scan_after_start(agent: AgentContext, call: Call, ws: Workspace, state: State) -> None:
    """An after-start hook: scan inside the workload just started where nothing could be read before."""
    if not scans_before_start(agent):
        await _check_startup(agent, call, ws, agent.services.packages.policy_for(ws), state)


async def _check_startup(agent: AgentCore, call: Call, ws: Workspace, policy: PackagePolicy, state: State | None) -> None:
    if not policy.startup_scan_list:
        return
    installed, scope = await startup_installed(agent, ws, state)
    try:
        check_startup(installed, policy, workspace=ws.name)
    except PolicyDenied as exc:
        await agent.audit(call.user.name, "package.startup_scan", ws.name, "denied", scope=scope,
                          packages=exc.fields.get("packages"), variable=STARTUP_BLOCKED_ENV)
        raise


async def inventory(agent: AgentCore, ws: Workspace) -> dict[str, Any]:
    """Installed packages with where they are and who installed them (``ml jupyter packages``)."""
    records = {r.name: r for r in await agent.store.run(list_installs, ws.id)}
    whole = await scan_environment(agent, ws)
    # On a runtime whose workspaces are their own layer over a shared base (package_scan "host":
    # the local venv), that layer is listed apart from the base.
    over_base = agent.runtime.capabilities.package_scan == "host"
    layer: dict[str, tuple[str, str]] = {}
    if over_base:
        own = await capability(agent.runtime, PackageInventory).inventory(agent.workspace_spec(ws))
        for n, v in own.packages if own.own is None else own.own:
            layer.setdefault(normalize_name(n), (n, v))
    rows: dict[str, dict[str, Any]] = {}
    for key, (n, v) in layer.items():
        rows[key] = {"name": n, "version": v, "location": "workspace"}
    for n, v in whole:  # sys.path order: the first one found is the one imported
        key = normalize_name(n)
        if key not in rows:
            rows[key] = {"name": n, "version": v, "location": "base" if over_base else "environment"}
    for key, row in rows.items():
        rec = records.get(key)
        row["normalized"] = key
        row.update({"installed_by": None, "installed_at": None, "spec": None, "forced": False,
                    "installer": None, "requested": None})
        if rec is not None and (rec.version in ("", row["version"])):
            row.update({"installed_by": rec.installed_by, "installed_at": rec.installed_at, "spec": rec.spec or None,
                        "forced": rec.forced, "installer": rec.installer, "requested": rec.requested})
    scope = "workspace layer over a shared base" if over_base else "environment"
    return {"workspace": ws.name, "scope": scope, "runtime": agent.runtime.name,
            "packages": sorted(rows.values(), key=lambda r: r["normalized"])}
