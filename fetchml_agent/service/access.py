"""Who may do what to a workspace: global roles, per-workspace grants, and the access commands.

Global roles: ``admin`` (everything) and ``user``. Per-workspace roles, granted to a user or a
team, in rising order: ``viewer`` (see it), ``collaborator`` (use it: start, stop, run),
``editor`` (change it: install packages, sync, link), ``owner`` (delete it, grant access).
The workspace's creator is its owner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgument, NotFound, PermissionDenied
from ..protocol.opcodes import Opcode
from ..settings import User
from .calls import Call, Result
from .context import AgentContext
from .registry import operation

if TYPE_CHECKING:
    from ..store.workspaces import Workspace

__all__ = ["ROLES", "VIEW", "USE", "EDIT", "OWN", "not_found", "require", "require_password_change", "role_of", "visible"]

ROLES = {"viewer": 1, "collaborator": 2, "editor": 3, "owner": 4}
VIEW, USE, EDIT, OWN = 1, 2, 3, 4
_NEEDED = {VIEW: "viewer", USE: "collaborator", EDIT: "editor", OWN: "owner"}


def role_of(agent: AgentContext, user: User, ws: Workspace) -> int:
    """The user's rank on ``ws``: 4 for admins and the owner, else the best grant, else 0."""
    if user.is_admin or ws.owner == user.name:
        return OWN
    best = 0
    for (kind, principal), role in agent.services.grants.of(ws.id).items():
        if (kind == "user" and principal == user.name) or (kind == "team" and principal in user.teams):
            best = max(best, ROLES.get(role, 0))
    return best


def visible(agent: AgentContext, user: User, ws: Workspace) -> bool:
    return role_of(agent, user, ws) >= VIEW


def not_found(ref: str) -> NotFound:
    """The answer about a workspace that does not exist, or that the caller may not see: the same
    words either way, so no one learns what others have (nor who owns it)."""
    return NotFound(f"no workspace or service named {ref!r}", "`ml jupyter list` shows the workspaces you can see")


def require(agent: AgentContext, user: User, ws: Workspace, level: int, action: str, ref: str | None = None) -> None:
    """Raise unless ``user`` holds at least ``level`` on ``ws``: NotFound (0x04, as for a
    workspace that does not exist, ``ref`` being what the caller named) when they may not even
    see it, else PermissionDenied (0x03) naming the role needed."""
    rank = role_of(agent, user, ws)
    if rank < VIEW:
        raise not_found(ref or ws.name)
    if rank < level:
        raise PermissionDenied(
            f"permission denied: {action} on workspace {ws.name!r} needs the {_NEEDED[level]} role",
            f"ask its owner ({ws.owner}) or an admin: ml jupyter access {ws.name} --user={user.name} --role={_NEEDED[level]}",
        )


async def require_password_change(agent: AgentContext, call: Call, ws: Workspace) -> None:
    """Only the owner or an admin may set a workspace's password: it logs in as the owner
    (docs/access.md). A refusal is audited."""
    try:
        require(agent, call.user, ws, OWN, "setting the password of")
    except PermissionDenied:
        await agent.audit(call.user.name, "workspace.password", ws.name, "denied")
        raise


_GRANT_SCHEMA: dict[str, Any] = {
    "name": {"type": "string", "required": True, "empty": False},
    "user": {"type": "string", "nullable": True, "default": None},
    "team": {"type": "string", "nullable": True, "default": None},
    "role": {"type": "string", "allowed": [r for r in ROLES if r != "owner"] + ["owner"], "default": "viewer"},
}


_TEAMS_HINT = ("teams are defined in the agent's agent.yaml: a user's `teams: [NAME]`, or "
               "`teams: [{name: NAME, members: [USER]}]`")


def _require_team(agent: AgentContext, team: str) -> None:
    """A grant to a team nobody belongs to would give nobody anything: refuse it (0x40, as for an
    unknown user), saying where teams come from and which ones exist."""
    known = sorted({t for u in agent.users.values() for t in u.teams})
    if team not in known:
        raise NotFound(f"no user belongs to team {team!r} on this agent",
                       f"{_TEAMS_HINT}; teams with members: {', '.join(known) or 'none'}")


async def _grant(agent: AgentContext, call: Call, args: dict[str, Any], kind: str) -> Result:
    ws = agent.find_workspace(args["name"])
    require(agent, call.user, ws, OWN, "granting access")
    principal = args.get(kind)
    if not principal:
        raise InvalidArgument(f"name the {kind} to grant access to (--{kind}=NAME)")
    if kind == "user" and principal not in agent.users:
        raise NotFound(f"no user named {principal!r} is configured on this agent")
    if kind == "team":
        _require_team(agent, principal)
    role = args["role"]
    previous = agent.services.grants.of(ws.id).get((kind, principal))
    await agent.services.grants.set(ws.id, kind, principal, role, call.user.name)
    agent.invalidate()
    await agent.audit(call.user.name, "access.grant", ws.name, principal=f"{kind}:{principal}", role=role,
                      **({"previous_role": previous} if previous else {}))
    # previous_role (None for a new grant) lets a client say what changed without asking first.
    return Result(f"{kind} {principal} is now {role} on {ws.name}", "access",
                  {"workspace": ws.name, kind: principal, "role": role, "previous_role": previous})


@operation(Opcode.GRANT_ACCESS, routes=[("POST", "/api/v1/jupyter/workspaces/{name}/access")], schema=_GRANT_SCHEMA)
async def grant_access(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    return await _grant(agent, call, args, "team" if args.get("team") and not args.get("user") else "user")


@operation(Opcode.SHARE_WORKSPACE, routes=[("POST", "/api/v1/jupyter/workspaces/{name}/share")], schema=_GRANT_SCHEMA)
async def share_workspace(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    return await _grant(agent, call, args, "team")


@operation(
    Opcode.REVOKE_ACCESS,
    routes=[("DELETE", "/api/v1/jupyter/workspaces/{name}/access/{principal}")],
    schema={"name": {"type": "string", "required": True}, "principal": {"type": "string", "required": True, "empty": False}},
)
async def revoke_access(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    ws = agent.find_workspace(args["name"])
    require(agent, call.user, ws, OWN, "revoking access")
    principal = args["principal"]
    kind, _, who = principal.partition(":") if principal.startswith(("user:", "team:")) else ("user", "", principal)
    if (kind, who) not in agent.services.grants.of(ws.id):
        raise NotFound(f"{kind} {who!r} has no access grant on {ws.name}")
    await agent.services.grants.set(ws.id, kind, who, None, call.user.name)
    agent.invalidate()
    await agent.audit(call.user.name, "access.revoke", ws.name, principal=f"{kind}:{who}")
    return Result(f"revoked {kind} {who}'s access to {ws.name}")


def grants_of(agent: AgentContext, ws: Workspace) -> list[dict[str, str]]:
    return [
        {"type": kind, "principal": principal, "role": role}
        for (kind, principal), role in sorted(agent.services.grants.of(ws.id).items())
    ]
