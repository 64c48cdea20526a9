"""Talking to a real JupyterLab from tests: REST status, and running code in a real kernel."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["api_status", "execute", "start_busy", "get_contents", "put_contents", "split_url"]


def split_url(url: str) -> tuple[str, str]:
    """``http://localhost:P/lab?token=T`` → (``http://127.0.0.1:P/``, ``T``)."""
    parts = urlsplit(url)
    token = parse_qs(parts.query).get("token", [""])[0]
    return f"http://127.0.0.1:{parts.port}/", token


def _request(base: str, token: str, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"null")


def api_status(url: str) -> dict[str, Any]:
    base, token = split_url(url)
    return _request(base, token, "GET", "api/status")  # type: ignore[no-any-return]


def put_contents(url: str, path: str, model: dict[str, Any]) -> dict[str, Any]:
    """Save a file through Jupyter's contents API, as JupyterLab does (``model``: type, format,
    content); parent directories are created first."""
    base, token = split_url(url)
    parts = path.split("/")
    for i in range(1, len(parts)):
        _request(base, token, "PUT", "api/contents/" + "/".join(parts[:i]), {"type": "directory"})
    return _request(base, token, "PUT", "api/contents/" + path, model)  # type: ignore[no-any-return]


def get_contents(url: str, path: str) -> dict[str, Any] | None:
    """A file or directory model from Jupyter's contents API, or ``None`` when it does not exist."""
    import urllib.error

    base, token = split_url(url)
    try:
        return _request(base, token, "GET", "api/contents/" + path)  # type: ignore[no-any-return]
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def execute(url: str, code: str, timeout: float = 60) -> str:
    """Start a kernel in the workspace's JupyterLab, run ``code``, return the text/plain result
    (or the stream output), and shut the kernel down."""
    from websockets.sync.client import connect

    base, token = split_url(url)
    kernel = _request(base, token, "POST", "api/kernels", {"name": "python3"})
    session = uuid.uuid4().hex
    msg_id = uuid.uuid4().hex
    ws_url = base.replace("http://", "ws://") + f"api/kernels/{kernel['id']}/channels?token={token}"
    msg = {
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test", "session": session,
                   "date": "", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True},
    }
    out: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        with connect(ws_url, open_timeout=30, max_size=None) as ws:
            ws.send(json.dumps(msg))
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
                    out.append(reply["content"]["ename"] + ": " + reply["content"]["evalue"])
                elif kind == "status" and reply["content"]["execution_state"] == "idle":
                    return "".join(out)
        raise TimeoutError(f"kernel did not finish running {code!r}")
    finally:
        _request(base, token, "DELETE", f"api/kernels/{kernel['id']}")


def start_busy(url: str, code: str, timeout: float = 60) -> str:
    """Start a kernel, have it run ``code`` (which does not end soon), wait until the kernel says
    it is busy, and leave it running (the connection closes; the cell goes on). Returns its id."""
    from websockets.sync.client import connect

    base, token = split_url(url)
    kernel = _request(base, token, "POST", "api/kernels", {"name": "python3"})
    msg_id = uuid.uuid4().hex
    ws_url = base.replace("http://", "ws://") + f"api/kernels/{kernel['id']}/channels?token={token}"
    msg = {
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test", "session": uuid.uuid4().hex,
                   "date": "", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True},
    }
    deadline = time.monotonic() + timeout
    with connect(ws_url, open_timeout=30, max_size=None) as ws:
        ws.send(json.dumps(msg))
        while time.monotonic() < deadline:
            reply = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if (reply.get("parent_header", {}).get("msg_id") == msg_id and reply["msg_type"] == "status"
                    and reply["content"]["execution_state"] == "busy"):
                return str(kernel["id"])
    raise TimeoutError(f"the kernel never said it was busy running {code!r}")
