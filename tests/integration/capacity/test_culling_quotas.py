"""Idle culling and quotas (issue #16) on the local runtime: a real agent, real JupyterLab, the real `ml`.

The culled workspace is one nobody touches; the kept one runs ``time.sleep(3600)`` in a kernel that
prints nothing, started first, so when the untouched one is culled the busy one is past its own
idle timeout too (and is kept for another timeout after that). Exit 8 is the documented code of a quota refusal (docs/protocol.md).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

from tests.conftest import AgentProcess
from tests.integration.jupyter import start_busy

IDLE = 8  # seconds
CHECK = 1


class _Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        _Receiver.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def _wait(what: str, pred: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_untouched_workspace_is_culled_busy_kernel_is_not(fresh_agent: AgentProcess) -> None:
    http = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{http.server_address[1]}/hook"
    fresh_agent.extra = {
        "culling": {"idle_timeout": f"{IDLE}s", "check_interval": f"{CHECK}s", "warn_before": "4s"},
        "webhooks": [{"events": ["workspace_cull_warning", "workspace_cull"], "actions": ["http_post"], "url": hook}],
    }
    with fresh_agent.running() as agent:
        busy = agent.ml_json("jupyter", "create", "busy-one")
        start_busy(busy["url"], "import time\ntime.sleep(3600)")  # at once: it is idle until then
        agent.ml_json("jupyter", "create", "idle-one")
        _wait("info's 'will be stopped at' (after JupyterLab's first report)",
              lambda: "will be stopped at" in agent.ml("jupyter", "info", "idle-one").stdout, IDLE)

        _wait("the untouched workspace to be culled",
              lambda: agent.ml_json("jupyter", "info", "idle-one")["status"] == "stopped", IDLE + 30)
        culled = agent.ml_json("jupyter", "info", "idle-one")
        assert "stopped by the agent: idle for" in culled["message"]

        kept = agent.ml_json("jupyter", "info", "busy-one")
        assert kept["status"] == "running"
        assert "1 kernel(s) busy" in kept["activity"]["active_because"]
        assert kept["activity"]["idle_since"] is None
        shown = agent.ml("jupyter", "info", "busy-one").stdout
        assert "active because 1 kernel(s) busy" in shown
        time.sleep(IDLE)  # well past its idle timeout: still there
        assert agent.ml_json("jupyter", "info", "busy-one")["status"] == "running"

        events = agent.ml_json("jupyter", "audit", "idle-one")["events"]
        actions = [e["action"] for e in events]
        assert "workspace.cull_warning" in actions and "workspace.cull" in actions
        cull = next(e for e in events if e["action"] == "workspace.cull")
        assert cull["user"] == "agent"
        details = str(cull)
        assert "idle for" in details and "no kernel busy" in details
        assert "workspace.cull" not in [e["action"] for e in agent.ml_json("jupyter", "audit", "busy-one")["events"]]
        status = agent.ml("status").stdout
        assert "culling: idle timeout 8s" in status and "culls_stop_idle 1" in status
        # The owner's webhook heard of it before, and of the cull itself.
        # (busy-one may have been warned too, in the seconds before its kernel started: it was idle then.)
        _wait("the webhooks", lambda: {e["event"] for e in _Receiver.received if e["workspace"] == "idle-one"}
              >= {"workspace_cull_warning", "workspace_cull"}, 15)
        warning = next(e for e in _Receiver.received
                       if e["event"] == "workspace_cull_warning" and e["workspace"] == "idle-one")
        assert "will be stopped at" in json.dumps(warning)
        assert not [e for e in _Receiver.received if e["event"] == "workspace_cull" and e["workspace"] == "busy-one"]
    http.shutdown()


def test_quotas_refuse_create_start_and_scale_with_exit_8(fresh_agent: AgentProcess) -> None:
    fresh_agent.extra = {"quotas": {"default": {"workspaces": 3, "running": 1},
                                    "teams": {"data-science-team": {"cpu": 2}}}}
    with fresh_agent.running() as agent:
        agent.ml_json("jupyter", "create", "bob-one", user="bob")
        refused = agent.ml("jupyter", "create", "bob-two", user="bob", check=False)
        assert refused.returncode == 8, refused
        assert "at most 1 workspaces running (quotas.default.running)" in refused.stderr
        assert "in use: 1 workspaces running (bob-one)" in refused.stderr
        assert "bob-two" not in agent.ml("jupyter", "list", user="bob").stdout  # nothing left behind
        # A stop frees the slot; starting the first again is then over the quota.
        agent.ml("jupyter", "stop", "bob-one", user="bob")
        agent.ml_json("jupyter", "create", "bob-two", user="bob")
        again = agent.ml("jupyter", "start", "--name", "bob-one", user="bob", check=False)
        assert again.returncode == 8 and "bob-two" in again.stderr, again
        # The quota is the owner's: admin is not limited by bob's.
        agent.ml_json("jupyter", "create", "admin-one")

        # A team's cpu: carol (data-science-team) may hold 2 CPUs in all; a scale past it is refused
        # before anything restarts, and the workspace keeps running with what it had.
        agent.ml_json("jupyter", "create", "carol-one", "--cpu", "1", user="carol")
        over = agent.ml("jupyter", "scale", "carol-one", "--cpu", "3", user="carol", check=False)
        assert over.returncode == 8, over
        assert "team data-science-team may use at most 2 CPUs (quotas.teams.data-science-team.cpu)" in over.stderr
        info = agent.ml_json("jupyter", "info", "carol-one", user="carol")
        assert info["status"] == "running" and info["resources"]["cpu"] == 1.0
        status = agent.ml_json("status", user="bob")["capacity"]["quota"]
        assert status["in_use"]["running_workspaces"] == ["bob-two"] and status["limits"]["running"] == 1

        # Lowering a quota stops nothing: bob is over running: 0 now, and may still restart what runs.
        agent.stop()
        agent.extra["quotas"]["default"]["running"] = 0
        agent.write_config()
        agent.start()
        assert agent.ml_json("jupyter", "restart", "bob-two", user="bob")["status"] == "running"
        assert agent.ml("jupyter", "start", "--name", "bob-one", user="bob", check=False).returncode == 8


def test_a_persons_request_is_activity_a_frontend_poll_is_not(fresh_agent: AgentProcess) -> None:
    from tests.integration.jupyter import _request, put_contents, split_url

    fresh_agent.extra = {"culling": {"idle_timeout": "1h", "check_interval": f"{CHECK}s"}}
    with fresh_agent.running() as agent:
        ws = agent.ml_json("jupyter", "create", "watched", user="bob")
        base, token = split_url(ws["url"])

        def activity() -> dict[str, Any]:
            return agent.ml_json("jupyter", "info", "watched", user="bob")["activity"]  # type: ignore[no-any-return]

        first = _wait("JupyterLab's first report", lambda: activity()["idle_since"], 20)
        assert activity()["last_person"] is None  # the agent's own checks are not a person
        time.sleep(2)
        for _ in range(3):  # what an open tab polls by itself
            _request(base, token, "GET", "api/kernels")
            _request(base, token, "GET", "api/sessions")
        time.sleep(3)
        assert activity()["idle_since"] == first
        put_contents(ws["url"], "notes.txt", {"type": "file", "format": "text", "content": "hi"})  # a person's save
        moved = _wait("idle since to move", lambda: activity()["idle_since"] != first and activity(), 10)
        assert moved["idle_since"] > first and moved["last_person"] == "bob"
        assert "last request by bob" in agent.ml("jupyter", "info", "watched", user="bob").stdout
