"""How a workspace is shown: the documents ``ml jupyter info``/``list`` and the HTTP API answer,
and the URL that opens it in a browser for one person (with their own token)."""

from __future__ import annotations

from typing import Any

from ..settings import User
from ..store.workspaces import Workspace
from ..units import format_size_mb
from .access import grants_of
from .context import AgentContext

__all__ = ["browser_url", "resources_view", "service_view", "workspace_view"]


def resources_view(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "cpu": r.get("cpu"),
        "memory": format_size_mb(r["memory_mb"]) if r.get("memory_mb") else None,
        "memory_mb": r.get("memory_mb"),
        "gpu": r.get("gpu", 0),
        "gpu_type": r.get("gpu_type"),
        "disk": format_size_mb(r["disk_mb"]) if r.get("disk_mb") else None,
    }


def browser_url(ws: Workspace, agent: AgentContext | None = None, user: User | None = None) -> str | None:
    """What opens the workspace in a browser for ``user``: their own personal token rides along
    (fetchml_agent/access; never the server's credential). Without a user, the login page."""
    if not ws.url or ws.status != "running":
        return None
    base = ws.url.replace("://127.0.0.1:", "://localhost:")
    tokens = agent.services.access if agent is not None else None
    token = tokens.personal_token(user.name, ws) if tokens is not None and user is not None else None
    return f"{base}lab?token={token}" if token else f"{base}lab"


def cpu_beyond_host(agent: AgentContext, cpu: float | None) -> str | None:
    """Why ``cpu`` CPUs cannot all be had on this host, or ``None`` (also where it is unknown)."""
    host = agent.runtime.host_cpus()
    if cpu and host and float(cpu) > host:
        return f"{float(cpu):g} CPUs asked, but this host has {host}: the workspace can use {host} at most"
    return None


def limits_view(agent: AgentContext, ws: Workspace) -> dict[str, Any]:
    """The workspace's limits as the runtime reported them at start, with ``per_resource``: for
    each of cpu, memory, gpu and disk, whether it is enforced, how, or why not."""
    limits = dict(ws.limits or {})
    limits.setdefault("enforced", False)
    res = ws.resources or {}
    how = limits.get("mechanism") or limits.get("how") or "by the runtime"
    why = limits.get("reason") or "the runtime does not enforce it"
    per: dict[str, str] = {}
    for key, asked in (("cpu", res.get("cpu")), ("memory", res.get("memory_mb"))):
        per[key] = ("no limit asked for" if not asked
                    else f"enforced ({how})" if limits.get("enforced") else f"not enforced: {why}")
    beyond = cpu_beyond_host(agent, res.get("cpu"))
    if beyond:
        per["cpu"] += f"; {beyond}"
    gpus = int(res.get("gpu") or 0)
    per["gpu"] = (limits.get("gpu") or f"{gpus} assigned") if gpus else "none asked for"
    per["disk"] = (limits.get("disk") or "not enforced: this runtime has no disk quota for workspaces"
                   if res.get("disk_mb") else "no limit asked for")
    limits["per_resource"] = per
    return limits


def workspace_view(agent: AgentContext, ws: Workspace, user: User | None = None) -> dict[str, Any]:
    limits = limits_view(agent, ws)
    capacity = agent.services.capacity  # how it started; idle since, why active, the cull to come
    return {**(capacity.view(ws) if capacity is not None else {}),
        "id": ws.id,
        "name": ws.name,
        "owner": ws.owner,
        "status": ws.status,
        "message": ws.status_message,
        "url": browser_url(ws, agent, user),
        "path": ws.path,
        "port": ws.port,
        "runtime": ws.runtime,
        "image": ws.image,
        "resources": resources_view(ws.resources),
        "limits": limits,
        "limits_enforced": bool(limits.get("enforced")),
        "password_protected": bool(ws.password_hash),
        "experiment": ws.config.get("experiment"),
        "access": grants_of(agent, ws),
        "created_at": ws.created_at,
        "updated_at": ws.updated_at,
        "started_at": ws.started_at,
    }


def service_view(ws: Workspace, agent: AgentContext | None = None, user: User | None = None) -> dict[str, Any]:
    return {
        "id": ws.id,
        "name": ws.name,
        "workspace": ws.path,
        "status": ws.status,
        "url": browser_url(ws, agent, user),
        "owner": ws.owner,
        "port": ws.port,
        "runtime": ws.runtime,
        "created_at": ws.created_at,
    }
