"""One ASGI application on one port: ``/ws`` (binary protocol), ``/api/v1/...`` (HTTP), ``/index``.

uvicorn serves it, with the ``websockets`` library's sans-I/O protocol for ``/ws``; Starlette
routes the HTTP side. Both transports call the same operations from :mod:`fetchml_agent.service`.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..errors import AuthenticationFailed, ErrorCode, FetchmlError, InvalidArgument, ProtocolError
from ..service import ROUTES, Call, Operation, load_operations
from .transport import error_frame, handle_frame

if TYPE_CHECKING:
    from ..agent import Agent

__all__ = ["build_app"]

log = logging.getLogger("fetchml.http")


def _error_response(err: FetchmlError) -> JSONResponse:
    return JSONResponse(err.to_dict(), status_code=err.http_status)


def _http_endpoint(agent: Agent, op: Operation) -> Any:
    async def endpoint(request: Request) -> Response:
        try:
            header = request.headers.get("authorization", "")
            scheme, _, key = header.partition(" ")
            if scheme.lower() != "bearer" or not key.strip():
                raise AuthenticationFailed(
                    "authentication failed: send the API key as 'Authorization: Bearer <key>'"
                )
            try:
                user = agent.authenticate_key(key.strip())
            except AuthenticationFailed:
                await agent.audit("-", "auth.failed", None, "denied", transport="http")
                raise
            args: dict[str, Any] = dict(request.query_params)
            if request.method in ("POST", "PUT", "PATCH"):
                raw = await request.body()
                if raw.strip():
                    try:
                        body = json.loads(raw)
                    except ValueError as exc:
                        raise ProtocolError("request body is not JSON", str(exc)[:200]) from None
                    if not isinstance(body, dict):
                        raise ProtocolError("request body must be a JSON object")
                    args.update(body)
            args.update(request.path_params)
            result = await op.handler(agent, Call(user, "http"), op.validate(args))
        except FetchmlError as exc:
            return _error_response(exc)
        except Exception:
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


def build_app(agent: Agent, *, manage_lifecycle: bool = True) -> Starlette:
    """The ASGI app; with ``manage_lifecycle`` the agent starts and stops with the server."""
    load_operations()

    async def ws_endpoint(websocket: WebSocket) -> None:
        await websocket.accept()

        async def send(data: bytes) -> None:
            await websocket.send_bytes(data)

        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                frame = message.get("bytes")
                if frame is None:
                    await send(error_frame(ProtocolError("binary frame expected", "text frames are not part of the protocol")))
                    continue
                await handle_frame(agent, frame, send)
        except WebSocketDisconnect:
            return

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": agent.version, "runtime": agent.runtime.name})

    async def not_found(request: Request, exc: Exception) -> Response:
        err = InvalidArgument(f"no such endpoint: {request.method} {request.url.path}", "see docs/http-api.md")
        return JSONResponse({**err.to_dict(), "error": "not_found"}, status_code=404)

    routes: list[BaseRoute] = [
        WebSocketRoute("/ws", ws_endpoint),
        Route("/api/v1/health", health, methods=["GET"]),
    ]
    for method, path, op in ROUTES:
        routes.append(Route(path, _http_endpoint(agent, op), methods=[method]))
    for path, app in agent.services.mounts:
        routes.append(Mount(path, app=app))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if manage_lifecycle:
            await agent.start()
        try:
            yield
        finally:
            if manage_lifecycle:
                await agent.close()

    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found})
