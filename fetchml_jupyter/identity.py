"""Who a request comes from: personal tokens, the session cookie, and the login page.

Credentials, first found wins: ``Authorization: token|bearer X``, ``?token=X``, then the session
cookie. The agent answers who it is (:class:`~fetchml_jupyter.agent.Resolver`). A browser that
opens a page with ``?token=`` gets a session of its own (the agent opens it; the cookie holds only
the session's token), so the rest of JupyterLab's requests ride on the cookie and the session's
idle and absolute timeouts apply. The login page (``/login``) takes a user name and an API key
(or, for the owner, the workspace password) and a TOTP code where one is needed, and hands them
to the agent; this server checks nothing itself and keeps no secret of anyone's.
"""

from __future__ import annotations

import html
import re
import urllib.parse
from typing import Any

from jupyter_server.auth import IdentityProvider, User
from jupyter_server.auth.decorator import allow_unauthenticated
from jupyter_server.auth.login import LoginFormHandler
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from tornado import web
from tornado.websocket import WebSocketHandler
from traitlets import default

from . import state
from .agent import AgentUnavailable, Answer, FetchmlUser, Refusal

__all__ = ["FetchmlIdentityProvider", "FetchmlLoginHandler", "FetchmlLogoutHandler", "session_cookie_name"]

_AUTH_HEADER = re.compile(r"(token|bearer)\s+(.+)", re.IGNORECASE)


def session_cookie_name(handler: web.RequestHandler) -> str:
    """One cookie per server (host and port): workspaces on one host do not share sessions."""
    return "fetchml-session-" + re.sub(r"[^A-Za-z0-9]", "-", handler.request.host)


def _peer(handler: web.RequestHandler) -> tuple[str, str]:
    """The connection's peer (as the runtime says to read it) and the forwarded-for header it
    sent; the agent decides which address is the client's."""
    return state.peer_address(handler.request.remote_ip or ""), handler.request.headers.get("X-Forwarded-For", "")


def _is_page(handler: web.RequestHandler) -> bool:
    return handler.request.method == "GET" and not isinstance(handler, (APIHandler, WebSocketHandler))


def _set_session_cookie(handler: web.RequestHandler, token: str) -> None:
    handler.set_cookie(session_cookie_name(handler), token, path=getattr(handler, "base_url", "/"), httponly=True,
                       samesite="Lax", secure=handler.request.protocol == "https")


class FetchmlIdentityProvider(IdentityProvider):
    """The agent decides who is calling; see the module docstring."""

    @default("login_handler_class")
    def _login_handler_default(self) -> type:
        return FetchmlLoginHandler

    @default("logout_handler_class")
    def _logout_handler_default(self) -> type:
        return FetchmlLogoutHandler

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # The server's own credential (Jupyter's token, from the runtime): it identifies this
        # server to the agent. Kept out of the token trait, which JupyterLab copies into every
        # page it serves.
        state.configure_credential(self.token)
        self.token = ""
        self.token_generated = False

    @property
    def auth_enabled(self) -> bool:
        return True

    @property
    def login_available(self) -> bool:
        return True

    def validate_security(self, app: Any, ssl_options: dict[str, Any] | None = None) -> None:
        if not state.active():
            app.log.warning("fetchml_jupyter: no agent configured (FETCHML_ACCESS_URL): every request is refused")

    def identity_model(self, user: User) -> dict[str, Any]:
        model = {k: getattr(user, k) for k in ("username", "name", "display_name", "initials", "avatar_url", "color")}
        if isinstance(user, FetchmlUser):
            model["role"] = user.role
        return model

    def _credential(self, handler: web.RequestHandler) -> tuple[str, str]:
        m = _AUTH_HEADER.match(handler.request.headers.get("Authorization", "") or "")
        if m:
            return m.group(2).strip(), "header"
        token = handler.get_query_argument("token", "")
        if token:
            return token, "query"
        return handler.get_cookie(session_cookie_name(handler)) or "", "cookie"

    async def get_user(self, handler: web.RequestHandler) -> User | None:  # type: ignore[override]
        known = getattr(handler, "_jupyter_current_user", None)
        if known:
            return known  # type: ignore[no-any-return]
        credential, source = self._credential(handler)
        if not credential or not state.active():
            return None
        peer, forwarded = _peer(handler)
        try:
            if source == "query" and _is_page(handler) and not credential.startswith("fmls."):
                result = await state.resolver().login(token=credential, peer=peer, forwarded_for=forwarded)
                if isinstance(result, Answer) and result.session_token:
                    _set_session_cookie(handler, result.session_token)
                    credential, source = result.session_token, "cookie"
            else:
                result = await state.resolver().resolve(credential, peer, forwarded)
        except AgentUnavailable as exc:
            self.log.error("fetchml_jupyter: %s", exc)
            raise web.HTTPError(503, "the agent that decides access to this workspace cannot be reached") from None
        if isinstance(result, Refusal):
            handler._fetchml_refusal = result  # type: ignore[attr-defined]
            if source == "cookie":
                handler.clear_cookie(session_cookie_name(handler), path=getattr(handler, "base_url", "/"))
            if isinstance(handler, APIHandler) or isinstance(handler, WebSocketHandler):
                raise web.HTTPError(result.status if result.status in (401, 403) else 403, result.message)
            return None
        user = result.user
        if source in ("header", "query"):
            handler._token_authenticated = True  # type: ignore[attr-defined]
        state.note_request(handler, user, credential, peer, forwarded)
        return user


_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Log in · {workspace}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:26em;margin:4em auto;color:#222}}
label{{display:block;margin:.8em 0 .2em}}input{{width:100%;padding:.4em;box-sizing:border-box}}
button{{margin-top:1em;padding:.5em 1.2em}}.msg{{color:#b00020;margin:1em 0}}small{{color:#666}}</style></head>
<body><h2>Log in to {workspace}</h2>
<form method="post" action="{action}">{xsrf}
<input type="hidden" name="next" value="{next}"><input type="hidden" name="token" value="{token}">
{fields}
<label for="otp">Authenticator code{otp_hint}</label><input id="otp" name="otp" autocomplete="one-time-code"
 inputmode="numeric" {otp_focus}>
<button type="submit" id="login_submit">Log in</button></form>
<p class="msg" id="message">{message}</p>
<p><small>Or open the personal URL that <code>ml jupyter info</code> prints for you.</small></p></body></html>"""

_CREDENTIAL_FIELDS = """<label for="username">User</label><input id="username" name="username" value="{user}" autofocus>
<label for="password">API key, or the workspace password (owner)</label>
<input id="password" type="password" name="password">"""


class FetchmlLoginHandler(LoginFormHandler):
    """``/login``: hands what the person typed to the agent; sets the session cookie it returns."""

    def _render(self, message: str | None = None, *, user: str = "", token: str = "", mfa: bool = False,
                status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        nxt = self.get_argument("next", default=self.base_url)
        self.finish(_PAGE.format(
            workspace=html.escape(state.workspace_label()), action=html.escape(self.request.path),
            xsrf=self.xsrf_form_html(), next=html.escape(nxt), token=html.escape(token),
            fields="" if token else _CREDENTIAL_FIELDS.format(user=html.escape(user)),
            otp_hint=" (required)" if mfa else " (if you enrolled one)", otp_focus="autofocus" if mfa else "",
            message=html.escape(message or ""),
        ))

    def _token_from_next(self) -> str:
        nxt = self.get_argument("next", default="")
        query = urllib.parse.urlsplit(nxt).query
        return urllib.parse.parse_qs(query).get("token", [""])[0]

    @allow_unauthenticated
    def get(self) -> None:
        token = self._token_from_next()
        refusal = getattr(self, "_fetchml_refusal", None)
        self._render(refusal.message if refusal else None, token=token, mfa=bool(token))

    @allow_unauthenticated
    async def post(self) -> None:
        if not state.active():
            raise web.HTTPError(503, "no agent is configured for this workspace")
        user = self.get_argument("username", default="").strip()
        secret = self.get_argument("password", default="")
        otp = self.get_argument("otp", default="")
        token = self.get_argument("token", default="")
        peer, forwarded = _peer(self)
        try:
            result = await state.resolver().login(user=user, secret=secret, otp=otp, token=token, peer=peer,
                                                  forwarded_for=forwarded)
        except AgentUnavailable:
            raise web.HTTPError(503, "the agent that decides access to this workspace cannot be reached") from None
        if isinstance(result, Refusal):
            self._render(result.message, user=user, token=token, mfa=result.mfa_required, status=401)
            return
        if result.session_token:
            _set_session_cookie(self, result.session_token)
        nxt = self.get_argument("next", default=self.base_url)
        # Drop a token from the page we go back to: the cookie carries the session now. Keep the
        # rest, valueless parameters included (JupyterLab's ``?reset``).
        parts = urllib.parse.urlsplit(nxt)
        kept = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if k != "token"]
        query = urllib.parse.urlencode(kept)
        self._redirect_safe(urllib.parse.urlunsplit(("", "", parts.path, query, parts.fragment)))


class FetchmlLogoutHandler(JupyterHandler):
    """``/logout``: ends the session at the agent and forgets the cookie."""

    @allow_unauthenticated
    async def get(self) -> None:
        name = session_cookie_name(self)
        token = self.get_cookie(name)
        if token and state.active():
            try:
                await state.resolver().logout(token)
            except AgentUnavailable:
                pass
            state.resolver().forget(token)
        self.clear_cookie(name, path=self.base_url)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(f'<!doctype html><p>Logged out. <a href="{html.escape(self.base_url)}login">Log in again</a></p>')
