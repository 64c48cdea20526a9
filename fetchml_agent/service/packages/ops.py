"""Package queries: list (``0x31``), check (``0x32``), clear-cache (``0x37``), security-scan (``0x38``).

The security scan adds the known vulnerabilities of what is installed (:mod:`fetchml_agent.policy.vulns`)."""

from __future__ import annotations

from typing import Any

from ...errors import InvalidArgument
from ...policy.engine import ALLOW, APPROVAL_REQUIRED, DENY, check_requirements, decide, decide_name
from ...policy.scan import blocked_installed
from ...policy.schema import STARTUP_BLOCKED_ENV
from ...policy.vulns import scan as vulnerability_scan
from ...protocol.opcodes import Opcode
from ...store.packages import list_removals
from ..access import EDIT, VIEW, require
from ..calls import Call, Result
from ..context import AgentContext
from ..registry import operation
from .args import NAME, SPEC_KEYS, _one_spec
from .decisions import audit_decision
from .install import _tail
from .scans import SCAN_TIMEOUT, inventory

__all__ = ["check_package", "clear_cache", "list_packages", "security_scan"]


@operation(Opcode.LIST_PACKAGES, routes=[("GET", "/api/v1/jupyter/workspaces/{name}/packages")], schema=NAME)
async def list_packages(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    """Installed packages: where each lives and, for ``ml jupyter install``s, who and when."""
    ws = agent.find_workspace(args["name"])
    require(agent, call.user, ws, VIEW, "listing packages")
    doc = await inventory(agent, ws)
    doc["removed"] = await agent.store.run(list_removals, ws.id)  # ml jupyter uninstall (removals.py)
    return Result(f"{len(doc['packages'])} packages", "package_list", doc)


# -- 0x32 check -----------------------------------------------------------------------------------


@operation(
    Opcode.CHECK_PACKAGE,
    routes=[("POST", "/api/v1/jupyter/packages/check"), ("GET", "/api/v1/jupyter/packages/check")],
    schema={**SPEC_KEYS, "workspace": {"type": "string", "nullable": True, "default": None},
            "requirements": {"type": "string", "nullable": True, "default": None}},
)
async def check_package(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    """The decision for one spec (or each line of a requirements text), against the global policy
    or a workspace's. Answers with the decision; ``ml`` turns it into its exit code."""
    svc = agent.services.packages
    ws = None
    if args.get("workspace"):
        ws = agent.find_workspace(args["workspace"])
        require(agent, call.user, ws, VIEW, "checking packages")
    policy = svc.policy_for(ws) if ws else svc.global_policy
    conda = args["conda"]
    approvals = svc.approvals(ws, conda) if ws else None
    where = ws.name if ws else None
    if args.get("requirements") is not None:
        lines = check_requirements(args["requirements"], policy, conda=conda, approved=approvals, workspace=where)
        refused = [ln.to_dict() for ln in lines if not ln.allowed]
        summary = {ALLOW: 0, DENY: 0, APPROVAL_REQUIRED: 0, "invalid": 0}
        for ln in lines:
            summary["invalid" if ln.decision is None else ln.decision.decision] += 1
        await agent.audit(call.user.name, "package.check_list", where, "ok" if not refused else "refused",
                          summary=summary, refused=refused[:100])
        return Result(f"{len(lines)} specs checked", "package_check_list",
                      {"workspace": where, "lines": [ln.to_dict() for ln in lines], "summary": summary})
    raw = _one_spec(args, "ml jupyter check-package numpy")
    try:
        d = decide(raw, policy, conda=conda, approved=approvals, channels=args["channels"], workspace=where)
    except InvalidArgument as exc:
        await agent.audit(call.user.name, "package.decision", where, "invalid", via="check", spec=raw, error=exc.message)
        raise
    await audit_decision(agent, call, ws, d, "check", conda=conda)
    return Result(d.reason, "package_check", {**d.to_dict(), "workspace": where})


# -- 0x37 clear-cache, 0x38 security-scan ---------------------------------------------------------


@operation(Opcode.CLEAR_CACHE, routes=[("POST", "/api/v1/jupyter/workspaces/{name}/clear-cache")], schema=NAME)
async def clear_cache(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    """Forgets the index's cached pages and files (new upstream releases show at once) and empties
    the workspace's pip cache."""
    ws = agent.find_workspace(args["name"])
    require(agent, call.user, ws, EDIT, "clearing the package cache")
    removed = (await agent.services.packages.index.service()).clear_cache()
    result = await agent.runtime.exec(agent.workspace_spec(ws), ws.runtime_state, ["python3", "-m", "pip", "cache", "purge"],
                                      None, None, SCAN_TIMEOUT)
    pip_text = _tail(result.output, 3)
    await agent.audit(call.user.name, "package.cache_clear", ws.name, "ok", index_files_removed=removed,
                      pip_exit_code=result.exit_code)
    message = f"cleared the package index cache ({removed} files) and {ws.name}'s pip cache"
    return Result(message, "package_cache", {"message": message, "workspace": ws.name, "index_files_removed": removed,
                                             "pip": pip_text, "pip_exit_code": result.exit_code})


@operation(
    Opcode.SECURITY_SCAN,
    routes=[("POST", "/api/v1/jupyter/workspaces/{name}/security-scan"),
            ("GET", "/api/v1/jupyter/workspaces/{name}/security-scan")],
    schema=NAME,
)
async def security_scan(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    """The startup scan, now, plus a policy decision for every installed package."""
    svc = agent.services.packages
    ws = agent.find_workspace(args["name"])
    require(agent, call.user, ws, VIEW, "scanning packages")
    policy = svc.policy_for(ws)
    inventory_doc = await inventory(agent, ws)
    approvals = svc.approvals(ws)
    # What a kernel can import, the kernel base included (JupyterLab's server environment is no kernel's).
    scanned = [(p["name"], p["version"]) for p in inventory_doc["packages"]]
    startup_hits = blocked_installed(scanned, policy.startup_scan_list)
    findings = []
    for p in inventory_doc["packages"]:
        d = decide_name(p["name"], policy, approved=approvals, workspace=ws.name)
        if d.decision == ALLOW and d.would_have is None:
            continue
        findings.append({"name": p["name"], "version": p["version"], "location": p["location"],
                         "decision": d.decision, "would_have": d.would_have, "rule": d.rule, "reason": d.reason,
                         "installed_by": p["installed_by"], "forced": p["forced"]})
    failing = [f for f in findings if f["decision"] != ALLOW]
    vulns = vulnerability_scan(policy.vulnerabilities, inventory_doc["packages"])  # docs/package-policy.md
    ok = not startup_hits and not failing and not vulns["blocking"]
    doc = {
        "workspace": ws.name,
        "ok": ok,
        "scope": inventory_doc["scope"],
        "packages_checked": len(inventory_doc["packages"]),
        "startup_scan": {"variable": STARTUP_BLOCKED_ENV,
                         "list": sorted(policy.startup_scan_list) if policy.startup_scan else "off",
                         "found": [f"{n}=={v}" for n, v in startup_hits]},
        "findings": findings,
        "vulnerabilities": vulns,
        "policy": policy.to_dict(),
    }
    if inventory_doc["scope"] != "environment":
        doc["note"] = ("packages of the kernel base (ipykernel and pip with their dependencies, shared by the "
                       "workspaces) are listed with location 'base' and scanned like the workspace's own; "
                       "JupyterLab's server environment is not importable from a kernel and not scanned")
    await agent.audit(call.user.name, "package.scan", ws.name, "ok" if ok else "findings",
                      startup_found=doc["startup_scan"]["found"], findings=[f["name"] for f in failing],
                      vulnerabilities=[f"{v['package']}=={v['version']}:{v['id']}" for v in vulns["findings"]])
    summary = "no findings" if ok else f"{len(startup_hits) + len(failing) + vulns['blocking']} findings"
    return Result(f"security scan of {ws.name}: {summary}", "security_scan", doc)
