"""A real client of a workspace's JupyterLab for the access tests: REST, the kernel WebSocket,
and the browser's cookie flow, with whatever credential a person holds."""

from __future__ import annotations

import http.cookiejar
import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Lab", "base_and_token", "execute", "send_execute"]


def base_and_token(url: str) -> tuple[str, str]:
    """``http://localhost:P/lab?token=T`` → (``http://127.0.0.1:P/``, ``T``)."""
    parts = urllib.parse.urlsplit(url)
    return f"http://127.0.0.1:{parts.port}/", urllib.parse.parse_qs(parts.query).get("token", [""])[0]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass
class Lab:
    """One person's view of one JupyterLab: ``token`` in the Authorization header, or a browser's
    cookies (``browser=True``)."""

    base: str
    token: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    browser: bool = False

    def __post_init__(self) -> None:
        self.jar = http.cookiejar.CookieJar()
        self._opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect())

    def _xsrf(self) -> str:
        return next((c.value for c in self.jar if c.name == "_xsrf"), "")

    def call(self, method: str, path: str, body: Any = None, *, query: str = "") -> tuple[int, Any]:
        headers = {"Content-Type": "application/json", **self.headers}
        if self.token and not self.browser:
            headers["Authorization"] = f"token {self.token}"
        if self.browser and method not in ("GET", "HEAD"):
            headers["X-XSRFToken"] = self._xsrf()
        data = json.dumps(body).encode() if body is not None else None
        url = self.base + path + (("?" + query) if query else "")
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with self._opener.open(req, timeout=60) as resp:
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        try:
            return status, json.loads(raw or b"null")
        except ValueError:
            return status, raw.decode(errors="replace")

    def open_page(self, path: str) -> tuple[int, dict[str, str]]:
        """A browser's page visit (no redirects followed): status and response headers."""
        req = urllib.request.Request(self.base + path, headers=dict(self.headers))
        try:
            with self._opener.open(req, timeout=60) as resp:
                resp.read()
                return resp.status, dict(resp.headers)
        except urllib.error.HTTPError as exc:
            exc.read()
            return exc.code, dict(exc.headers)

    def form(self, path: str, fields: dict[str, str]) -> tuple[int, dict[str, str], str]:
        """POST a form as the login page does (with the page's XSRF cookie)."""
        self.open_page(path if "?" not in path else path.split("?")[0])
        data = urllib.parse.urlencode({**fields, "_xsrf": self._xsrf()}).encode()
        req = urllib.request.Request(self.base + path, data=data, method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded", **self.headers})
        try:
            with self._opener.open(req, timeout=60) as resp:
                return resp.status, dict(resp.headers), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read().decode(errors="replace")

    def kernel_ws(self, kernel_id: str) -> Any:
        """The kernel's channels WebSocket (raises websockets' InvalidStatus when refused)."""
        from websockets.sync.client import connect

        url = self.base.replace("http://", "ws://") + f"api/kernels/{kernel_id}/channels"
        headers = dict(self.headers)
        if self.token and not self.browser:
            headers["Authorization"] = f"token {self.token}"
        if self.browser:
            headers["Cookie"] = "; ".join(f"{c.name}={c.value}" for c in self.jar)
        return connect(url, open_timeout=30, max_size=None, additional_headers=headers)


def send_execute(ws: Any, code: str) -> str:
    """Send an ``execute_request`` for ``code`` over an open kernel WebSocket; its message id."""
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "t", "session": uuid.uuid4().hex,
                   "date": "", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True},
    }))
    return msg_id


def execute(ws: Any, code: str, timeout: float = 60) -> str:
    """Run ``code`` over an open kernel WebSocket; the text result or stream output. Returns at
    the kernel's idle status, as JupyterLab's own client does (the reply may still be on its way)."""
    msg_id = send_execute(ws, code)
    out: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        if reply.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind = reply["msg_type"]
        if kind == "execute_result":
            out.append(reply["content"]["data"]["text/plain"])
        elif kind == "stream":
            out.append(reply["content"]["text"])
        elif kind == "error":
            out.append(reply["content"]["ename"])
        elif kind == "status" and reply["content"]["execution_state"] == "idle":
            return "".join(out)
    raise TimeoutError(f"kernel did not finish running {code!r}")
