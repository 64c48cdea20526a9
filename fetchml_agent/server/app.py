"""One ASGI application on one port: ``/ws`` (binary protocol), ``/api/v1/...`` (HTTP), ``/index``.

uvicorn serves it, with the ``websockets`` library's sans-I/O protocol for ``/ws``
(:mod:`.wsproto`); Starlette routes the HTTP side. Both transports call the same operations from
:mod:`fetchml_agent.service`, check the key before they read a body, and share one
:class:`~.guard.PeerGuard`. HTTP bodies are limited to ``limits.max_request_body`` (or what the
operation declares), checked against ``Content-Length`` before reading and counted while
reading (413); a body that is not a JSON object, or nests too deeply, is 400.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..config import DEFAULT_MAX_REQUEST_BODY
from ..errors import (
    AuthenticationFailed,
    ErrorCode,
    FetchmlError,
    InvalidArgument,
    RequestTooLarge,
    TooManyAuthFailures,
)
from ..protocol import api_key_hash, loads_json_object
from ..service import ROUTES, Call, Operation, load_operations
from ..service.calls import bad_input
from .guard import PENALTY_SECONDS, PeerGuard
from .metrics import metrics_route
from .openapi import OPENAPI_PATH, openapi_endpoint
from .transport import Connection, handle_frame, max_frame_after_auth
from .wsproto import FRAME_LIMIT_EXTENSION

if TYPE_CHECKING:
    from ..agent import Agent

__all__ = ["build_app"]

log = logging.getLogger("fetchml.http")


def _error_response(err: FetchmlError) -> JSONResponse:
    return JSONResponse(err.to_dict(), status_code=err.http_status)


def _peer(conn: Request | WebSocket) -> str:
    return conn.client.host if conn.client else "-"


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) past ``limit`` bytes: by Content-Length first, then while reading."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge("request body too large", f"{declared} bytes, at most {limit} for this request")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge("request body too large", f"more than {limit} bytes, at most {limit} for this request")
        chunks.append(chunk)
    return b"".join(chunks)


def _http_endpoint(agent: Agent, op: Operation, guard: PeerGuard, max_body: int) -> Any:
    limit = max(max_body, op.max_body or 0)

    async def endpoint(request: Request) -> Response:
        try:
            header = request.headers.get("authorization", "")
            scheme, _, key = header.partition(" ")
            try:
                if scheme.lower() != "bearer" or not key.strip():
                    raise AuthenticationFailed(
                        "authentication failed: send the API key as 'Authorization: Bearer <key>'"
                    )
                user = agent.authenticate_key(key.strip())
            except AuthenticationFailed as exc:
                if await guard.failure(_peer(request), "http", "wrong_key"):
                    await asyncio.sleep(PENALTY_SECONDS)
                    raise TooManyAuthFailures(
                        "authentication failed: too many failed attempts from this address",
                        "attempts are accepted again within a minute",
                    ) from None
                raise exc from None
            for check in agent.services.hooks.call_checks:  # access: allowlists, admin MFA (docs/access.md)
                check(user, api_key_hash(key.strip()), op.name)
            args: dict[str, Any] = op.from_query(dict(request.query_params))
            if request.method in ("POST", "PUT", "PATCH"):
                raw = await _read_body(request, limit)
                if raw.strip():
                    args.update(loads_json_object(raw, "request body"))
            args.update(request.path_params)
            result = await op.run(agent, Call(user, "http"), op.validate(args))
        except FetchmlError as exc:
            return _error_response(exc)
        except Exception as exc:
            translated = bad_input(exc)
            if translated is not None:
                log.warning("operation %s: %s", op.name, exc)
                return _error_response(translated)
            log.exception("operation %s failed", op.name)
            return JSONResponse(
                {"error": "unknown", "code": int(ErrorCode.UNKNOWN), "message": "internal error in the agent"},
                status_code=500,
            )
        if result.data_type is not None:
            return Response(result.json_bytes(), status_code=result.http_status, media_type="application/json")
        return JSONResponse({"message": result.message}, status_code=result.http_status)

    endpoint.__name__ = op.name
    return endpoint


def _ws_endpoint(agent: Agent, guard: PeerGuard, max_body: int, frame_limit: int) -> Any:
    """The ``/ws`` endpoint: one :class:`Connection` per WebSocket, frames answered in order."""

    async def ws_endpoint(websocket: WebSocket) -> None:
        peer = _peer(websocket)
        if not guard.open_connection(peer):
            await guard.failure(peer, "ws", "refused_connection")
            await websocket.send_denial_response(
                PlainTextResponse(
                    f"too many connections from {peer} (limits.max_connections_per_peer = {guard.max_connections})\n",
                    status_code=429,
                )
            )
            return
        if guard.over_budget(peer):  # a flood of reconnects waits here, off the event loop's hands
            await asyncio.sleep(PENALTY_SECONDS)
        conn = Connection(
            peer,
            guard,
            max_body,
            frame_limit,
            set_frame_limit=websocket.scope.get("extensions", {}).get(FRAME_LIMIT_EXTENSION),
        )
        metrics = agent.services.metrics
        accepted = False
        try:
            await websocket.accept()
            accepted = True
            metrics.ws_connections.inc()
            metrics.ws_open.inc()

            async def send(data: bytes) -> None:
                await websocket.send_bytes(data)

            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    if message.get("code") == 1009 and not conn.authenticated:  # over PREAUTH_MAX_FRAME
                        await guard.failure(peer, "ws", "oversized_frame")
                    return
                frame = message.get("bytes")
                if not await handle_frame(agent, conn, frame if frame is not None else message.get("text", ""), send):
                    await websocket.close(1008, "too many authentication failures")
                    return
        except WebSocketDisconnect:
            return
        finally:
            guard.close_connection(peer)
            if accepted:
                metrics.ws_open.dec()

    return ws_endpoint


def build_app(agent: Agent, *, manage_lifecycle: bool = True) -> Starlette:
    """The ASGI app; with ``manage_lifecycle`` the agent starts and stops with the server."""
    load_operations()

    limits = agent.config.section("limits")
    max_body = int(limits.get("max_request_body", DEFAULT_MAX_REQUEST_BODY))
    frame_limit = max_frame_after_auth(max_body)

    async def audit_failures(peer: str, details: dict[str, Any]) -> None:
        await agent.audit("-", "auth.failed", None, "denied", peer=peer, **details)

    guard = PeerGuard(
        audit_failures,
        max_connections=int(limits.get("max_connections_per_peer", 64)),
        failures_per_window=int(limits.get("auth_failures_per_minute", 10)),
    )

    ws_endpoint = _ws_endpoint(agent, guard, max_body, frame_limit)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": agent.version, "runtime": agent.runtime.name})

    async def not_found(request: Request, exc: Exception) -> Response:
        err = InvalidArgument(
            f"no such endpoint: {request.method} {request.url.path}", "README.md, section 'HTTP API', lists the endpoints"
        )
        return JSONResponse({**err.to_dict(), "error": "not_found"}, status_code=404)

    routes: list[BaseRoute] = [
        WebSocketRoute("/ws", ws_endpoint),
        Route("/api/v1/health", health, methods=["GET"]),
        Route(OPENAPI_PATH, openapi_endpoint(agent), methods=["GET"]),
        metrics_route(agent, guard),
    ]
    for method, path, op in ROUTES:
        routes.append(Route(path, _http_endpoint(agent, op, guard, max_body), methods=[method]))
    routes.extend(agent.services.routes)  # pages of other concerns (the home page: fetchml_agent/web)
    for path, app in agent.services.mounts:
        routes.append(Mount(path, app=app))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if manage_lifecycle:
            await agent.start()
        guard.start()
        try:
            yield
        finally:
            await guard.close()
            if manage_lifecycle:
                await agent.close()

    # ASGI middleware of other concerns (access: the allowlist), outermost first.
    middleware = [Middleware(wrap) for wrap in agent.services.middleware]
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found}, middleware=middleware)
