"""Package requests: request (``0x33``), review (``0x34``), approve (``0x35``), deny (``0x36``).

A user asks an admin to approve a package (and version range) for one workspace; a second request
for the same one adds its requester and reason. An approval takes effect at once (the workspace's
policy and its index see it); every step is audited.
"""

from __future__ import annotations

import dataclasses
import shlex
import time
from typing import Any

from ...errors import InvalidArgument, InvalidState, NotFound, PermissionDenied, PolicyDenied
from ...policy.engine import ALLOW, DENY, decide
from ...policy.specs import SpecKind, parse_spec
from ...protocol.opcodes import Opcode
from ...store.packages import add_request, decide_request, list_requests
from ..access import USE, require
from ..calls import Call, Result
from ..context import AgentContext
from ..registry import operation
from .args import BOOL, NAME, SPEC_KEYS, _one_spec
from .decisions import audit_decision

__all__ = ["approve_request", "deny_request", "request_package", "review_requests"]


@operation(
    Opcode.REQUEST_PACKAGE,
    routes=[("POST", "/api/v1/jupyter/workspaces/{name}/package-requests")],
    schema={**NAME, **SPEC_KEYS, "reason": {"type": "string", "coerce": lambda v: (v or "").strip(), "default": ""}},
)
async def request_package(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    """Asks an admin to approve a package (and version range) for one workspace. A second request
    for the same one adds its requester and reason to the open request."""
    svc = agent.services.packages
    ws = agent.find_workspace(args["name"])
    require(agent, call.user, ws, USE, "requesting packages")
    raw = _one_spec(args, f"ml jupyter request {ws.name} custom-package --reason='...'")
    conda = args["conda"]
    spec = parse_spec(raw, conda=conda)
    if spec.kind is not SpecKind.NAME or spec.name is None:
        raise InvalidArgument(f"{raw!r}: only a package by name (and version range) can be requested",
                              "approvals are per package and version range: e.g. custom-package or 'custom-package>=1,<2'")
    policy = dataclasses.replace(svc.policy_for(ws), mode="enforce")  # what a request is for, even in dry run
    d = decide(spec, policy, conda=conda, approved=svc.approvals(ws, conda), channels=args["channels"],
               workspace=ws.name)
    await audit_decision(agent, call, ws, d, "request", conda=conda)
    if d.decision == DENY:
        raise PolicyDenied(f"{d.reason}; a request cannot change that",
                           "blocked packages and untrusted channels are not approved per workspace: an admin installs "
                           "with --force or changes the policy", package=d.package, rule=d.rule, spec=d.spec)
    if d.decision == ALLOW:
        why = "it is already approved" if d.rule == "approved_request" else "it needs no approval"
        message = f"{spec.name} can be installed in {ws.name}: {why} (ml jupyter install {ws.name} {shlex.quote(raw)})"
        return Result(message, "package_request", {"message": message, "workspace": ws.name, "package": spec.name,
                                                   "decision": d.to_dict(), "request": None})
    specifier = "" if conda else spec.specifier
    doc, created = await agent.store.run(add_request, ws.id, ws.name, spec.name, specifier, conda, call.user.name,
                                         raw, args["reason"])
    await agent.audit(call.user.name, "package.request", ws.name, "created" if created else "joined",
                      request_id=doc["id"], spec=raw, package=spec.name, specifier=specifier, reason=args["reason"])
    what = f"{spec.name}{specifier}"
    if created:
        message = f"request {doc['id']} for {what} in {ws.name} is waiting for an admin (ml jupyter review shows it)"
    else:
        message = (f"added your reason to request {doc['id']} for {what} in {ws.name} "
                   f"({len(doc['requesters'])} requests so far)")
    return Result(message, "package_request", {"message": message, "workspace": ws.name, "package": spec.name,
                                               "decision": d.to_dict(), "request": doc})


@operation(
    Opcode.REVIEW_REQUESTS,
    routes=[("GET", "/api/v1/jupyter/package-requests")],
    schema={"pending": BOOL, "workspace": {"type": "string", "nullable": True, "default": None},
            "status": {"type": "string", "nullable": True, "default": None, "allowed": ["pending", "approved", "denied"]}},
)
async def review_requests(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    """Admins: every request (``pending`` for the queue). Others: the requests they made, with
    the decisions (``pending`` needs the admin role)."""
    status = "pending" if args["pending"] else args["status"]
    ws_id = agent.find_workspace(args["workspace"]).id if args.get("workspace") else None
    if call.user.is_admin:
        requester = None
    elif args["pending"]:
        raise PermissionDenied("permission denied: reviewing pending requests needs the admin role",
                               "ml jupyter review (without --pending) shows your own requests and their decisions")
    else:
        requester = call.user.name
    requests = await agent.store.run(lambda c: list_requests(c, status=status, requester=requester, workspace_id=ws_id))
    return Result(f"{len(requests)} requests", "package_requests", {"requests": requests, "mine": requester is not None})


async def _decide(agent: AgentContext, call: Call, request_id: str, status: str, reason: str) -> dict[str, Any]:
    doc, changed = await agent.store.run(decide_request, request_id, status, call.user.name, reason)
    if doc is None:
        raise NotFound(f"no package request {request_id!r}", "ml jupyter review --pending lists the open requests")
    if not changed:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(doc["decided_at"])) if doc["decided_at"] else "?"
        raise InvalidState(f"request {request_id} was already {doc['status']} by {doc['decided_by']} at {when}",
                           doc.get("decision_reason") or "a new request can be made with ml jupyter request")
    return doc


def _admin(call: Call, what: str) -> None:
    if not call.user.is_admin:
        raise PermissionDenied(f"permission denied: {what} package requests needs the admin role",
                               "ml jupyter review shows your requests and their decisions")


@operation(
    Opcode.APPROVE_REQUEST,
    routes=[("POST", "/api/v1/jupyter/package-requests/{request_id}/approve")],
    schema={"request_id": {"type": "string", "required": True, "empty": False},
            "reason": {"type": "string", "coerce": lambda v: (v or "").strip(), "default": ""}},
)
async def approve_request(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    _admin(call, "approving")
    doc = await _decide(agent, call, args["request_id"], "approved", args["reason"])
    agent.services.packages.policies.add_approval(doc["workspace_id"], doc["package"], doc["specifier"], doc["conda"])
    await agent.audit(call.user.name, "package.approve", doc["workspace"], "approved", request_id=doc["id"],
                      package=doc["package"], specifier=doc["specifier"], reason=args["reason"],
                      requesters=sorted({r["requester"] for r in doc["requesters"]}))
    what = doc["package"] + doc["specifier"]
    message = (f"approved {doc['id']}: {what} can now be installed in {doc['workspace']} "
               f"(ml jupyter install {doc['workspace']} {shlex.quote(what)})")
    return Result(message, "package_request", {"message": message, "request": doc})


@operation(
    Opcode.DENY_REQUEST,
    routes=[("POST", "/api/v1/jupyter/package-requests/{request_id}/deny")],
    schema={"request_id": {"type": "string", "required": True, "empty": False},
            "reason": {"type": "string", "nullable": True, "coerce": lambda v: (v or "").strip(), "default": ""}},
)
async def deny_request(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    _admin(call, "denying")
    if not args["reason"]:
        raise InvalidArgument("a denial needs a reason the requester will see", "--reason='Security concern'")
    doc = await _decide(agent, call, args["request_id"], "denied", args["reason"])
    await agent.audit(call.user.name, "package.deny", doc["workspace"], "denied", request_id=doc["id"],
                      package=doc["package"], specifier=doc["specifier"], reason=args["reason"],
                      requesters=sorted({r["requester"] for r in doc["requesters"]}))
    message = f"denied {doc['id']} ({doc['package']}{doc['specifier']} in {doc['workspace']}): {args['reason']}"
    return Result(message, "package_request", {"message": message, "request": doc})
