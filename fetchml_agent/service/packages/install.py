"""``ml jupyter install`` (opcode ``0x30``): every spec decided by the workspace's policy, then pip
(or conda) in the workspace, through its own index, with pip's output streamed.

An admin's ``--force`` overrides the package lists (:data:`~.policies.FORCEABLE`) for this one
install, never where packages come from; it is audited. What pip installed is recorded only once
pip succeeded, from pip's own report (:mod:`.pip_report`, run in the workspace's Python).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shlex
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ...aio import run_blocking
from ...errors import (
    BackendError,
    FetchmlError,
    InvalidArgument,
    NotFound,
    NotSupported,
    PermissionDenied,
    PolicyDenied,
)
from ...policy.engine import ALLOW, APPROVAL_REQUIRED, Decision, decide
from ...policy.names import normalize_name
from ...policy.schema import PackagePolicy
from ...policy.specs import PackageSpec, SpecKind, parse_spec
from ...protocol.opcodes import Opcode
from ...runtimes.base import ExecResult
from ...store.packages import InstallRecord, list_requests, record_installs
from ...store.workspaces import Workspace
from ..access import EDIT, require
from ..calls import Call, Result
from ..context import AgentContext
from ..registry import operation
from .args import BOOL, NAME, SPEC_KEYS, _package_and_version
from .decisions import audit_decision, refusal
from .pip_report import MARK
from .policies import FORCEABLE

__all__ = ["check_config_packages", "install_config_packages", "install_package"]

log = logging.getLogger("fetchml.packages")

INSTALL_TIMEOUT = 3600.0
_REPORT_MARK = MARK.encode()
_PIP_REPORT = (Path(__file__).with_name("pip_report.py")).read_text(encoding="utf-8")
_CONDA_SCRIPT = ('command -v conda >/dev/null 2>&1 || { echo "conda: command not found" >&2; exit 127; }; '
                 'exec conda install --yes "$@"')


def _pip_argv(parsed: list[PackageSpec]) -> list[str]:
    out: list[str] = []
    for p in parsed:
        out.extend([p.raw.strip()] if p.kind is SpecKind.NAME else shlex.split(p.raw))
    return out


def _installer_argv(parsed: list[PackageSpec], channels: list[str], conda: bool) -> list[str]:
    if conda:
        return ["sh", "-c", _CONDA_SCRIPT, "fetchml-conda", *(a for c in channels for a in ("-c", c)), *_pip_argv(parsed)]
    return ["python3", "-c", _PIP_REPORT, "--no-input", "--progress-bar", "off", *_pip_argv(parsed)]


class _PipOutput:
    """Forwards pip's output line by line as log packets, keeping back the report marker line."""

    def __init__(self, forward: Callable[[bytes], Awaitable[None]]) -> None:
        self.forward = forward
        self.partial = b""
        self.report: list[dict[str, Any]] | None = None

    async def __call__(self, chunk: bytes) -> None:
        lines = (self.partial + chunk).split(b"\n")
        self.partial = lines.pop()
        await self._emit(lines)

    async def flush(self) -> None:
        if self.partial:
            lines, self.partial = [self.partial], b""
            await self._emit(lines, final=True)

    async def _emit(self, lines: list[bytes], final: bool = False) -> None:
        out = []
        for line in lines:
            if line.startswith(_REPORT_MARK):
                try:
                    self.report = json.loads(line[len(_REPORT_MARK):])
                except ValueError:
                    log.warning("unreadable pip report line")
            else:
                out.append(line if final else line + b"\n")
        if out:
            await self.forward(b"".join(out))


def _tail(output: bytes, lines: int = 25) -> str:
    text = output.decode("utf-8", errors="replace")
    kept = [ln for ln in text.splitlines() if not ln.startswith(MARK)]
    return "\n".join(kept[-lines:])


# -- deciding ---------------------------------------------------------------------------------------


def _raw_specs(args: dict[str, Any], ws: Workspace) -> list[str]:
    raw_specs = [*args["packages"], *([s] if (s := _package_and_version(args)) else []),
                 *([args["spec"]] if args.get("spec") else [])]
    if not raw_specs:
        raise InvalidArgument("name at least one package to install", f"e.g. ml jupyter install {ws.name} numpy 'pandas==2.0.0'")
    if args["channels"] and not args["conda"]:
        raise InvalidArgument("--channel is for conda installs", "add --conda, or leave the channel out for pip")
    return raw_specs


async def _decide_all(agent: AgentContext, call: Call, ws: Workspace, raw_specs: list[str], args: dict[str, Any],
                      policy: PackagePolicy) -> tuple[list[PackageSpec], list[Decision]]:
    """Parse and decide every spec (one audit event each); an unparsable spec raises."""
    conda = args["conda"]
    approvals = agent.services.packages.approvals(ws, conda)
    parsed: list[PackageSpec] = []
    decisions: list[Decision] = []
    await call.progress(f"checking {len(raw_specs)} spec{'s' if len(raw_specs) != 1 else ''} against the package "
                        f"policy of {ws.name}")
    for raw in raw_specs:
        try:
            spec = parse_spec(raw, conda=conda)
        except InvalidArgument as exc:
            await agent.audit(call.user.name, "package.decision", ws.name, "invalid", via="install", spec=raw,
                              error=exc.message)
            raise
        d = decide(spec, policy, conda=conda, approved=approvals, channels=args["channels"], workspace=ws.name)
        await audit_decision(agent, call, ws, d, "install", conda=conda, force=args["force"])
        parsed.append(spec)
        decisions.append(d)
    return parsed, decisions


async def _forced(agent: AgentContext, call: Call, ws: Workspace, decisions: list[Decision], force: bool) -> frozenset[str]:
    """The packages ``--force`` lets through (none without it, where every spec must be allowed)."""
    refused = [d for d in decisions if not d.allowed]
    if not refused:
        return frozenset()
    if not force:
        raise refusal(await _with_denials(agent, ws, refused), f"cannot install into {ws.name}")
    fixed = [d for d in refused if d.rule not in FORCEABLE or not d.package]
    if fixed:
        raise PolicyDenied(f"--force overrides the package lists, not where packages come from: {fixed[0].reason}",
                           package=fixed[0].package, rule=fixed[0].rule, spec=fixed[0].spec)
    forced = frozenset(d.package for d in refused if d.package)
    await agent.audit(call.user.name, "package.force", ws.name, "forced", packages=sorted(forced),
                      rules=sorted({d.rule for d in refused}), specs=[d.spec for d in refused])
    await call.progress(f"--force: installing {', '.join(sorted(forced))} against the policy (audited)")
    return forced


async def _with_denials(agent: AgentContext, ws: Workspace, refused: list[Decision]) -> list[Decision]:
    """``refused``, where a package that needs approval was asked for and denied in this
    workspace: the denial, by whom and why, instead of "needs an approved request"."""
    waiting = {d.package for d in refused if d.decision == APPROVAL_REQUIRED and d.package}
    if not waiting:
        return refused
    denied = await agent.store.run(lambda c: list_requests(c, status="denied", workspace_id=ws.id))
    latest = {r["package"]: r for r in denied if r["package"] in waiting}  # oldest first: the last one wins
    out = []
    for d in refused:
        r = latest.get(d.package or "") if d.decision == APPROVAL_REQUIRED else None
        if r is not None:
            asked = shlex.quote(f"{r['package']}{r['specifier']}")
            d = dataclasses.replace(d, reason=(
                f"{d.package}: request {r['id']} ({r['package']}{r['specifier']}) was denied by {r['decided_by']}: "
                f"{r['decision_reason']}; to ask again with a new reason: ml jupyter request {ws.name} {asked} "
                "--reason='...'"))
        out.append(d)
    return out


@operation(
    Opcode.INSTALL_PACKAGE,
    routes=[("POST", "/api/v1/jupyter/workspaces/{name}/packages")],
    schema={**NAME, **SPEC_KEYS, "packages": {"type": "list", "schema": {"type": "string"}, "default": []},
            "force": BOOL},
)
async def install_package(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    """Checks every spec against the workspace's policy, then runs pip (or conda) in the workspace
    with its own index, streaming pip's output. Records what pip installed, only once pip succeeded."""
    ws = agent.find_workspace(args["name"])
    require(agent, call.user, ws, EDIT, "installing packages")
    raw_specs = _raw_specs(args, ws)
    if args["force"] and not call.user.is_admin:
        await agent.audit(call.user.name, "package.install", ws.name, "denied", specs=raw_specs, force=True,
                          reason="--force needs the admin role")
        raise PermissionDenied("permission denied: --force installs against the package policy and needs the admin role",
                               f"ask for approval instead: ml jupyter request {ws.name} SPEC --reason='...'")
    policy = agent.services.packages.policy_for(ws)
    parsed, decisions = await _decide_all(agent, call, ws, raw_specs, args, policy)
    forced = await _forced(agent, call, ws, decisions, args["force"])
    for d in decisions:
        if d.would_have is not None:
            await call.progress(f"dry run: {d.reason}")
    if not args["conda"]:
        index = await agent.services.packages.index.service()
        for name in (p.name for p in parsed if p.kind is SpecKind.NAME and p.name):
            # Fails fast on an unreachable upstream; pip then finds the page cached.
            if await index.project(name) is None:
                raise NotFound(f"{name} is not on the package index ({index.upstream})",
                               "check the name's spelling; the upstream is package_index.upstream in agent.yaml")
    return await _run_installer(agent, call, ws, parsed, args["channels"], args["conda"], forced, policy)


# -- installing -------------------------------------------------------------------------------------


async def _exec_installer(agent: AgentContext, call: Call, ws: Workspace, argv: list[str], output: _PipOutput,
                          forced: frozenset[str], policy: PackagePolicy) -> tuple[ExecResult, list[Decision]]:
    """Run the installer in the workspace, its index letting ``forced`` through; return its result
    and what the index refused (or let through in dry run) meanwhile."""
    index = agent.services.packages.index
    async with agent.lock(f"{ws.name}#packages"):
        await run_blocking(index.write_index_files, ws, policy)
        index.watch[ws.id] = []
        if forced:
            index.forced[ws.id] = forced
        try:
            result = await agent.runtime.exec(agent.workspace_spec(ws), ws.runtime_state, argv, output,
                                              {"PYTHONUNBUFFERED": "1"}, INSTALL_TIMEOUT)
        finally:
            await output.flush()
            index.forced.pop(ws.id, None)
            seen = index.watch.pop(ws.id, [])
    return result, seen


def _install_error(tool: str, ws: Workspace, result: ExecResult, seen: list[Decision], specs_text: str,
                   conda: bool, streamed: bool) -> FetchmlError:
    """Why the install failed; the installer's last lines as details unless the caller saw its
    output streamed already (``streamed``: then they would be printed twice)."""
    refused = [d for d in seen if d.decision != ALLOW]
    if refused:
        return refusal(refused, f"{tool} could not install {specs_text}: a package it needs is refused")
    if result.exit_code == 127:
        return NotSupported(f"{tool} is not available in workspace {ws.name}'s environment",
                            "install with pip; for conda use a runtime whose workspace image ships it (the local "
                            "runtime's workspaces are Python venvs)" if conda else _tail(result.output))
    return BackendError(f"{tool} install failed in {ws.name} with exit code {result.exit_code}; "
                        "nothing was recorded as installed",
                        f"{tool}'s output is above" if streamed else _tail(result.output))


def _records(report: list[dict[str, Any]] | None, parsed: list[PackageSpec], tool: str, forced: frozenset[str],
             user: str) -> list[InstallRecord]:
    """What to record: pip's report of what it installed, else (conda) what was asked for."""
    now = time.time()
    by_name = {p.name: p for p in parsed if p.name}
    if report is None:
        return [InstallRecord(n, n, "", p.raw.strip(), True, tool, n in forced, user, now) for n, p in by_name.items()]
    records = []
    for item in report:
        key = normalize_name(item["name"])
        requested = key in by_name
        records.append(InstallRecord(key, item["name"], item["version"], by_name[key].raw.strip() if requested else "",
                                     requested, tool, key in forced, user, now, str(item.get("sha256") or "")))
    return records


async def _run_installer(agent: AgentContext, call: Call, ws: Workspace, parsed: list[PackageSpec], channels: list[str],
                         conda: bool, forced: frozenset[str], policy: PackagePolicy) -> Result:
    tool = "conda" if conda else "pip"
    output = _PipOutput(call.log)
    await call.progress(f"installing with {tool} in {ws.name}" + ("" if conda else " from its package index"))
    result, seen = await _exec_installer(agent, call, ws, _installer_argv(parsed, channels, conda), output, forced, policy)
    specs_text = " ".join(p.raw.strip() for p in parsed)
    shown: set[str | None] = set()
    for d in seen:  # dry run: what the index let through that enforcement would refuse
        if d.would_have is not None and d.package not in shown:
            shown.add(d.package)
            await call.progress(f"dry run (package index): {d.reason}")
    if result.exit_code != 0:
        error = _install_error(tool, ws, result, seen, specs_text, conda, call.streams_log)
        await agent.audit(call.user.name, "package.install", ws.name, "error", specs=[p.raw for p in parsed],
                          installer=tool, exit_code=result.exit_code, error=error.message)
        raise error
    records = _records(output.report, parsed, tool, forced, call.user.name)
    if records:
        await agent.store.run(record_installs, ws.id, records)
    # "unchanged" when pip found everything satisfied: the package_installed webhook is for installs.
    await agent.audit(call.user.name, "package.install", ws.name, "ok" if records else "unchanged",
                      specs=[p.raw for p in parsed], installer=tool,
                      installed=[f"{r.display_name}=={r.version}" if r.version else r.display_name for r in records],
                      forced=sorted(forced))
    if records:
        message = "installed " + ", ".join(f"{r.display_name} {r.version}".strip() for r in records) + f" into {ws.name}"
    else:
        message = f"nothing new to install in {ws.name}: {specs_text} already satisfied"
    return Result(message, "package_install", {"workspace": ws.name, "installer": tool,
                                               "installed": [r.to_dict() for r in records], "forced": sorted(forced)})


async def check_config_packages(agent: AgentContext, call: Call, ws: Workspace) -> None:
    """A create hook: the ``packages:`` of the workspace's template or config, checked against its
    policy before it starts; a refused one stops the create (exit 5, or 6 for an approval)."""
    specs = ws.config.get("packages") or []
    if not isinstance(specs, list) or not all(isinstance(s, str) and s.strip() for s in specs):
        raise InvalidArgument("packages: must be a list of package specs (strings)", "e.g. packages: [numpy, 'pandas>=2']")
    if not specs:
        return
    policy = agent.services.packages.policy_for(ws)
    refused = []
    for raw in specs:
        d = decide(raw, policy, approved=agent.services.packages.approvals(ws), workspace=ws.name)
        if not d.allowed:
            refused.append(d)
    if refused:
        raise refusal(refused, f"the workspace config's packages: cannot be installed into {ws.name}")


async def install_config_packages(agent: AgentContext, call: Call, ws: Workspace) -> None:
    """An after-create hook: install the ``packages:`` of the workspace's template or config as
    ``ml jupyter install`` would (policy, audit, pip's output streamed). A failure leaves the
    workspace running and says how to retry."""
    specs = [s.strip() for s in ws.config.get("packages") or []]
    if not specs:
        return
    await call.progress(f"installing the workspace config's packages: {' '.join(specs)}")
    args = {"name": ws.name, "packages": specs, "force": False, "spec": None, "package": None, "version": None,
            "conda": False, "channels": []}
    try:
        result = await install_package(agent, call, args)
    except FetchmlError as exc:
        await call.progress(f"warning: {ws.name} is running, but its packages were not installed: {exc.message}; "
                            f"retry with: ml jupyter install {ws.name} {' '.join(shlex.quote(s) for s in specs)}")
        return
    await call.progress(result.message)

