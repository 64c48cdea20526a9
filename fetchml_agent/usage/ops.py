"""The usage operations: ``ml jupyter stats NAME --since`` (history) and ``ml jupyter report``."""

from __future__ import annotations

from typing import Any

from ..errors import InvalidArgument
from ..protocol.opcodes import Opcode
from ..service.access import VIEW, require
from ..service.calls import Call, Result
from ..service.context import AgentContext
from ..service.registry import operation
from ..units import parse_duration
from .report import history_doc, render_html, render_text, report_doc
from .service import Usage

__all__ = ["MAX_SINCE", "usage_of"]

MAX_SINCE = 400 * 86400.0

_NAME = {"name": {"type": "string", "required": True, "empty": False}}
_SINCE = {"type": ["string", "integer", "float"], "coerce": str, "empty": False, "maxlength": 32}


def usage_of(agent: AgentContext) -> Usage:
    """The agent's :class:`Usage` (``agent.services.usage``)."""
    found = agent.services.usage
    if not isinstance(found, Usage):
        raise RuntimeError("this agent was built without the usage history")
    return found


def _since(value: str) -> float:
    try:
        seconds = parse_duration(value, "since")
    except ValueError as exc:
        raise InvalidArgument(str(exc), "e.g. --since 24h, 7d, 30d") from None
    if seconds > MAX_SINCE:
        raise InvalidArgument(f"since: at most 400d, got {value}")
    return seconds


@operation(
    Opcode.WORKSPACE_HISTORY,
    routes=[("GET", "/api/v1/jupyter/workspaces/{name}/history")],
    schema={**_NAME, "since": {**_SINCE, "default": "24h"},
            "points": {"type": "integer", "coerce": int, "min": 10, "max": 5000, "default": 500}},
)
async def workspace_history(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    """The workspace's usage samples and events of the last ``since`` (docs/observe.md)."""
    ws = agent.find_workspace(args["name"])
    require(agent, call.user, ws, VIEW, "viewing the usage history of")
    doc = await history_doc(agent, usage_of(agent), ws, _since(args["since"]), args["points"])
    return Result(f"{len(doc['series'])} points", "workspace_history", doc)


@operation(
    Opcode.WORKSPACE_REPORT,
    routes=[("GET", "/api/v1/jupyter/workspaces/{name}/report")],
    schema={**_NAME, "since": {**_SINCE, "default": "7d"},
            "format": {"type": "string", "allowed": ["html", "text", "json"], "default": "html"},
            "width": {"type": "integer", "coerce": int, "min": 40, "max": 400, "default": 100}},
)
async def workspace_report(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    """A report of the workspace: usage against limits over time, events, runs, packages, advice."""
    ws = agent.find_workspace(args["name"])
    require(agent, call.user, ws, VIEW, "reporting on")
    doc = await report_doc(agent, usage_of(agent), call, ws, _since(args["since"]))
    fmt = args["format"]
    out: dict[str, Any] = {"name": ws.name, "format": fmt, "generated_at": doc["generated_at"]}
    if fmt == "json":
        out["report"] = doc
    else:
        out["content"] = render_html(doc) if fmt == "html" else render_text(doc, args["width"])
    return Result(f"report of {ws.name}", "workspace_report", out)
