"""A second, index-only listener for runtimes whose workspaces cannot reach the agent's loopback.

Docker containers reach the host at the bridge gateway, not at 127.0.0.1; Nomad allocations run on
other nodes (``nomad.index``, optional there: ``nomad.agent_url`` may name a proxy instead). When
the runtime says where its workspaces reach the package index
(:class:`~fetchml_agent.runtimes.base.PackageIndexReach` ``index``: ``(address, port)``, known
after ``runtime.open()``), the agent also listens there — serving ONLY the workspace-facing
mounts (``/index``, and ``/access`` where its Jupyter Server asks who a credential is), never
``/ws`` nor ``/api``, so a workspace can install packages but cannot drive the agent. Nothing is started when the main listener already covers that address and port (it
listens on a wildcard, or on that very address), nor when the address is not this host's (then
something else serves it).

``fetchml-agent serve`` makes one :class:`IndexListener` and adds its ``start`` and ``stop`` to the
agent's start and shutdown hooks.
"""

from __future__ import annotations

import errno
import logging
import socket
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount

from ..errors import BackendUnavailable
from ..runtimes.base import PackageIndexReach, find_capability
from ..service.context import AgentContext
from .side import SideServer

__all__ = ["WORKSPACE_MOUNTS", "IndexListener", "build_index_app", "index_listen_address"]

log = logging.getLogger("fetchml.index_listener")


# What workspaces may reach here: the package index, and the server-credential endpoints their
# Jupyter Server asks about access (fetchml_agent/access/http.py). Never /ws nor /api.
WORKSPACE_MOUNTS = ("/index", "/access")


def build_index_app(agent: AgentContext) -> Starlette:
    """An app with only the agent's workspace-facing mounts (:data:`WORKSPACE_MOUNTS`); every other
    path answers 404."""
    mounts = [Mount(path, app=app) for path, app in agent.services.mounts if path in WORKSPACE_MOUNTS]

    async def not_found(request: Any, exc: Exception) -> PlainTextResponse:
        return PlainTextResponse("only the package index (and workspace access checks) are served here\n",
                                 status_code=404)

    return Starlette(routes=mounts, exception_handlers={404: not_found})


def index_listen_address(agent: AgentContext) -> tuple[str, int] | None:
    """Where the extra listener must bind: the runtime's ``index`` unless the main listener already
    answers there; ``None`` when nothing extra is needed."""
    reach = find_capability(agent.runtime, PackageIndexReach)
    index = reach.index if reach is not None else None
    if not index or not index[0]:
        return None
    host, port = str(index[0]), int(index[1])
    main_host = agent.config.host
    if port == agent.config.port and (main_host in ("0.0.0.0", "::", "") or main_host == host):
        return None
    return host, port


class IndexListener:
    """The index-only server of one agent, started and stopped with it."""

    def __init__(self) -> None:
        self._side = SideServer()

    async def start(self, agent: AgentContext) -> None:
        """Starts the index-only server (a start hook). Raises :class:`BackendUnavailable` when
        the address cannot be bound (another process holds it)."""
        addr = index_listen_address(agent)
        sock = _bind(agent, addr) if addr is not None else None
        if addr is None or sock is None:
            return
        cfg = agent.config
        config = uvicorn.Config(
            build_index_app(agent),
            log_level="warning",
            access_log=False,
            lifespan="off",
            ssl_certfile=str(cfg.tls_cert) if cfg.tls_cert else None,
            ssl_keyfile=str(cfg.tls_key) if cfg.tls_key else None,
            timeout_graceful_shutdown=5,
        )
        if not await self._side.serve(config, sock, "index-listener"):
            raise BackendUnavailable(
                f"the package index listener on {addr[0]}:{addr[1]} did not start", "see the agent's log"
            )
        log.info("package index for workspaces also served on %s:%d (index only)", *addr)

    async def stop(self, agent: AgentContext) -> None:
        """Stops the index-only server if one runs (a shutdown hook)."""
        await self._side.stop()


def _bind(agent: AgentContext, addr: tuple[str, int]) -> socket.socket | None:
    """The listener's socket; ``None`` when the address is not this host's (something else serves it)."""
    family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRNOTAVAIL:  # not this host's address: something else serves it there
            log.info("package index address %s:%d is not this host's: no index listener started", *addr)
            return None
        raise BackendUnavailable(
            f"cannot serve the package index for workspaces on {addr[0]}:{addr[1]}: {exc.strerror or exc}",
            f"free that port, or set {agent.runtime.name}.index in agent.yaml to an address:port of this host",
        ) from None
    return sock
