"""``ml jupyter install|uninstall|packages|check-package|request|review|approve|deny|clear-cache|security-scan``.

Exit codes follow :mod:`fetchml_agent.errors`: ``check-package`` exits 0 when the spec would
install, 5 when the policy denies it and 6 when it needs an approved request; ``security-scan``
exits 5 when it finds something. Specs that start with ``-`` (``-U``, ``--pre``) go after ``--``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..errors import ApprovalRequired, InvalidArgument, PolicyDenied
from ..protocol.opcodes import Opcode
from .output import emit_json, human_age, print_kv, print_table, status_text

__all__ = ["register"]

_EXIT = {"allow": 0, "deny": PolicyDenied.exit_code, "approval_required": ApprovalRequired.exit_code}
_SHOWN = {"allow": "allowed", "deny": "DENIED", "approval_required": "needs approval"}


def cmd_install(ctx: Any) -> int:
    a = ctx.args
    reply = ctx.client.call(Opcode.INSTALL_PACKAGE, {"name": a.name, "packages": a.specs, "conda": a.conda,
                                                     "force": a.force, "channels": a.channel or None}, timeout=None)
    if ctx.json:
        emit_json(reply.data)
    else:
        print(reply.message)
    return 0


def cmd_build(ctx: Any) -> int:
    a = ctx.args
    reply = ctx.client.call(Opcode.BUILD_IMAGE, {"name": a.image, "base": a.base, "packages": [a.packages],
                                                 "gpu_support": a.gpu_support}, timeout=None)
    if ctx.json:
        emit_json(reply.data)
    else:
        print(reply.message)
    return 0


def cmd_packages(ctx: Any) -> int:
    a = ctx.args
    doc = ctx.client.call(Opcode.LIST_PACKAGES, {"name": a.name}, timeout=300).data
    if ctx.json:
        emit_json(doc)
        return 0
    rows = doc["packages"]
    shown = rows if a.all else [r for r in rows if r["location"] != "base" or r["installed_by"]]
    print_table(
        ["package", "version", "location", "installed by", "when", "spec"],
        [[r["name"], r["version"], r["location"], _by(r), human_age(r["installed_at"]), r["spec"]] for r in shown],
        empty=f"nothing installed in {doc['workspace']} yet: ml jupyter install {doc['workspace']} PACKAGE",
    )
    hidden = len(rows) - len(shown)
    if hidden:
        print(f"(and {hidden} packages of the kernel base: --all lists them)")
    if doc.get("removed"):
        print("\nremoved:")
        print_table(["package", "version", "removed by", "when"],
                    [[r["name"], r["version"], r["removed_by"], human_age(r["removed_at"])] for r in doc["removed"]])
    return 0


def cmd_uninstall(ctx: Any) -> int:
    a = ctx.args
    reply = ctx.client.call(Opcode.UNINSTALL_PACKAGE, {"name": a.name, "packages": a.packages}, timeout=None)
    if ctx.json:
        emit_json(reply.data)
    else:
        print(reply.message)
    return 0


def _by(row: dict[str, Any]) -> str:
    if row["installed_by"]:
        return row["installed_by"] + (" (--force)" if row["forced"] else "")
    return "inside the workspace" if row["location"] == "workspace" else "-"


def cmd_check(ctx: Any) -> int:
    a = ctx.args
    body: dict[str, Any] = {"workspace": a.workspace, "conda": a.conda, "channels": a.channel or None}
    if a.requirements:
        if a.spec:
            raise InvalidArgument("give a SPEC or --requirements FILE, not both")
        body["requirements"] = _read(a.requirements)
    elif not a.spec:
        raise InvalidArgument("name a package to check, e.g. ml jupyter check-package numpy")
    else:
        body["spec"] = a.spec
    reply = ctx.client.call(Opcode.CHECK_PACKAGE, body)
    doc = reply.data
    if "lines" in doc:
        return _print_lines(ctx, doc)
    if ctx.json:
        emit_json({k: doc[k] for k in ("decision", "package", "rule", "reason", "spec", "workspace", "dry_run")
                   if k in doc})
    else:
        print(f"{doc['package'] or doc['spec']}: {_SHOWN[doc['decision']]} ({doc['rule']})")
        print(f"  {doc['reason']}")
    return _EXIT[doc["decision"]]


def _print_lines(ctx: Any, doc: dict[str, Any]) -> int:
    # The worst line decides the exit code: a denial, then an invalid line, then a needed approval.
    outcomes = {"invalid" if "error" in ln else ln["decision"] for ln in doc["lines"]}
    worst = next((code for outcome, code in (("deny", PolicyDenied.exit_code), ("invalid", InvalidArgument.exit_code),
                                             ("approval_required", ApprovalRequired.exit_code)) if outcome in outcomes), 0)
    if ctx.json:
        emit_json(doc)
        return worst
    print_table(
        ["line", "spec", "decision", "rule", "reason"],
        [[f"{ln['source']}:{ln['line']}", ln["text"],
          "invalid" if "error" in ln else _SHOWN[ln["decision"]],
          ln.get("rule"), (ln["error"]["message"] if "error" in ln else ln["reason"])[:90]] for ln in doc["lines"]],
        empty="no specs in the file",
    )
    print(", ".join(f"{n} {k}" for k, n in doc["summary"].items()))
    return worst


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as fh:
            return fh.read()
    except OSError as exc:
        raise InvalidArgument(f"{path}: cannot read the requirements file ({exc.strerror})") from None


def cmd_request(ctx: Any) -> int:
    a = ctx.args
    reply = ctx.client.call(Opcode.REQUEST_PACKAGE, {"name": a.name, "spec": a.spec, "reason": a.reason,
                                                     "conda": a.conda})
    emit_json(reply.data) if ctx.json else print(reply.data["message"])
    return 0


def cmd_review(ctx: Any) -> int:
    a = ctx.args
    doc = ctx.client.call(Opcode.REVIEW_REQUESTS, {"pending": a.pending, "workspace": a.workspace}).data
    if ctx.json:
        emit_json(doc)
        return 0
    rows = []
    for r in doc["requests"]:
        who = sorted({q["requester"] for q in r["requesters"]})
        why = "; ".join(f"{q['requester']}: {q['reason']}" for q in r["requesters"] if q["reason"])
        decision = f"{r['decided_by']}: {r['decision_reason']}" if r["decided_by"] and r["decision_reason"] else \
            (r["decided_by"] or "")
        rows.append([r["id"], r["workspace"], r["package"] + (r["specifier"] or "") + (" (conda)" if r["conda"] else ""),
                     status_text(r["status"]), ", ".join(who), why[:60], decision[:60], human_age(r["created_at"])])
    empty = "no pending requests" if a.pending else ("you have made no requests" if doc["mine"] else "no requests")
    print_table(["id", "workspace", "package", "status", "requested by", "reasons", "decision", "asked"], rows,
                empty=empty)
    return 0


def cmd_decide(opcode: Opcode) -> Any:
    def run(ctx: Any) -> int:
        a = ctx.args
        reply = ctx.client.call(opcode, {"request_id": a.request_id, "reason": a.reason})
        emit_json(reply.data) if ctx.json else print(reply.data["message"])
        return 0

    return run


def cmd_clear_cache(ctx: Any) -> int:
    reply = ctx.client.call(Opcode.CLEAR_CACHE, {"name": ctx.args.name}, timeout=300)
    emit_json(reply.data) if ctx.json else print(reply.data["message"])
    return 0


def cmd_scan(ctx: Any) -> int:
    doc = ctx.client.call(Opcode.SECURITY_SCAN, {"name": ctx.args.name}, timeout=300).data
    if ctx.json:
        emit_json(doc)
        return 0 if doc["ok"] else PolicyDenied.exit_code
    startup = doc["startup_scan"]
    listed = startup["list"] if startup["list"] == "off" else ", ".join(startup["list"]) or "(empty)"
    print_kv([
        ("workspace", doc["workspace"]),
        ("result", "ok" if doc["ok"] else "FINDINGS"),
        ("scanned", f"{doc['packages_checked']} packages ({doc['scope']})"),
        ("startup scan list", f"{listed}  [{startup['variable']}]"),
        ("startup scan found", ", ".join(startup["found"]) or "nothing"),
    ])
    if doc["findings"]:
        print()
        print_table(
            ["package", "version", "location", "decision", "rule", "installed by"],
            [[f["name"], f["version"], f["location"],
              f"allow (dry run: {f['would_have']})" if f["would_have"] else f["decision"], f["rule"],
              (f["installed_by"] or "-") + (" (--force)" if f["forced"] else "")] for f in doc["findings"]],
        )
    _print_vulnerabilities(doc.get("vulnerabilities") or {})
    if doc.get("note"):
        print(f"\nnote: {doc['note']}")
    return 0 if doc["ok"] else PolicyDenied.exit_code


def _print_vulnerabilities(v: dict[str, Any]) -> None:
    if not v.get("configured"):
        return
    data = v["data"]
    print()
    if data["state"] == "ok":
        print(f"known vulnerabilities: {data['advisories']} advisories, data {data['age']} old ({data['path']})")
    else:
        print(f"known vulnerabilities: data {data['state'].upper()}: {data.get('reason', '')} ({data['path']}); "
              f"installs follow when_unknown: {data['when_unknown']}")
    if v["findings"]:
        print_table(
            ["package", "version", "advisory", "severity", "fixed in", "action", "summary"],
            [[f["package"], f["version"], f["id"], f["severity"] + (f" {f['score']}" if f.get("score") else ""),
              f["fixed_in"] or "none yet", "ignored" if f["ignored"] else ("BLOCKED" if f["blocking"] else "reported"),
              (f["summary"] or "")[:50]] for f in v["findings"]],
        )
    elif data["state"] == "ok":
        print("no installed version has a known vulnerability")


def _print_status(doc: dict[str, Any]) -> None:
    p = doc.get("packages")
    if not p:
        return
    scan = p["startup_scan"] if p["startup_scan"] == "off" else (", ".join(p["startup_scan"]) or "(empty)")
    line = f"packages: policy {p['mode']}, {p['blocked_packages']} blocked, startup scan {scan}"
    if "pending_requests" in p:
        line += f", {p['pending_requests']} pending requests"
    print(line + (f"; index upstream {p['upstream']}" if p.get("upstream") else ""))
    v = doc.get("vulnerability_data")
    if v:
        detail = f"{v['advisories']} advisories, {v['age']} old" if v["state"] == "ok" else v.get("reason", "")
        print(f"vulnerability data: {v['state']} ({detail}; {v['path']}; when_unknown: {v['when_unknown']})")


def _install_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="workspace name")
    p.add_argument("specs", nargs="+", metavar="SPEC", help="e.g. numpy 'pandas==2.0.0'")
    p.add_argument("--conda", action="store_true", help="install with conda (channels must be trusted)")
    p.add_argument("-c", "--channel", action="append", help="conda channel (with --conda; repeatable)")
    p.add_argument("--force", action="store_true", help="admin only: install despite the package lists (audited)")


def _build_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="name of the new image, e.g. custom-image or team/img:1")
    p.add_argument("--base", required=True, help="base image (must be in the agent's allowed bases)")
    p.add_argument("--packages", required=True, help='space-separated specs, e.g. "numpy pandas"')
    p.add_argument("--gpu-support", action="store_true", help="add what the NVIDIA container runtime needs")


def _packages_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="workspace name")
    p.add_argument("--all", action="store_true", help="also list the kernel base's packages (ipykernel, pip and their dependencies)")


def _check_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", nargs="?", metavar="SPEC", help="a pip (or, with --conda, conda) spec")
    p.add_argument("--workspace", help="check against this workspace's policy and approvals")
    p.add_argument("--conda", action="store_true", help="SPEC is a conda spec")
    p.add_argument("-c", "--channel", action="append", help="conda channel (with --conda)")
    p.add_argument("-r", "--requirements", metavar="FILE", help="check every line of a requirements file (- = stdin)")


def _request_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="workspace name")
    p.add_argument("spec", metavar="SPEC", help="package, optionally with a version range: 'custom-package>=1,<2'")
    p.add_argument("--reason", default="", help="why you need it (the admin sees it)")
    p.add_argument("--conda", action="store_true", help="a conda package")


def _review_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pending", action="store_true", help="admin: only the requests waiting for a decision")
    p.add_argument("--workspace", help="only this workspace's requests")


def _approve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("request_id", metavar="REQUEST_ID", help="the request's id (ml jupyter review --pending lists them)")
    p.add_argument("--reason", default="", help="a note for the requester")


def _deny_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("request_id", metavar="REQUEST_ID", help="the request's id (ml jupyter review --pending lists them)")
    p.add_argument("--reason", help="why (the requester sees it); required")


def _uninstall_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="workspace name")
    p.add_argument("packages", nargs="+", metavar="NAME", help="installed package names")


def _name(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="workspace name")


def register(jupyter: Any, top: Any) -> None:
    from .workspaces import _STATUS_PRINTERS

    _STATUS_PRINTERS.append(_print_status)
    jupyter.command("install", cmd_install, _install_args, help="install packages into a workspace (policy checked)",
                    description="Check each spec against the workspace's package policy, then install with pip (or "
                                "conda) from the workspace's package index. Specs that start with '-' go after '--'.")
    jupyter.command("build", cmd_build, _build_args, help="build a custom workspace image (docker runtime)",
                    description="Build IMAGE from --base with --packages pip-installed through the agent's package "
                                "index. Every package is checked against the policy before the build starts; the "
                                "build log streams. Then: ml jupyter create NAME --image=IMAGE.")
    jupyter.command("packages", cmd_packages, _packages_args, help="packages installed in a workspace, with who and when")
    jupyter.command("check-package", cmd_check, _check_args, help="would this package install? (exit 0/5/6)",
                    description="Exit 0: it would install; 5: the policy denies it; 6: it needs an approved request.")
    jupyter.command("request", cmd_request, _request_args, help="ask an admin to approve a package for a workspace")
    jupyter.command("review", cmd_review, _review_args, help="package requests and their decisions",
                    description="Admins see every request; others see the requests they made.")
    jupyter.command("approve", cmd_decide(Opcode.APPROVE_REQUEST), _approve_args,
                    help="admin: approve a package request")
    jupyter.command("deny", cmd_decide(Opcode.DENY_REQUEST), _deny_args,
                    help="admin: deny a package request (--reason required)")
    jupyter.command("clear-cache", cmd_clear_cache, _name,
                    help="clear the package index cache and the workspace's pip cache")
    jupyter.command("uninstall", cmd_uninstall, _uninstall_args, help="remove packages from a workspace (audited)",
                    description="Run pip uninstall in the workspace's environment; ml jupyter packages lists what "
                                "was removed, when and by whom.")
    jupyter.command("security-scan", cmd_scan, _name,
                    help="scan a workspace's packages against the policy (exit 5 on findings)")
