"""``ml jupyter uninstall WS NAME...`` (opcode ``0x39``): remove packages from a workspace.

Policy-neutral (removing is always allowed to an editor) and audited (``package.uninstall``):
``pip uninstall -y`` runs in the workspace's environment through the runtime's exec, its output
streamed as log packets. What pip removed is recorded (name, version, who, when) and its install
record dropped; ``ml jupyter packages`` lists the removals. A package of a shared base (the local
runtime's kernel base) is not the workspace's to remove: pip leaves it, and it is reported.
"""

from __future__ import annotations

import re
import time
from typing import Any

from ...errors import BackendError, InvalidArgument
from ...policy.names import is_valid_name, normalize_name
from ...protocol.opcodes import Opcode
from ...store.packages import record_removals
from ..access import EDIT, require
from ..calls import Call, Result
from ..context import AgentContext
from ..registry import operation

__all__ = ["uninstall_packages"]

UNINSTALL_TIMEOUT = 600.0
_REMOVED = re.compile(rb"Successfully uninstalled (\S+)-([^\s-]+)\s*$", re.MULTILINE)
_NOT_INSTALLED = re.compile(rb"Skipping (\S+) as it is not installed", re.MULTILINE)
_OUTSIDE = re.compile(rb"Not uninstalling (\S+) at .*?, outside environment", re.MULTILINE)


@operation(
    Opcode.UNINSTALL_PACKAGE,
    routes=[("DELETE", "/api/v1/jupyter/workspaces/{name}/packages"),
            ("POST", "/api/v1/jupyter/workspaces/{name}/packages/uninstall")],
    schema={"name": {"type": "string", "required": True, "empty": False},
            "packages": {"type": "list", "required": True, "minlength": 1, "schema": {"type": "string"}}},
)
async def uninstall_packages(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    ws = agent.find_workspace(args["name"])
    require(agent, call.user, ws, EDIT, "removing packages")
    bad = [p for p in args["packages"] if not is_valid_name(p)]
    if bad:
        raise InvalidArgument(f"not package names: {', '.join(map(repr, bad))}",
                              f"name installed packages, e.g. ml jupyter uninstall {ws.name} numpy")
    names = list(dict.fromkeys(normalize_name(p) for p in args["packages"]))
    await call.progress(f"removing {', '.join(names)} from {ws.name}")
    async with agent.lock(f"{ws.name}#packages"):
        result = await agent.runtime.exec(agent.workspace_spec(ws), ws.runtime_state,
                                          ["python3", "-m", "pip", "uninstall", "-y", *names], call.log,
                                          {"PIP_DISABLE_PIP_VERSION_CHECK": "1"}, UNINSTALL_TIMEOUT)
        out = result.output
        removed = [(normalize_name(n.decode()), n.decode(), v.decode()) for n, v in _REMOVED.findall(out)]
        now = time.time()
        if removed:
            await agent.store.run(record_removals, ws.id, removed, call.user.name, now)
    not_installed = sorted({normalize_name(n.decode()) for n in _NOT_INSTALLED.findall(out)})
    outside = sorted({normalize_name(n.decode()) for n in _OUTSIDE.findall(out)})
    done = {r[0] for r in removed}
    if result.exit_code != 0 and not done:
        await agent.audit(call.user.name, "package.uninstall", ws.name, "error", packages=names,
                          exit_code=result.exit_code)
        raise BackendError(f"pip uninstall failed in {ws.name} with exit code {result.exit_code}",
                           out.decode("utf-8", errors="replace")[-1500:])
    await agent.audit(call.user.name, "package.uninstall", ws.name, "ok" if done else "nothing",
                      removed=[f"{r[1]}=={r[2]}" for r in removed], not_installed=not_installed,
                      not_the_workspaces=outside)
    parts = []
    if removed:
        parts.append("removed " + ", ".join(f"{r[1]} {r[2]}" for r in removed) + f" from {ws.name}")
    if not_installed:
        parts.append(f"not installed: {', '.join(not_installed)}")
    if outside:
        parts.append(f"part of the kernel base, not {ws.name}'s: {', '.join(outside)}")
    return Result("; ".join(parts) or "nothing removed", "package_uninstall",
                  {"workspace": ws.name, "removed": [{"name": r[1], "normalized": r[0], "version": r[2],
                                                      "removed_by": call.user.name, "removed_at": now} for r in removed],
                   "not_installed": not_installed, "not_the_workspaces": outside})
