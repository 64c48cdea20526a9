"""fetchml_workspace: which HTTP calls the module makes for each state, and what it reports.

These are unit tests of the module's decisions: each test scripts the agent's answers to the exact
calls it expects (``fetch_url`` replaced by a recorder that fails on any unexpected call). Error
answers are the agent's own envelope, built by ``fetchml_agent.errors`` (the same ``to_dict`` and
HTTP status the agent sends), so the module and the agent cannot drift apart; the last tests run the
module against a real agent process. The fetchml_agent role's molecule scenario and the cluster
scenario exercise it on provisioned hosts.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from conftest import load_plugin, run_module

from fetchml_agent.errors import AuthenticationFailed, FetchmlError, NotFound, PolicyDenied
from tests.conftest import KEYS, AgentProcess

ws = load_plugin("modules", "fetchml_workspace")
BASE = "http://127.0.0.1:8765"
ARGS = {"name": "vision", "agent_url": BASE, "api_key": "k-123"}
RUNNING = {
    "name": "vision",
    "status": "running",
    "resources": {"cpu": 4, "memory": "8g", "gpu": 1},
    "image": "img:1",
}


class Agent:
    """Scripted answers: a list of ((method, path), (status, body)) consumed in order."""

    def __init__(self, script: list[tuple[tuple[str, str], tuple[int, Any]]]) -> None:
        self.script = list(script)
        self.calls: list[tuple[str, str, Any, dict[str, str]]] = []

    def __call__(
        self, module: Any, url: str, data: Any = None, headers: Any = None, method: Any = None, **kw: Any
    ):
        assert url.startswith(BASE), url
        path = url[len(BASE) :]
        body = json.loads(data) if data else None
        self.calls.append((method, path, body, headers))
        assert self.script, f"unexpected call {method} {path}"
        (want_method, want_path), (status, answer) = self.script.pop(0)
        assert (method, path) == (want_method, want_path)
        raw = json.dumps(answer).encode() if answer is not None else b""
        if 200 <= status < 300:
            return io.BytesIO(raw), {"status": status, "msg": "OK"}
        return None, {"status": status, "msg": "HTTP Error", "body": raw}


def run(monkeypatch: pytest.MonkeyPatch, agent: Agent, **args: Any):
    monkeypatch.setattr(ws, "fetch_url", agent)
    out = run_module(ws, {**ARGS, **args}, monkeypatch)
    assert not agent.script, f"calls not made: {agent.script}"
    return out


GET = ("GET", "/api/v1/jupyter/workspaces/vision")
POST = ("POST", "/api/v1/jupyter/workspaces")
DELETE = ("DELETE", "/api/v1/jupyter/workspaces/vision")


def envelope(err: FetchmlError) -> tuple[int, dict[str, Any]]:
    """The status and JSON body with which the agent answers ``err`` over HTTP."""
    return err.http_status, err.to_dict()


MISSING = envelope(NotFound("no workspace or service named 'vision'", "`ml jupyter list` shows the workspaces you can see"))


def test_create_when_missing(monkeypatch):
    agent = Agent([(GET, MISSING), (POST, (201, {"workspace": RUNNING}))])
    out = run(monkeypatch, agent, resources={"cpu": 4, "memory": "8g", "gpu": 1}, image="img:1")
    assert out.result["changed"] is True
    assert out.result["workspace"] == RUNNING
    _, _, body, headers = agent.calls[1]
    assert body == {"name": "vision", "resources": {"cpu": 4.0, "memory": "8g", "gpu": 1}, "image": "img:1"}
    assert headers["Authorization"] == "Bearer k-123"


def test_present_and_equal_changes_nothing(monkeypatch):
    agent = Agent([(GET, (200, RUNNING))])
    # 8192 MiB and "8g" are the same size; 4 and 4.0 the same CPU count.
    out = run(monkeypatch, agent, resources={"cpu": 4, "memory": "8192"}, image="img:1")
    assert out.result["changed"] is False
    assert out.result["differences"] == {}


def test_difference_fails_and_names_it(monkeypatch):
    agent = Agent([(GET, (200, RUNNING))])
    out = run(monkeypatch, agent, resources={"memory": "16g"})
    assert out.failed
    assert "resources.memory is '8g', wanted '16g'" in out.result["msg"]
    assert "recreate=true" in out.result["msg"]


def test_gpu_added_to_a_workspace_without_gpu_is_a_difference(monkeypatch):
    agent = Agent([(GET, (200, {**RUNNING, "resources": {"cpu": 4, "memory": "8g"}}))])
    assert run(monkeypatch, agent, resources={"gpu": 1}).failed


def test_recreate(monkeypatch):
    agent = Agent([(GET, (200, RUNNING)), (DELETE, (204, None)), (POST, (201, {"name": "vision"}))])
    out = run(monkeypatch, agent, resources={"memory": "16g"}, recreate=True, _ansible_diff=True)
    assert out.result["changed"] is True
    assert out.result["diff"]["before"] == RUNNING
    assert out.result["diff"]["after"]["resources"] == {"memory": "16g"}


def test_check_mode_reads_only(monkeypatch):
    agent = Agent([(GET, MISSING)])
    out = run(monkeypatch, agent, _ansible_check_mode=True, _ansible_diff=True)
    assert out.result["changed"] is True
    assert out.result["diff"] == {"before": {}, "after": {"name": "vision"}}


def test_absent_deletes(monkeypatch):
    agent = Agent([(GET, (200, RUNNING)), (DELETE, (200, {"message": "deleted"}))])
    out = run(monkeypatch, agent, state="absent")
    assert out.result["changed"] is True and out.result["workspace"] == {}
    assert "diff" not in out.result


def test_absent_when_missing_changes_nothing(monkeypatch):
    out = run(monkeypatch, Agent([(GET, MISSING)]), state="absent")
    assert out.result["changed"] is False


def test_absent_in_check_mode_does_not_delete(monkeypatch):
    out = run(monkeypatch, Agent([(GET, (200, RUNNING))]), state="absent", _ansible_check_mode=True)
    assert out.result["changed"] is True


def test_auth_failure_is_explained(monkeypatch):
    agent = Agent([(GET, envelope(AuthenticationFailed("authentication failed")))])
    out = run(monkeypatch, agent)
    assert out.failed
    assert out.result["msg"] == (
        "reading workspace 'vision': the agent answered 401: authentication failed "
        "(the api_key is not known to the agent)"
    )


def test_policy_error_on_create_is_passed_on(monkeypatch):
    denied = PolicyDenied("package 'requests' is blocked", "blocked_packages", package="requests", rule="blocked")
    agent = Agent([(GET, MISSING), (POST, envelope(denied))])
    out = run(monkeypatch, agent)
    assert out.failed
    assert out.result["msg"] == (
        "creating workspace 'vision': the agent answered 403: package 'requests' is blocked (blocked_packages)"
    )


def test_a_body_that_is_not_the_envelope_is_shown_as_it_came(monkeypatch):
    agent = Agent([(GET, (502, "Bad Gateway"))])
    out = run(monkeypatch, agent)
    assert out.failed and out.result["msg"] == "reading workspace 'vision': the agent answered 502: Bad Gateway"


def test_errors_of_a_real_agent(monkeypatch, fresh_agent: AgentProcess):
    """The module against ``fetchml-agent serve``: what the agent says reaches the task's msg."""
    fresh_agent.start()
    real = {"agent_url": fresh_agent.ws_url, "name": "vision"}
    out = run_module(ws, {**real, "api_key": "not-a-known-key"}, monkeypatch)
    assert out.failed
    assert out.result["msg"].startswith(
        "reading workspace 'vision': the agent answered 401: authentication failed: the API key is not known"
    ) and out.result["msg"].endswith("(the api_key is not known to the agent)")
    out = run_module(ws, {**real, "api_key": KEYS["bob"], "state": "absent"}, monkeypatch)
    assert not out.failed and out.result["changed"] is False  # 404: nothing to delete
    out = run_module(ws, {**real, "api_key": KEYS["bob"], "name": "Not_Valid"}, monkeypatch)
    assert out.failed
    assert "the agent answered 422: invalid workspace name 'Not_Valid' (use 1-63 lowercase letters" in out.result["msg"]


def test_unreachable_agent(monkeypatch):
    def down(module, url, **kw):
        return None, {"status": -1, "msg": "Connection refused"}

    monkeypatch.setattr(ws, "fetch_url", down)
    out = run_module(ws, ARGS, monkeypatch)
    assert out.failed and out.result["msg"] == f"cannot reach the agent at {BASE}: Connection refused"


def test_bad_memory_fails_before_any_call(monkeypatch):
    out = run(monkeypatch, Agent([]), resources={"memory": "eight"})
    assert out.failed and "resources.memory" in out.result["msg"]


def test_api_key_never_in_the_result(monkeypatch):
    agent = Agent([(GET, MISSING), (POST, (201, RUNNING))])
    out = run(monkeypatch, agent)
    assert "k-123" not in json.dumps(out.result)


@pytest.mark.parametrize(
    ("given", "base"),
    [
        ("ws://agent:8080/ws", "http://agent:8080"),
        ("wss://agent.example:8443/ws", "https://agent.example:8443"),
        ("https://agent:8443/", "https://agent:8443"),
        ("http://h:1/prefix", "http://h:1/prefix"),
    ],
)
def test_agent_url_forms(given, base):
    assert ws.agent_base_url(given) == base


def test_agent_url_without_scheme_is_refused():
    with pytest.raises(ValueError, match="https://host:port"):
        ws.agent_base_url("agent:8080")


def test_agent_url_from_the_cli_environment(monkeypatch):
    monkeypatch.setenv("FETCHML_SERVER", "ws://127.0.0.1:8765/ws")
    monkeypatch.setenv("FETCHML_API_KEY", "k-123")
    agent = Agent([(GET, (200, RUNNING))])
    monkeypatch.setattr(ws, "fetch_url", agent)
    out = run_module(ws, {"name": "vision"}, monkeypatch)
    assert out.result["changed"] is False
