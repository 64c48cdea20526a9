"""Rough edges of installs a user meets: a denied request named as such, the package_installed
webhook only for installs and naming the packages, pip's error once, conda where there is none."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.conftest import AgentProcess
from tests.integration.packages.world import ServerThread, agent_for


class _Slack(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        _Slack.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def hooked(upstream: ServerThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AgentProcess, str]]:
    """An agent whose every event goes to a Slack-style receiver, and a running workspace of bob's."""
    http = ThreadingHTTPServer(("127.0.0.1", 0), _Slack)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    hooks = [{"events": ["*"], "actions": ["slack_notification"], "url": f"http://127.0.0.1:{http.server_address[1]}/"}]
    templates = tmp_path_factory.mktemp("edges-templates")
    (templates / "with-packages.yaml").write_text("resources: {cpu: 1}\npackages: [beta]\n")
    (templates / "with-blocked.yaml").write_text("packages: [beta, netlib]\n")
    agent = agent_for(tmp_path_factory.mktemp("edges-agent"), f"{upstream.url}/simple/", webhooks=hooks,
                      templates_dir=str(templates))
    try:
        with agent.running():
            name = f"edges-{random.randint(1000, 9999)}"
            agent.ml("jupyter", "create", name, user="bob")
            yield agent, name
    finally:
        http.shutdown()


def _texts(event: str) -> list[str]:
    return [m["text"] for m in _Slack.received if f": {event} on" in m["text"]]


def _settle() -> None:
    """Deliveries are in the background: let the ones in flight arrive."""
    time.sleep(1.0)


def test_package_installed_fires_for_installs_only_and_names_them(hooked: tuple[AgentProcess, str]) -> None:
    agent, ws = hooked
    agent.ml("jupyter", "install", ws, "beta", user="bob")
    deadline = time.monotonic() + 15
    while not _texts("package_installed") and time.monotonic() < deadline:
        time.sleep(0.1)
    [text] = _texts("package_installed")
    assert "beta==1.0" in text and "alpha==2.0" in text, text
    again = agent.ml("jupyter", "install", ws, "beta", user="bob")
    assert "nothing new to install" in again.stdout
    _settle()
    assert len(_texts("package_installed")) == 1, _Slack.received  # nothing new: no "installed" event
    events = agent.ml_json("jupyter", "audit", ws, "--action", "package.install")["events"]
    assert [e["outcome"] for e in events if e["action"] == "package.install"].count("unchanged") == 1


def test_install_after_a_denied_request_names_the_denial(hooked: tuple[AgentProcess, str]) -> None:
    agent, ws = hooked
    req = agent.ml_json("jupyter", "request", ws, "custom-package==1.5", "--reason", "need it", user="bob")["request"]
    agent.ml("jupyter", "deny", req["id"], "--reason=Licence not cleared")
    cp = agent.ml("jupyter", "install", ws, "custom-package==1.5", user="bob", check=False)
    assert cp.returncode == 6, cp.stderr
    assert f"request {req['id']}" in cp.stderr and "denied by admin: Licence not cleared" in cp.stderr, cp.stderr
    assert "needs an approved request" not in cp.stderr


def test_a_failed_pip_prints_its_error_once(hooked: tuple[AgentProcess, str]) -> None:
    agent, ws = hooked
    cp = agent.ml("jupyter", "install", ws, "alpha==9.9", user="bob", check=False)
    assert cp.returncode != 0
    line = next(ln for ln in cp.stderr.splitlines() if "No matching distribution found" in ln)
    assert cp.stderr.count(line.strip()) == 1, cp.stderr


def test_conda_where_the_runtime_has_none_exits_per_the_table(hooked: tuple[AgentProcess, str], tmp_path: Path) -> None:
    agent, ws = hooked
    cp = agent.ml("jupyter", "install", ws, "alpha", "--conda", user="bob", check=False)
    assert cp.returncode == 2, (cp.returncode, cp.stderr)  # NotSupported: exit 2 in errors.py's table
    assert "conda is not available" in cp.stderr and "Traceback" not in cp.stderr


def test_a_templates_packages_are_installed_at_create_and_policy_checked(hooked: tuple[AgentProcess, str]) -> None:
    agent, _ = hooked
    name = f"tpl-{random.randint(1000, 9999)}"
    cp = agent.ml("jupyter", "create", name, "--template", "with-packages", user="bob")
    try:
        assert "installing the workspace config's packages: beta" in cp.stderr, cp.stderr
        rows = {p["name"]: p for p in agent.ml_json("jupyter", "packages", name)["packages"]}
        assert rows["beta"]["installed_by"] == "bob" and rows["beta"]["spec"] == "beta" and "alpha" in rows
    finally:
        agent.ml("jupyter", "delete", name, "--yes", check=False)
    blocked = agent.ml("jupyter", "create", name + "-b", "--template", "with-blocked", user="bob", check=False)
    assert blocked.returncode == 5 and "packages:" in blocked.stderr and "netlib is blocked" in blocked.stderr
    assert name + "-b" not in agent.ml("jupyter", "list").stdout  # refused before anything started
