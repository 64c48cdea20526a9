"""A second, index-only listener for runtimes whose workspaces cannot reach the agent's loopback.

Docker containers reach the host at the bridge gateway, not at 127.0.0.1; Nomad allocations run on
other nodes (``nomad.index``, optional there: ``nomad.agent_url`` may name a proxy instead). When
the runtime says where its workspaces reach the package index
(:class:`~fetchml_agent.runtimes.base.PackageIndexReach` ``index``: ``(address, port)``, known
after ``runtime.open()``), the agent also listens there — serving ONLY the
``/index`` mount, never ``/ws`` nor ``/api``, so a workspace can install packages but cannot drive
the agent. Nothing is started when the main listener already covers that address and port (it
listens on a wildcard, or on that very address), nor when the address is not this host's (then
something else serves it).

Register :func:`start_index_listener` and :func:`stop_index_listener` as the agent's
``start_hooks`` / ``shutdown_hooks`` (``fetchml-agent serve`` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount

from ..errors import BackendUnavailable
from ..runtimes.base import PackageIndexReach, find_capability

if TYPE_CHECKING:
    from ..agent import Agent

__all__ = ["build_index_app", "index_listen_address", "start_index_listener", "stop_index_listener"]

log = logging.getLogger("fetchml.index_listener")

_KEY = "index_listener"


def _server_class() -> Any:
    import uvicorn

    class IndexServer(uvicorn.Server):
        """The process's second server: the main one handles the signals and stops this one."""

        def capture_signals(self) -> Any:  # type: ignore[override]
            return contextlib.nullcontext()

    return IndexServer


def build_index_app(agent: Agent) -> Starlette:
    """An app with only the agent's ``/index`` mount; every other path answers 404."""
    mounts = [Mount(path, app=app) for path, app in agent.extensions.get("mounts", []) if path == "/index"]

    async def not_found(request: Any, exc: Exception) -> PlainTextResponse:
        return PlainTextResponse("only the package index is served here\n", status_code=404)

    return Starlette(routes=mounts, exception_handlers={404: not_found})


def index_listen_address(agent: Agent) -> tuple[str, int] | None:
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


async def start_index_listener(agent: Agent) -> None:
    """Starts the index-only server (a start hook). Raises :class:`BackendUnavailable` when the
    address cannot be bound (another process holds it)."""
    import uvicorn

    addr = index_listen_address(agent)
    if addr is None:
        return
    family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRNOTAVAIL:  # not this host's address: something else serves it there
            log.info("package index address %s:%d is not this host's: no index listener started", *addr)
            return
        raise BackendUnavailable(
            f"cannot serve the package index for workspaces on {addr[0]}:{addr[1]}: {exc.strerror or exc}",
            f"free that port, or set {agent.runtime.name}.index in agent.yaml to an address:port of this host",
        ) from None
    cfg = agent.config
    server = _server_class()(
        uvicorn.Config(
            build_index_app(agent),
            log_level="warning",
            access_log=False,
            lifespan="off",
            ssl_certfile=str(cfg.tls_cert) if cfg.tls_cert else None,
            ssl_keyfile=str(cfg.tls_key) if cfg.tls_key else None,
            timeout_graceful_shutdown=5,
        )
    )
    task = asyncio.create_task(server.serve(sockets=[sock]), name="index-listener")
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    if not server.started:
        sock.close()
        raise BackendUnavailable(
            f"the package index listener on {addr[0]}:{addr[1]} did not start", "see the agent's log"
        )
    agent.extensions[_KEY] = (server, task, sock)
    log.info("package index for workspaces also served on %s:%d (index only)", *addr)


async def stop_index_listener(agent: Agent) -> None:
    """Stops the index-only server if one runs (a shutdown hook)."""
    entry = agent.extensions.pop(_KEY, None)
    if entry is None:
        return
    server, task, sock = entry
    server.should_exit = True
    try:
        await asyncio.wait_for(task, 10)
    except Exception:
        task.cancel()
    sock.close()
