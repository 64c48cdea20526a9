"""``ml jupyter audit WS [--export=csv]``: the audit trail of a workspace.

Every mutating action and every security decision writes one event (``Agent.audit``); this module
only reads them. A workspace's owner and admins may read its trail; admins may read the whole log
(``name`` omitted), and the trail of a deleted workspace by its name. A live workspace's trail is
keyed by its id, so a new workspace that reuses a deleted one's name starts with none of its
history. Every event carries its chain digest (docs/audit.md); verifying is in
:mod:`fetchml_agent.governance.service`.
"""

from __future__ import annotations

from typing import Any

from ..errors import PermissionDenied
from ..protocol.opcodes import Opcode
from ..store.audit import query_events
from .access import OWN, require
from .calls import Call, Result
from .context import AgentContext
from .registry import operation

__all__ = ["audit_log"]


@operation(
    Opcode.AUDIT_LOG,
    routes=[("GET", "/api/v1/jupyter/workspaces/{name}/audit"), ("GET", "/api/v1/audit")],
    schema={
        "name": {"type": "string", "nullable": True, "default": None},
        "limit": {"type": "integer", "coerce": int, "min": 1, "max": 100000, "default": 1000},
        "action": {"type": "string", "nullable": True, "default": None},
    },
)
async def audit_log(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    name = args["name"]
    ws_id = None
    if name:
        try:
            ws = agent.find_workspace(name)
            require(agent, call.user, ws, OWN, "reading the audit log")
            name, ws_id = ws.name, ws.id
        except Exception:
            # A deleted workspace keeps its trail: admins may still read it.
            if not call.user.is_admin:
                raise
    elif not call.user.is_admin:
        raise PermissionDenied("permission denied: the whole audit log needs the admin role", "name a workspace you own")
    events = await agent.store.run(lambda conn: query_events(conn, name, args["limit"], args["action"],
                                                             workspace_id=ws_id, with_chain=True))
    return Result(f"{len(events)} events", "audit_log", {"workspace": name, "workspace_id": ws_id, "events": events})
