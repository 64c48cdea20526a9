"""The agent's home page: server-rendered HTML, no script, every action an operation of the API.

Pages (on the agent's main listener):

``GET /``                                 your workspaces (status, use now, Open, start/stop/restart,
                                          report); admins also the pending package requests and the
                                          audit log with the chain's verification state
``GET /login``, ``POST /login``           user name, API key, and the TOTP code where enrolled or
                                          required: the same login as JupyterLab's (AccessService.login,
                                          a session of its own, ``access.session_idle``/``session_max``)
``POST /logout``
``GET /ui/workspaces/{name}/report``      the workspace's report (the page ``ml jupyter report`` writes)
``POST /ui/workspaces/{name}/{action}``   start, stop, restart
``POST /ui/requests/{id}/{decision}``     approve, deny (admins)
``POST /ui/audit/verify``                 verify the audit chain (admins)

Each action calls the same operation, with the same role checks and audit, as ``ml`` does
(:meth:`~fetchml_agent.service.registry.Operation.run`, transport ``web``), after the same call
checks (allowlists, the admin second factor: a session opened with a code counts as elevated).
Forms carry a token bound to the session (and a foreign ``Origin`` is refused); the cookie is
HttpOnly, SameSite=Strict, Secure under TLS. Pages send a Content-Security-Policy that allows no
script and nothing from elsewhere.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ..access.service import AccessService
from ..errors import FetchmlError, MfaRequired
from ..governance.service import governance
from ..protocol.opcodes import Opcode
from ..service.access import visible
from ..service.calls import Call, Result
from ..service.context import AgentContext
from ..service.registry import OPERATIONS
from ..service.views import browser_url
from ..settings import User
from ..store.access import SessionRow
from ..store.workspaces import Workspace
from ..units import format_bytes
from ..usage.charts import small_chart
from ..usage.ops import usage_of

__all__ = ["CSP", "build_routes", "cookie_name", "csrf_token"]

CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
_ACTIONS = {"start": Opcode.START_JUPYTER, "stop": Opcode.STOP_JUPYTER, "restart": Opcode.RESTART_WORKSPACE}
_TEMPLATES = jinja2.Environment(loader=jinja2.FileSystemLoader(str(Path(__file__).with_name("templates"))),
                                autoescape=True, trim_blocks=True, lstrip_blocks=True)


def cookie_name(request: Request) -> str:
    """``fetchml-session-<host>-<port>``, as JupyterLab's (cookies do not tell ports apart)."""
    host = re.sub(r"[^A-Za-z0-9.-]", "-", request.url.hostname or "agent")
    return f"fetchml-session-{host}-{request.url.port or (443 if request.url.scheme == 'https' else 80)}"


def csrf_token(session_token: str) -> str:
    """The form token of a session: only who holds the (HttpOnly) session can know it."""
    return hashlib.sha256(b"fetchml home form\0" + session_token.encode()).hexdigest()[:32]


def _key16(session: SessionRow) -> bytes:
    """What the call checks see as this session's key (the admin step-up is per key)."""
    return hashlib.sha256(b"fetchml home session\0" + session.id.encode()).digest()[:16]


def _html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers={
        "content-security-policy": CSP, "x-content-type-options": "nosniff", "referrer-policy": "same-origin",
        "cache-control": "no-store"})


_FORM_MAX = 64 * 1024


async def _form(request: Request) -> dict[str, str]:
    """An url-encoded form (what these pages' forms send), at most 64 KiB; the last value wins."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _FORM_MAX:
            return {}
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    return {k: v[-1] for k, v in urllib.parse.parse_qs(body.decode("utf-8", "replace")).items()}


def _safe_next(value: str | None) -> str:
    """Where to go after the login: a path of this agent only (browsers read ``/\\host`` as
    ``//host``, another site; control characters could split the header)."""
    if not value or not value.startswith("/") or value[1:2] in ("/", "\\") or any(ord(c) < 32 for c in value):
        return "/"
    return value


class _Page:
    """What a request of a logged-in person carries."""

    def __init__(self, user: User, session: SessionRow, token: str) -> None:
        self.user, self.session, self.token = user, session, token
        self.csrf = csrf_token(token)


class _Pages:
    """The home page's handlers for one agent."""

    def __init__(self, agent: AgentContext, access: AccessService) -> None:
        self.agent, self.access = agent, access

    def address(self, request: Request) -> str:
        peer = request.client.host if request.client else ""
        return self.access.address(peer, request.headers.get("x-forwarded-for"))

    async def page_of(self, request: Request) -> _Page | None:
        token = request.cookies.get(cookie_name(request), "")
        found = await self.access.home_session(token, self.address(request)) if token else None
        return _Page(found[0], found[1], token) if found else None

    def logged_in(self, handler: Callable[[Request, _Page], Awaitable[Response]],
                  form: bool = False) -> Callable[[Request], Awaitable[Response]]:
        """``handler`` for a logged-in person (else to the login page); a form's token checked."""

        async def run(request: Request) -> Response:
            page = await self.page_of(request)
            if page is None:
                return RedirectResponse("/login?" + urllib.parse.urlencode({"next": request.url.path}), status_code=303)
            if form:
                origin = request.headers.get("origin")
                data = await _form(request)
                foreign = bool(origin) and urllib.parse.urlsplit(origin or "").netloc != request.url.netloc
                if foreign or not hmac.compare_digest(str(data.get("csrf", "")), page.csrf):
                    return _html(_error_page("this form is stale or came from another site; reload the page"), 403)
                request.state.form = data
            return await handler(request, page)

        return run

    async def call(self, page: _Page, opcode: Opcode, args: dict[str, Any]) -> Result:
        """An operation as ``ml`` would call it: the call checks, the role checks, the audit."""
        op = OPERATIONS[opcode]
        for check in self.agent.services.hooks.call_checks:
            check(page.user, _key16(page.session), op.name)
        return await op.run(self.agent, Call(page.user, "web"), op.validate(args))

    async def home(self, request: Request, page: _Page) -> Response:
        return _html(await render_home(self.agent, page, self.call, request.query_params.get("notice", "")))

    async def login_form(self, request: Request) -> Response:
        if await self.page_of(request) is not None:
            return RedirectResponse(_safe_next(request.query_params.get("next")), status_code=303)
        return _html(_TEMPLATES.get_template("login.html.j2").render(
            next=_safe_next(request.query_params.get("next")), message="", user="", need_code=False))

    async def login(self, request: Request) -> Response:
        data = await _form(request)
        user, key, otp = (str(data.get(k, "")) for k in ("user", "key", "otp"))
        nxt = _safe_next(str(data.get("next", "/")))
        peer = request.client.host if request.client else ""
        try:
            answer = await self.access.login(None, user=user[:64], secret=key[:4096], otp=otp[:64], token="",
                                             peer=peer, forwarded_for=request.headers.get("x-forwarded-for"))
        except FetchmlError as exc:
            need_code = isinstance(exc, MfaRequired) or bool(otp)
            return _html(_TEMPLATES.get_template("login.html.j2").render(
                next=nxt, message=exc.message, user=user, need_code=need_code), exc.http_status)
        s = self.access.sessions[answer["session"]["id"]]
        if s.mfa:
            self.access.trust_session(s.user, _key16(s), self.access.session_expires_at(s))
        response = RedirectResponse(nxt, status_code=303)
        response.set_cookie(cookie_name(request), answer["session_token"], httponly=True, samesite="strict",
                            secure=request.url.scheme == "https", path="/")
        return response

    async def logout(self, request: Request, page: _Page) -> Response:
        await self.access.logout_home(page.token)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(cookie_name(request), path="/")
        return response

    async def workspace_action(self, request: Request, page: _Page) -> Response:
        name, action = request.path_params["name"], request.path_params["action"]
        if action not in _ACTIONS:
            return _html(_error_page(f"no such action: {action}"), 404)
        args: dict[str, Any] = {"service_id": name} if action == "stop" else {"name": name}
        return await _act(self.call(page, _ACTIONS[action], args))

    async def request_decision(self, request: Request, page: _Page) -> Response:
        rid, decision = request.path_params["request_id"], request.path_params["decision"]
        if decision not in ("approve", "deny"):
            return _html(_error_page(f"no such decision: {decision}"), 404)
        reason = (request.state.form.get("reason") or "")[:1000]
        opcode = Opcode.APPROVE_REQUEST if decision == "approve" else Opcode.DENY_REQUEST
        return await _act(self.call(page, opcode, {"request_id": rid, "reason": reason}))

    async def verify(self, request: Request, page: _Page) -> Response:
        return await _act(self.call(page, Opcode.AUDIT_VERIFY, {"name": None}))

    async def report(self, request: Request, page: _Page) -> Response:
        try:
            result = await self.call(page, Opcode.WORKSPACE_REPORT, {
                "name": request.path_params["name"], "format": "html",
                "since": request.query_params.get("since", "7d")})
        except FetchmlError as exc:
            return _html(_error_page(exc.message), exc.http_status)
        return _html(result.data["content"])


def build_routes(agent: AgentContext, access: AccessService) -> list[BaseRoute]:
    """The home page's routes, for the agent's main listener."""
    p = _Pages(agent, access)
    return [
        Route("/", p.logged_in(p.home), methods=["GET"]),
        Route("/login", p.login_form, methods=["GET"]),
        Route("/login", p.login, methods=["POST"]),
        Route("/logout", p.logged_in(p.logout, form=True), methods=["POST"]),
        Route("/ui/workspaces/{name}/report", p.logged_in(p.report), methods=["GET"]),
        Route("/ui/workspaces/{name}/{action}", p.logged_in(p.workspace_action, form=True), methods=["POST"]),
        Route("/ui/requests/{request_id}/{decision}", p.logged_in(p.request_decision, form=True), methods=["POST"]),
        Route("/ui/audit/verify", p.logged_in(p.verify, form=True), methods=["POST"]),
    ]


async def _act(pending: Awaitable[Result]) -> Response:
    """Run an action; back to the home page with what it said (an error too)."""
    try:
        result = await pending
        notice = result.message
    except FetchmlError as exc:
        notice = "error: " + exc.message
    return RedirectResponse("/?" + urllib.parse.urlencode({"notice": notice[:300]}), status_code=303)


def _error_page(message: str) -> str:
    return _TEMPLATES.get_template("error.html.j2").render(message=message)


def _bar(used: float | None, limit: float | None) -> float | None:
    if used is None or not limit:
        return None
    return max(0.0, min(1.0, used / limit))


async def render_home(agent: AgentContext, page: _Page, call: Callable[[_Page, Opcode, dict[str, Any]], Awaitable[Result]],
                      notice: str) -> str:
    """The home page of ``page.user``."""
    user = page.user
    usage = usage_of(agent)
    rows = []
    for ws in sorted(agent.workspaces.values(), key=lambda w: w.name):
        if not visible(agent, user, ws):
            continue
        now = usage.latest(ws.id) or {}
        res = ws.resources or {}
        mem_limit = (res.get("memory_mb") or 0) * 2**20 or now.get("memory_limit_bytes")
        cpu_chart, memory_chart = _charts(ws, usage.recent(ws.id), res.get("cpu"), mem_limit or None)
        rows.append({
            "name": ws.name, "status": ws.status, "message": ws.status_message, "owner": ws.owner,
            "runtime": ws.runtime, "url": browser_url(ws, agent, user), "cpu_limit": res.get("cpu"),
            "gpu": res.get("gpu") or 0,
            "cpu": now.get("cpu_cores"), "cpu_bar": _bar(now.get("cpu_cores"), res.get("cpu")),
            "memory": format_bytes(now.get("memory_bytes")) if now else None,
            "memory_limit": format_bytes(mem_limit) if mem_limit else "no limit",
            "memory_bar": _bar(now.get("memory_bytes"), mem_limit),
            "kernels": sum((now.get("kernel_states") or {}).values()) if now else None,
            "oom_kills": now.get("oom_kills") or 0,
            # SVG drawn by the agent with its text escaped: the template puts it in as it is (|safe)
            "cpu_chart": cpu_chart, "memory_chart": memory_chart,
        })
    admin: dict[str, Any] | None = None
    if user.is_admin:
        requests = (await call(page, Opcode.REVIEW_REQUESTS, {"pending": True})).data["requests"]
        events = (await call(page, Opcode.AUDIT_LOG, {"limit": 15})).data["events"]
        verified = governance(agent).verified
        admin = {"requests": requests, "events": events,
                 "verified": None if verified is None else {"ok": verified[0], "at": verified[1]}}
    return _TEMPLATES.get_template("home.html.j2").render(
        user=user, rows=rows, admin=admin, csrf=page.csrf, notice=notice, when=_when)


#: workspace id -> (what its charts were drawn from, the CPU chart, the memory chart): a chart
#: changes only when a sample arrives (once an interval), a page is drawn far more often.
_CHARTS: dict[str, tuple[tuple[Any, ...], str, str]] = {}
_CHARTS_MAX = 10_000


def _charts(ws: Workspace, recent: list[tuple[float, float | None, float | None]], cpu_limit: float | None,
            memory_limit: float | None) -> tuple[str, str]:
    """The small CPU and memory charts of a workspace's last samples (cached until the next one)."""
    if not recent:
        return "", ""
    key = (ws.name, recent[0][0], recent[-1][0], len(recent), cpu_limit, memory_limit)
    cached = _CHARTS.get(ws.id)
    if cached is not None and cached[0] == key:
        return cached[1], cached[2]
    since = f"since {_when(recent[0][0])}"
    cpu = small_chart(f"{ws.name}: CPU (cores) {since}", [(t, c) for t, c, _ in recent], limit=cpu_limit,
                      css_class="cpu")
    memory = small_chart(f"{ws.name}: memory {since}", [(t, m) for t, _, m in recent], limit=memory_limit,
                         css_class="memory", color="#9467bd")
    if len(_CHARTS) >= _CHARTS_MAX:  # workspaces come and go: start afresh rather than grow
        _CHARTS.clear()
    _CHARTS[ws.id] = (key, cpu, memory)
    return cpu, memory


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "–"
