"""``/access/v1/...``: the few endpoints a workspace's Jupyter Server calls, and nothing else.

Each request carries the server's own credential (``Authorization: Bearer <credential>``), which
names the one workspace the server is bound to; no endpoint takes a workspace name. Served on the
agent's main listener and on its index-only listener (the only port a docker or Nomad workspace
may reach), beside ``/index`` and never with ``/ws`` or ``/api``:

``POST /access/v1/resolve``        ``{credential, peer, forwarded_for}`` → the answer (identity,
                                   role, allowed pairs, ttl) or an error document (401/403)
``POST /access/v1/resolve-many``   ``{items: [...]}`` → ``{answers: [...]}`` (re-checking open connections)
``POST /access/v1/login``          ``{user, secret, otp, token, peer, forwarded_for}`` → answer + ``session_token``
``POST /access/v1/logout``         ``{session}``
``POST /access/v1/events``         ``{events: [{action, user, path, ...}]}`` → audited, for that workspace
``POST /access/v1/activity``       ``{request_age_s, person, kind, kernels, busy_kernels, terminals,
                                   busy_terminals}`` → ``{interval, workspace}`` (idle culling: docs/capacity.md)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import AuthenticationFailed, FetchmlError, InvalidArgument, ProtocolError

if TYPE_CHECKING:
    from ..store.workspaces import Workspace
    from .service import AccessService

__all__ = ["EVENT_ACTIONS", "build_access_app"]

log = logging.getLogger("fetchml.access.http")

# What a workspace server may write into the audit log (docs/access.md, "What the audit records").
EVENT_ACTIONS = frozenset({
    "jupyter.open", "jupyter.save", "jupyter.create", "jupyter.upload", "jupyter.rename", "jupyter.copy",
    "jupyter.delete", "jupyter.download", "jupyter.edit", "jupyter.execute", "jupyter.kernel",
    "jupyter.terminal", "jupyter.denied", "jupyter.disconnected",
})
_MAX_EVENTS = 500
_MAX_FIELD = 1024

Handler = Callable[["AccessService", "Workspace", str, dict[str, Any]], Awaitable[Any]]


def _str(body: dict[str, Any], key: str, limit: int = 4096) -> str:
    value = body.get(key) or ""
    if not isinstance(value, str) or len(value) > limit:
        raise InvalidArgument(f"{key}: expected a string of at most {limit} characters")
    return value


async def _resolve(svc: AccessService, ws: Workspace, cred: str, body: dict[str, Any]) -> Any:
    return await svc.resolve(ws, _str(body, "credential"), _str(body, "peer", 256), _str(body, "forwarded_for"),
                             server_credential=cred)


async def _resolve_many(svc: AccessService, ws: Workspace, cred: str, body: dict[str, Any]) -> Any:
    items = body.get("items")
    if not isinstance(items, list) or len(items) > 1000:
        raise InvalidArgument("items: expected a list of at most 1000 {credential, peer, forwarded_for}")
    answers = []
    for item in items:
        try:
            if not isinstance(item, dict):
                raise InvalidArgument("each item must be an object")
            answers.append(await _resolve(svc, ws, cred, item))
        except FetchmlError as exc:
            answers.append({**exc.to_dict(), "status": exc.http_status})
    return {"answers": answers}


async def _login(svc: AccessService, ws: Workspace, cred: str, body: dict[str, Any]) -> Any:
    return await svc.login(ws, user=_str(body, "user", 64), secret=_str(body, "secret"), otp=_str(body, "otp", 64),
                           token=_str(body, "token"), peer=_str(body, "peer", 256),
                           forwarded_for=_str(body, "forwarded_for"))


async def _logout(svc: AccessService, ws: Workspace, cred: str, body: dict[str, Any]) -> Any:
    await svc.logout(ws, _str(body, "session"))
    return {"ok": True}


async def _events(svc: AccessService, ws: Workspace, cred: str, body: dict[str, Any]) -> Any:
    events = body.get("events")
    if not isinstance(events, list) or len(events) > _MAX_EVENTS:
        raise InvalidArgument(f"events: expected a list of at most {_MAX_EVENTS} events")
    written = 0
    for e in events:
        if not isinstance(e, dict) or e.get("action") not in EVENT_ACTIONS or not isinstance(e.get("user"), str):
            continue  # an unknown kind is dropped, never guessed at
        details = {k: v for k, v in e.items() if k not in ("action", "user", "outcome")
                   and isinstance(v, (str, int, float, bool)) and len(str(v)) <= _MAX_FIELD}
        outcome = str(e["outcome"]) if e.get("outcome") in ("ok", "denied", "error") else "ok"
        await svc.agent.audit(e["user"][:64], e["action"], ws.name, outcome, **details)
        written += 1
    return {"written": written}


async def _activity(svc: AccessService, ws: Workspace, cred: str, body: dict[str, Any]) -> Any:
    capacity = svc.agent.services.capacity
    if capacity is None:
        return {"interval": 60, "workspace": ws.name}
    return capacity.report_activity(ws, body)


_ROUTES: dict[str, Handler] = {
    "/v1/resolve": _resolve,
    "/v1/resolve-many": _resolve_many,
    "/v1/login": _login,
    "/v1/logout": _logout,
    "/v1/events": _events,
    "/v1/activity": _activity,
}


def build_access_app(svc: AccessService) -> Starlette:
    """The ASGI app mounted at ``/access``."""

    def endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                scheme, _, cred = request.headers.get("authorization", "").partition(" ")
                ws = svc.workspace_for_server(cred.strip()) if scheme.lower() == "bearer" else None
                if ws is None:
                    raise AuthenticationFailed("unknown workspace server credential")
                try:
                    body = json.loads(await request.body() or b"{}")
                except ValueError:
                    raise ProtocolError("request body is not JSON") from None
                if not isinstance(body, dict):
                    raise ProtocolError("request body must be a JSON object")
                return JSONResponse(await handler(svc, ws, cred.strip(), body))
            except FetchmlError as exc:
                return JSONResponse(exc.to_dict(), status_code=exc.http_status)
            except Exception:
                log.exception("access endpoint %s failed", request.url.path)
                return JSONResponse({"error": "unknown", "message": "internal error in the agent"}, status_code=500)

        return run

    return Starlette(routes=[Route(path, endpoint(h), methods=["POST"]) for path, h in _ROUTES.items()])
