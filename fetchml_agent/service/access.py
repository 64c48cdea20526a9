"""Who may do what to a workspace: global roles, per-workspace grants, and the access commands.

Global roles: ``admin`` (everything) and ``user``. Per-workspace roles, granted to a user or a
team, in rising order: ``viewer`` (see it), ``collaborator`` (use it: start, stop, run),
``editor`` (change it: install packages, sync, link), ``owner`` (delete it, grant access).
The workspace's creator is its owner.
"""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgument, NotFound, PermissionDenied
from ..protocol.opcodes import Opcode
from . import Call, Result, operation

if TYPE_CHECKING:
    from ..agent import Agent
    from ..config import User
    from ..store.workspaces import Workspace

__all__ = ["ROLES", "VIEW", "USE", "EDIT", "OWN", "require", "role_of", "visible"]

ROLES = {"viewer": 1, "collaborator": 2, "editor": 3, "owner": 4}
VIEW, USE, EDIT, OWN = 1, 2, 3, 4
_NEEDED = {VIEW: "viewer", USE: "collaborator", EDIT: "editor", OWN: "owner"}


def _grants(agent: Agent) -> dict[str, dict[tuple[str, str], str]]:
    cache: dict[str, dict[tuple[str, str], str]] | None = agent.extensions.get("grants")
    if cache is None:
        rows = agent.store.run_sync(
            lambda conn: conn.execute("SELECT workspace_id, principal_type, principal, role FROM access").fetchall()
        )
        cache = {}
        for r in rows:
            cache.setdefault(r[0], {})[(r[1], r[2])] = r[3]
        agent.extensions["grants"] = cache
    return cache


def role_of(agent: Agent, user: User, ws: Workspace) -> int:
    """The user's rank on ``ws``: 4 for admins and the owner, else the best grant, else 0."""
    if user.is_admin or ws.owner == user.name:
        return OWN
    best = 0
    for (kind, principal), role in _grants(agent).get(ws.id, {}).items():
        if (kind == "user" and principal == user.name) or (kind == "team" and principal in user.teams):
            best = max(best, ROLES.get(role, 0))
    return best


def visible(agent: Agent, user: User, ws: Workspace) -> bool:
    return role_of(agent, user, ws) >= VIEW


def require(agent: Agent, user: User, ws: Workspace, level: int, action: str) -> None:
    """Raise PermissionDenied (0x03) unless ``user`` holds at least ``level`` on ``ws``."""
    if role_of(agent, user, ws) < level:
        raise PermissionDenied(
            f"permission denied: {action} on workspace {ws.name!r} needs the {_NEEDED[level]} role",
            f"ask its owner ({ws.owner}) or an admin: ml jupyter access {ws.name} --user={user.name} --role={_NEEDED[level]}",
        )


def _set_grant(conn: sqlite3.Connection, ws_id: str, kind: str, principal: str, role: str | None, by: str) -> None:
    if role is None:
        conn.execute(
            "DELETE FROM access WHERE workspace_id = ? AND principal_type = ? AND principal = ?", (ws_id, kind, principal)
        )
    else:
        conn.execute(
            "INSERT OR REPLACE INTO access VALUES (?, ?, ?, ?, ?, ?)", (ws_id, kind, principal, role, by, time.time())
        )


_GRANT_SCHEMA: dict[str, Any] = {
    "name": {"type": "string", "required": True, "empty": False},
    "user": {"type": "string", "nullable": True, "default": None},
    "team": {"type": "string", "nullable": True, "default": None},
    "role": {"type": "string", "allowed": [r for r in ROLES if r != "owner"] + ["owner"], "default": "viewer"},
}


async def _grant(agent: Agent, call: Call, args: dict[str, Any], kind: str) -> Result:
    ws = agent.find_workspace(args["name"])
    require(agent, call.user, ws, OWN, "granting access")
    principal = args.get(kind)
    if not principal:
        raise InvalidArgument(f"name the {kind} to grant access to (--{kind}=NAME)")
    if kind == "user" and principal not in agent.users:
        raise NotFound(f"no user named {principal!r} is configured on this agent")
    role = args["role"]
    await agent.store.run(_set_grant, ws.id, kind, principal, role, call.user.name)
    _grants(agent).setdefault(ws.id, {})[(kind, principal)] = role
    agent.invalidate()
    await agent.audit(call.user.name, "access.grant", ws.name, principal=f"{kind}:{principal}", role=role)
    return Result(f"{kind} {principal} is now {role} on {ws.name}", "access", {"workspace": ws.name, kind: principal, "role": role})


@operation(Opcode.GRANT_ACCESS, routes=[("POST", "/api/v1/jupyter/workspaces/{name}/access")], schema=_GRANT_SCHEMA)
async def grant_access(agent: Agent, call: Call, args: dict[str, Any]) -> Result:
    return await _grant(agent, call, args, "team" if args.get("team") and not args.get("user") else "user")


@operation(Opcode.SHARE_WORKSPACE, routes=[("POST", "/api/v1/jupyter/workspaces/{name}/share")], schema=_GRANT_SCHEMA)
async def share_workspace(agent: Agent, call: Call, args: dict[str, Any]) -> Result:
    return await _grant(agent, call, args, "team")


@operation(
    Opcode.REVOKE_ACCESS,
    routes=[("DELETE", "/api/v1/jupyter/workspaces/{name}/access/{principal}")],
    schema={"name": {"type": "string", "required": True}, "principal": {"type": "string", "required": True, "empty": False}},
)
async def revoke_access(agent: Agent, call: Call, args: dict[str, Any]) -> Result:
    ws = agent.find_workspace(args["name"])
    require(agent, call.user, ws, OWN, "revoking access")
    principal = args["principal"]
    kind, _, who = principal.partition(":") if principal.startswith(("user:", "team:")) else ("user", "", principal)
    grants = _grants(agent).get(ws.id, {})
    if (kind, who) not in grants:
        raise NotFound(f"{kind} {who!r} has no access grant on {ws.name}")
    await agent.store.run(_set_grant, ws.id, kind, who, None, call.user.name)
    grants.pop((kind, who), None)
    agent.invalidate()
    await agent.audit(call.user.name, "access.revoke", ws.name, principal=f"{kind}:{who}")
    return Result(f"revoked {kind} {who}'s access to {ws.name}")


def grants_of(agent: Agent, ws: Workspace) -> list[dict[str, str]]:
    return [
        {"type": kind, "principal": principal, "role": role}
        for (kind, principal), role in sorted(_grants(agent).get(ws.id, {}).items())
    ]
