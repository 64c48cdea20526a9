"""Access operations (``ml auth ...``, ``ml jupyter password``) and what the wiring needs.

:func:`fetchml_agent.agent.build_services` makes the :class:`AccessService` and adds, through the
agent's services and hooks: the ``/access`` mount (workspace servers' endpoints), the allowlist
middleware, the transports' per-call check, the settings injected into every workspace (how its
server reaches the agent: :func:`workspace_env`), an audit listener that ends a revoked person's
credentials, and the service's start (before anything that may serve requests) and shutdown.
"""

from __future__ import annotations

import time
from typing import Any

from ..aio import run_blocking
from ..errors import InvalidArgument, PermissionDenied
from ..protocol.opcodes import Opcode
from ..service.access import require_password_change
from ..service.calls import Call, Result
from ..service.context import AgentContext
from ..service.registry import operation
from ..service.workspaces import hash_password
from ..store.workspaces import Workspace
from .guard import CALL_KEY
from .service import AccessService

__all__ = ["ACCESS_URL_ENV", "access_service", "close", "start", "workspace_env"]

# How a workspace's server reaches the agent (read by fetchml_jupyter, which takes it out of the
# environment at load). The server's own credential travels where runtimes put Jupyter's token.
ACCESS_URL_ENV = "FETCHML_ACCESS_URL"
ACCESS_CA_ENV = "FETCHML_ACCESS_CA"


def access_service(agent: AgentContext) -> AccessService:
    """The agent's :class:`AccessService` (``agent.services.access``)."""
    svc = agent.services.access
    if not isinstance(svc, AccessService):
        raise RuntimeError("this agent was built without the access service")
    return svc


def workspace_env(agent: AgentContext, ws: Workspace) -> dict[str, str]:
    """Where the workspace's Jupyter Server finds the agent's ``/access`` endpoints: the base URL
    workspaces reach the agent at (the package index's, which the runtime's network allows)."""
    env = {ACCESS_URL_ENV: f"{agent.services.packages.index.base_url()}/access"}
    if agent.config.tls_cert is not None:
        try:
            env[ACCESS_CA_ENV] = agent.config.tls_cert.read_text()
        except OSError:
            pass
    return env


# -- sessions -------------------------------------------------------------------------------------


def _flag(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return value


@operation(
    Opcode.SESSIONS_LIST,
    routes=[("GET", "/api/v1/auth/sessions")],
    schema={"all": {"type": "boolean", "coerce": _flag, "default": False},
            "ended": {"type": "boolean", "coerce": _flag, "default": False}},
)
async def sessions_list(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    rows = await access_service(agent).list_sessions(call.user, args["all"], args["ended"])
    return Result(f"{len(rows)} sessions", "sessions", {"sessions": rows})


@operation(
    Opcode.SESSION_END,
    routes=[("DELETE", "/api/v1/auth/sessions/{session_id}")],
    schema={"session_id": {"type": "string", "required": True, "empty": False}},
)
async def session_end(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    s = await access_service(agent).end_session(call.user, args["session_id"])
    return Result(f"ended session {s.id} of {s.user} on {s.workspace}")


# -- MFA ------------------------------------------------------------------------------------------


@operation(Opcode.MFA_ENROLL, routes=[("POST", "/api/v1/auth/mfa/enroll")])
async def mfa_enroll(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    doc = await access_service(agent).mfa_enroll(call.user)
    return Result("scan the QR code, then confirm with a code: ml auth mfa confirm CODE", "mfa_enrollment", doc)


@operation(
    Opcode.MFA_CONFIRM,
    routes=[("POST", "/api/v1/auth/mfa/confirm")],
    schema={"code": {"type": "string", "required": True, "empty": False, "maxlength": 32}},
)
async def mfa_confirm(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    doc = await access_service(agent).mfa_confirm(call.user, args["code"])
    return Result("enrolled: keep the recovery codes somewhere safe", "mfa_confirmed", doc)


@operation(
    Opcode.MFA_STATUS,
    routes=[("GET", "/api/v1/auth/mfa")],
    schema={"user": {"type": "string", "nullable": True, "default": None}},
)
async def mfa_status(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    who = args["user"] or call.user.name
    if who != call.user.name and not call.user.is_admin:
        raise PermissionDenied("another user's MFA status needs the admin role")
    return Result(who, "mfa_status", access_service(agent).mfa_status(who))


@operation(
    Opcode.MFA_RESET,
    routes=[("DELETE", "/api/v1/auth/mfa/{user}")],
    schema={"user": {"type": "string", "required": True, "empty": False}},
)
async def mfa_reset(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    await access_service(agent).mfa_reset(call.user, args["user"])
    return Result(f"removed the MFA enrolment of {args['user']}; they can enrol again")


@operation(
    Opcode.MFA_ELEVATE,
    routes=[("POST", "/api/v1/auth/elevate")],
    schema={"code": {"type": "string", "required": True, "empty": False, "maxlength": 32}},
)
async def mfa_elevate(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    until = await access_service(agent).elevate(call.user, CALL_KEY.get(), args["code"])
    left = int(until - time.time())
    return Result(f"second factor accepted: admin operations with this key are allowed for {left // 60} min",
                  "mfa_elevation", {"user": call.user.name, "until": until})


# -- the workspace password -----------------------------------------------------------------------


@operation(
    Opcode.WORKSPACE_PASSWORD,
    routes=[("PUT", "/api/v1/jupyter/workspaces/{name}/password")],
    schema={"name": {"type": "string", "required": True, "empty": False},
            "password": {"type": "string", "nullable": True, "default": None, "maxlength": 1024}},
)
async def workspace_password(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    """Set (or with no password, remove) the password of a workspace's browser login. Only its
    owner or an admin may: the password logs in as the owner. Takes effect at once (the agent
    checks it at login), no restart."""
    ws = agent.find_workspace(args["name"])
    await require_password_change(agent, call, ws)
    password = args["password"]
    if password is not None and len(password) < 8:
        raise InvalidArgument("a workspace password needs at least 8 characters")
    ws.password_hash = await run_blocking(hash_password, password) if password else None
    await agent.save(ws)
    await agent.audit(call.user.name, "workspace.password", ws.name, change="set" if password else "removed")
    return Result(f"{'set' if password else 'removed'} the password of {ws.name}")


# -- wiring ---------------------------------------------------------------------------------------


async def start(agent: AgentContext) -> None:
    await access_service(agent).start()


async def close(agent: AgentContext) -> None:
    await access_service(agent).close()
