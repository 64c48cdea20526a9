"""Allowlists and the admin second factor on the agent's own API (``/ws`` and ``/api/...``).

:class:`AllowlistMiddleware` wraps the ASGI app: it works out each connection's client address
(:func:`~fetchml_agent.access.networks.client_address`: ``X-Forwarded-For`` only from trusted
proxies), refuses addresses outside ``access.allowed_networks`` before anything else runs (403; a
WebSocket handshake is refused), audits the refusal with the address, and leaves the address in
:data:`CLIENT_ADDRESS` for the per-user check. ``/index`` and ``/access`` are for workspaces and
have their own credentials; ``/api/v1/health`` stays open.

:func:`check_call` runs in both transports after authentication, before an operation: the
user's own ``allowed_networks``, and the admin step-up where ``access.mfa`` requires it. It also
leaves the request's key hash in :data:`CALL_KEY` for ``ml auth elevate``.
"""

from __future__ import annotations

import contextvars
import json

from starlette.types import ASGIApp, Receive, Scope, Send

from ..settings import User
from .service import AccessService

__all__ = ["CALL_KEY", "CLIENT_ADDRESS", "AllowlistMiddleware", "check_call"]

CLIENT_ADDRESS: contextvars.ContextVar[str | None] = contextvars.ContextVar("fetchml_client_address", default=None)
CALL_KEY: contextvars.ContextVar[bytes] = contextvars.ContextVar("fetchml_call_key", default=b"")

_OPEN_PATHS = ("/api/v1/health",)


def _guarded(path: str) -> bool:
    return (path == "/ws" or path.startswith("/api/")) and path not in _OPEN_PATHS


class AllowlistMiddleware:
    """ASGI middleware; see the module docstring."""

    def __init__(self, app: ASGIApp, access: AccessService) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not _guarded(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        svc = self.access
        peer = (scope.get("client") or ("", 0))[0]
        xff = ", ".join(v.decode("latin-1") for k, v in scope.get("headers") or [] if k == b"x-forwarded-for")
        address = svc.address(peer, xff or None)
        if not svc.network_ok(None, address):
            await svc.agent.audit("-", "access.network_denied", None, "denied", address=address,
                                  via="ws" if scope["type"] == "websocket" else "http", path=scope.get("path", ""))
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008, "reason": "address not allowed"})
                return
            body = json.dumps({"error": "permission_denied", "code": 3,
                               "message": f"access from {address} is not allowed by access.allowed_networks"}).encode()
            await send({"type": "http.response.start", "status": 403,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        token = CLIENT_ADDRESS.set(address)
        try:
            await self.app(scope, receive, send)
        finally:
            CLIENT_ADDRESS.reset(token)


def check_call(access: AccessService, user: User, key_hash16: bytes, op_name: str) -> None:
    """A ``call_checks`` hook of the transports (bound to the access service): raises
    PermissionDenied or MfaRequired."""
    CALL_KEY.set(key_hash16)
    access.check_call(user, key_hash16, op_name, CLIENT_ADDRESS.get())
