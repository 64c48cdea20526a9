"""Webhooks to real receivers: an HTTP endpoint (http_post, slack_notification) and an SMTP server."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.conftest import AgentProcess, free_port


class _Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Receiver.received.append((self.path, dict(self.headers), body))
        self.send_response(200 if self.path != "/broken" else 500)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def _smtp_server(port: int) -> tuple[list[bytes], Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import asyncore
        import smtpd

    messages: list[bytes] = []

    class Sink(smtpd.SMTPServer):
        def process_message(self, peer: Any, mailfrom: str, rcpttos: list[str], data: bytes, **kw: Any) -> None:
            messages.append(data)

    server = Sink(("127.0.0.1", port), None, decode_data=False)
    thread = threading.Thread(target=asyncore.loop, kwargs={"timeout": 0.1}, daemon=True)
    thread.start()
    return messages, server


def _wait(cond: Any, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_events_reach_http_slack_and_email(tmp_path: Path) -> None:
    _Receiver.received = []
    http = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{http.server_address[1]}"
    smtp_port = free_port()
    mails, smtp = _smtp_server(smtp_port)
    agent = AgentProcess(tmp_path / "agent", free_port(), {"webhooks": [
        {"events": ["workspace_created"], "actions": ["http_post", "log_event"], "url": base + "/hook", "secret": "s3cret"},
        {"events": ["*"], "actions": ["slack_notification"], "url": base + "/slack"},
        {"events": ["workspace_delete"], "actions": ["email_alert"],
         "email": {"smtp_host": "127.0.0.1", "smtp_port": smtp_port, "from": "fetchml@test", "to": ["sre@test"]}},
        {"events": ["workspace_stop"], "actions": ["http_post"], "url": base + "/broken", "timeout": 1},
    ]})
    try:
        agent.start()
        agent.ml_json("jupyter", "create", "hooked")
        _wait(lambda: any(p == "/hook" for p, _, _ in _Receiver.received))
        _, headers, body = next(r for r in _Receiver.received if r[0] == "/hook")
        event = json.loads(body)
        assert event["event"] == "workspace_created" and event["workspace"] == "hooked" and event["user"] == "admin"
        expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
        assert headers["X-FetchML-Signature"] == expected
        _wait(lambda: any(p == "/slack" for p, _, _ in _Receiver.received))
        slack = json.loads(next(b for p, _, b in _Receiver.received if p == "/slack"))
        assert "workspace_created on hooked" in slack["text"]

        agent.ml("jupyter", "stop", "hooked")  # its receiver fails: the stop itself must not
        agent.ml("jupyter", "delete", "hooked", "--yes")
        _wait(lambda: bool(mails))
        assert b"workspace_delete" in mails[0] and b"sre@test" in mails[0]
        _wait(lambda: agent.ml_json("status")["webhooks"]["failed"] >= 1, timeout=20)
        status = agent.ml_json("status")["webhooks"]
        assert status["configured"] == 4 and status["delivered"] >= 3
        assert "workspace_created" in (agent.root / "agent.log").read_text()
    finally:
        agent.cleanup_workspaces()
        agent.stop()
        http.shutdown()
        smtp.close()


def test_webhook_without_its_target_stops_the_agent(tmp_path: Path) -> None:
    agent = AgentProcess(tmp_path / "agent", free_port(), {"webhooks": [{"events": ["*"], "actions": ["slack_notification"]}]})
    with pytest.raises(RuntimeError, match=r"webhooks\[0\]: slack_notification needs url"):
        agent.start()
