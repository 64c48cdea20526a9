"""``GET /metrics``: the Prometheus text format, behind a key or on a listener of its own.

On the agent's main listener, ``/metrics`` answers only a request with ``Authorization: Bearer
KEY`` where KEY is the scrape key (``metrics.scrape_key_verifier`` in agent.yaml holds its
``api_key_verifier``) or an admin's API key; wrong keys count against the peer like the API's.
``metrics.listen: HOST:PORT`` adds a listener that serves ``/metrics`` and nothing else, without a
key, for a scrape network the firewall keeps to Prometheus (``fetchml-agent serve`` starts it with
the agent and stops it first).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import socket

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..auth import verifier_of_wire_hash
from ..errors import AuthenticationFailed, BackendUnavailable, PermissionDenied, TooManyAuthFailures
from ..metrics import CONTENT_TYPE
from ..protocol import api_key_hash
from ..service.context import AgentContext
from ..usage.config import MetricsSettings
from .guard import PENALTY_SECONDS, PeerGuard
from .side import SideServer

__all__ = ["MetricsListener", "metrics_route"]

log = logging.getLogger("fetchml.metrics")


def _render(agent: AgentContext) -> Response:
    return Response(agent.services.metrics.render(), media_type=CONTENT_TYPE)


def metrics_route(agent: AgentContext, guard: PeerGuard) -> Route:
    """The main listener's ``GET /metrics`` (scrape key or an admin's key)."""
    settings = MetricsSettings.from_section(agent.config.raw.get("metrics"))

    async def endpoint(request: Request) -> Response:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        key = key.strip()
        try:
            if scheme.lower() != "bearer" or not key:
                raise AuthenticationFailed("authentication failed: /metrics needs 'Authorization: Bearer <key>' "
                                           "(the scrape key of metrics.scrape_key_verifier, or an admin's key)")
            wire = api_key_hash(key)
            if settings.scrape_key_verifier is not None and hmac.compare_digest(
                    verifier_of_wire_hash(wire), settings.scrape_key_verifier):
                return _render(agent)
            try:
                user = agent.authenticate(wire)
            except AuthenticationFailed:
                peer = request.client.host if request.client else "-"
                if await guard.failure(peer, "http", "wrong_key"):
                    await asyncio.sleep(PENALTY_SECONDS)
                    raise TooManyAuthFailures("authentication failed: too many failed attempts from this address") from None
                raise
            if not user.is_admin:
                raise PermissionDenied("permission denied: /metrics needs the scrape key or an admin's key")
            return _render(agent)
        except (AuthenticationFailed, PermissionDenied) as exc:
            return JSONResponse(exc.to_dict(), status_code=exc.http_status)

    return Route("/metrics", endpoint, methods=["GET"])


class MetricsListener:
    """The ``metrics.listen`` server of one agent, started and stopped with it."""

    def __init__(self) -> None:
        self._side = SideServer()

    async def start(self, agent: AgentContext) -> None:
        """Start hook: binds ``metrics.listen`` when set; BackendUnavailable when it cannot."""
        addr = MetricsSettings.from_section(agent.config.raw.get("metrics")).listen
        if addr is None:
            return
        family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
        except OSError as exc:
            sock.close()
            raise BackendUnavailable(f"cannot serve /metrics on {addr[0]}:{addr[1]} (metrics.listen): "
                                     f"{exc.strerror or exc}", "free that port or change metrics.listen") from None

        async def endpoint(request: Request) -> Response:
            return _render(agent)

        async def not_found(request: Request, exc: Exception) -> Response:
            return PlainTextResponse("only /metrics is served here\n", status_code=404)

        app = Starlette(routes=[Route("/metrics", endpoint, methods=["GET"])], exception_handlers={404: not_found})
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=5)
        if not await self._side.serve(config, sock, "metrics-listener"):
            raise BackendUnavailable(f"the /metrics listener on {addr[0]}:{addr[1]} did not start")
        log.info("metrics served on http://%s:%d/metrics", *addr)

    async def stop(self, agent: AgentContext) -> None:
        await self._side.stop()
