"""Where the policy comes from, end to end: the seed's environment variables (``off`` included),
dry-run mode, a workspace's ``security:`` and ``workspace-security.yaml``, the HTTP API, bad input."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import KEYS, AgentProcess
from tests.integration.index.localindex import free_port_url
from tests.integration.packages.world import ServerThread, agent_for


@pytest.fixture
def make_agent(tmp_path: Path, upstream: ServerThread) -> Iterator[Any]:
    made: list[AgentProcess] = []

    def make(policy: dict[str, Any] | None = None, env: dict[str, str] | None = None,
             upstream_url: str | None = None) -> AgentProcess:
        a = agent_for(tmp_path / f"agent{len(made)}", upstream_url or f"{upstream.url}/simple/", policy)
        made.append(a)
        a.start(env=env)
        return a

    try:
        yield make
    finally:
        for a in made:
            a.cleanup_workspaces()
            a.stop()


def _check(agent: AgentProcess, *args: str) -> tuple[int, dict[str, Any]]:
    cp = agent.ml("jupyter", "check-package", *args, "--json", check=False)
    return cp.returncode, json.loads(cp.stdout)


def test_check_package_exit_codes_and_json(make_agent: Any) -> None:
    agent = make_agent()
    code, doc = _check(agent, "NumPy>=1")
    assert code == 0 and {k: doc[k] for k in ("decision", "package", "rule")} == {
        "decision": "allow", "package": "numpy", "rule": "default_allow"}
    assert set(doc) >= {"decision", "package", "rule", "reason"}
    code, doc = _check(agent, "OS.System")
    assert code == 5 and doc["decision"] == "deny" and doc["package"] == "os-system" and doc["rule"] == "blocked_packages"
    code, doc = _check(agent, "tensorflow")
    assert code == 6 and doc["decision"] == "approval_required" and doc["rule"] == "approval_required"
    code, doc = _check(agent, "git+https://host.invalid/x.git")
    assert code == 5 and doc["rule"] == "vcs"
    code, doc = _check(agent, "matplotlib", "--conda", "-c", "evil-channel")
    assert code == 5 and doc["rule"] == "trusted_channels"
    code, doc = _check(agent, "requ\u0435sts")  # a Cyrillic e
    assert code == 2 and doc["error"] == "invalid_argument" and "U+0435" in doc["message"]


def test_check_a_requirements_file(make_agent: Any, tmp_path: Path) -> None:
    agent = make_agent()
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("numpy==1.26.0  # pinned\npandas>=2 \\\n  --hash=sha256:00\nrequests\n")
    cp = agent.ml("jupyter", "check-package", "-r", str(reqs), check=False)
    assert cp.returncode == 5 and "requests" in cp.stdout and "1 deny" in cp.stdout


def test_blocked_list_from_the_environment_replaces_the_config(make_agent: Any) -> None:
    agent = make_agent(env={"FETCHML_JUPYTER_BLOCKED_PACKAGES": "aiohttp,telnetlib"})
    assert _check(agent, "aiohttp")[0] == 5
    assert _check(agent, "telnetlib")[0] == 5
    assert _check(agent, "netlib")[0] == 0  # only in agent.yaml's list, which the variable replaced


def test_startup_scan_follows_the_seed_variables(make_agent: Any) -> None:
    """The seed's example: installs of a package stay blocked while an environment that already holds
    it may start with FETCHML_JUPYTER_STARTUP_BLOCKED_PACKAGES=off; a list scans for those names only."""
    agent = make_agent()
    agent.ml("jupyter", "create", "seed-example", user="bob")
    agent.ml("jupyter", "install", "seed-example", "netlib", "alpha", "--force")  # netlib is in the environment now
    assert agent.ml("jupyter", "restart", "seed-example", check=False).returncode == 5
    request_id = agent.ml_json("jupyter", "request", "seed-example", "custom-package", user="bob")["request"]["id"]
    agent.ml("jupyter", "approve", request_id)

    agent.stop()
    agent.start(env={"FETCHML_JUPYTER_STARTUP_BLOCKED_PACKAGES": "off"})
    assert agent.ml_json("jupyter", "restart", "seed-example")["status"] == "running"
    blocked = agent.ml("jupyter", "install", "seed-example", "netlib", user="bob", check=False)
    assert blocked.returncode == 5 and "blocked_packages" in blocked.stderr  # installs stay blocked
    assert _check(agent, "custom-package", "--workspace", "seed-example")[1]["rule"] == "approved_request"  # kept
    scan = json.loads(agent.ml("jupyter", "security-scan", "seed-example", "--json", check=False).stdout)
    assert scan["startup_scan"]["list"] == "off" and scan["startup_scan"]["found"] == []
    assert [f["name"] for f in scan["findings"] if f["location"] == "workspace"] == ["netlib"]  # still reported

    agent.stop()
    agent.start(env={"FETCHML_JUPYTER_STARTUP_BLOCKED_PACKAGES": "leftpad,urllib3"})
    assert agent.ml_json("jupyter", "restart", "seed-example")["status"] == "running"  # netlib is not on the list

    agent.stop()
    agent.start(env={"FETCHML_JUPYTER_STARTUP_BLOCKED_PACKAGES": "alpha"})
    refused = agent.ml("jupyter", "restart", "seed-example", check=False)
    assert refused.returncode == 5 and "blocked packages: alpha 2.0" in refused.stderr


def test_invalid_variable_stops_the_agent(tmp_path: Path, upstream: ServerThread) -> None:
    agent = agent_for(tmp_path / "bad-env", f"{upstream.url}/simple/")
    with pytest.raises(RuntimeError, match="FETCHML_JUPYTER_BLOCKED_PACKAGES: not valid package names"):
        agent.start(env={"FETCHML_JUPYTER_BLOCKED_PACKAGES": "ok,not valid!"})


def test_dry_run_logs_and_allows(make_agent: Any) -> None:
    agent = make_agent(policy={"mode": "dry_run", "blocked_packages": ["netlib"]})
    agent.ml("jupyter", "create", "dry", user="bob")
    code, doc = _check(agent, "netlib")
    assert code == 0 and doc["decision"] == "allow" and doc["dry_run"] == {"would_have": "deny"}
    cp = agent.ml("jupyter", "install", "dry", "webtool", user="bob")  # webtool needs netlib
    assert "dry run (package index): dry run, would have been deny: netlib is blocked" in cp.stderr
    assert "installed webtool 1.0, netlib 1.0" in cp.stdout
    events = agent.ml_json("jupyter", "audit", "dry", "--action", "package.")["events"]
    index = [e for e in events if e["action"] == "package.index" and e["details"]["package"] == "netlib"]
    assert index and index[0]["outcome"] == "dry_run" and index[0]["details"]["would_have"] == "deny"


def test_workspace_security_tightens_and_never_loosens(make_agent: Any, tmp_path: Path) -> None:
    agent = make_agent()
    config = tmp_path / "workspace-config.yaml"
    config.write_text(yaml.safe_dump({"security": {"blocked_packages": ["leftpad"], "allowlist": None}}))
    agent.ml("jupyter", "create", "tight", "--config", str(config), user="bob")
    assert _check(agent, "leftpad", "--workspace", "tight")[0] == 5
    assert _check(agent, "leftpad")[0] == 0  # the global policy is untouched
    path = Path(agent.ml_json("jupyter", "info", "tight")["path"])
    (path / "workspace-security.yaml").write_text(yaml.safe_dump(
        {"package_management": {"approval_required": ["alpha"], "trusted_channels": ["conda-forge", "company-internal"]}}))
    code, doc = _check(agent, "alpha", "--workspace", "tight")
    assert code == 6 and "ml jupyter request tight alpha" in doc["reason"]
    # company-internal is not trusted globally, so the workspace file cannot add it
    assert _check(agent, "x", "--conda", "-c", "company-internal", "--workspace", "tight")[0] == 5
    assert _check(agent, "x", "--conda", "-c", "conda-forge", "--workspace", "tight")[0] == 0
    (path / "workspace-security.yaml").write_text("package_management:\n  blocked_packages: ['bad name!']\n")
    code, doc = _check(agent, "alpha", "--workspace", "tight")
    assert code == 2 and "workspace-security.yaml" in doc["message"]


def test_create_refuses_bad_security_and_installer_variables(make_agent: Any, tmp_path: Path) -> None:
    agent = make_agent()
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"security": {"blocked_packages": ["a\nb"]}}))
    cp = agent.ml("jupyter", "create", "bad-security", "--config", str(config), check=False)
    assert cp.returncode == 2 and "security.blocked_packages" in cp.stderr
    config.write_text(yaml.safe_dump({"environment": {"PIP_EXTRA_INDEX_URL": "http://elsewhere.invalid/simple/"}}))
    cp = agent.ml("jupyter", "create", "bad-env", "--config", str(config), check=False)
    assert cp.returncode == 2 and "PIP_EXTRA_INDEX_URL" in cp.stderr
    assert agent.ml_json("jupyter", "list")["services"] == []


def _http(agent: AgentProcess, method: str, path: str, body: Any = None, user: str = "admin") -> tuple[int, Any]:
    req = urllib.request.Request(agent.http_url + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {KEYS[user]}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_http_api(make_agent: Any) -> None:
    agent = make_agent()
    agent.ml("jupyter", "create", "api", user="bob")
    status, doc = _http(agent, "POST", "/api/v1/jupyter/workspaces/api/packages", {"package": "alpha", "version": "1.0"},
                        user="bob")
    assert status == 200 and doc["installed"][0]["name"] == "alpha" and doc["installed"][0]["version"] == "1.0"
    status, doc = _http(agent, "POST", "/api/v1/jupyter/workspaces/api/packages", {"package": "netlib"}, user="bob")
    assert status == 403 and doc["error"] == "policy_denied" and doc["code"] == 7 and doc["rule"] == "blocked_packages"
    status, doc = _http(agent, "GET", "/api/v1/jupyter/workspaces/api/packages", user="bob")
    assert status == 200 and any(p["name"] == "alpha" and p["installed_by"] == "bob" for p in doc["packages"])
    status, doc = _http(agent, "POST", "/api/v1/jupyter/packages/check", {"package": "tensorflow", "workspace": "api"})
    assert status == 200 and doc["decision"] == "approval_required"
    status, doc = _http(agent, "POST", "/api/v1/jupyter/workspaces/api/package-requests",
                        {"package": "tensorflow", "version": ">=2", "reason": "training"}, user="bob")
    assert status == 200 and doc["request"]["specifier"] == ">=2"
    request_id = doc["request"]["id"]
    status, doc = _http(agent, "GET", "/api/v1/jupyter/package-requests?pending=true", user="bob")
    assert status == 403 and doc["code"] == 3
    status, doc = _http(agent, "GET", "/api/v1/jupyter/package-requests?pending=true")
    assert status == 200 and [r["id"] for r in doc["requests"]] == [request_id]
    status, doc = _http(agent, "POST", f"/api/v1/jupyter/package-requests/{request_id}/deny", {})
    assert status == 422 and doc["code"] == 6
    status, doc = _http(agent, "POST", f"/api/v1/jupyter/package-requests/{request_id}/approve", {})
    assert status == 200 and doc["request"]["status"] == "approved"
    status, doc = _http(agent, "POST", "/api/v1/jupyter/package-requests/req-00000000/approve", {})
    assert status == 404 and doc["code"] == 4
    status, doc = _http(agent, "POST", "/api/v1/jupyter/workspaces/nope/packages", {"package": "alpha"})
    assert status == 404 and "no workspace" in doc["message"]
    status, doc = _http(agent, "GET", "/api/v1/jupyter/workspaces/api/security-scan", user="bob")
    assert status == 200 and doc["ok"]


def test_bad_input_gets_specific_errors(make_agent: Any) -> None:
    agent = make_agent()
    agent.ml("jupyter", "create", "bad", user="bob")
    cp = agent.ml("jupyter", "install", "nope", "alpha", check=False)
    assert cp.returncode == 4 and "no workspace or service named 'nope'" in cp.stderr
    cp = agent.ml("jupyter", "install", "bad", "alpha beta", user="bob", check=False)
    assert cp.returncode == 2
    cp = agent.ml("jupyter", "install", "bad", "no-such-project", user="bob", check=False)
    assert cp.returncode == 4 and "not on the package index" in cp.stderr
    cp = agent.ml("jupyter", "approve", "req-deadbeef", check=False)
    assert cp.returncode == 4 and "no package request" in cp.stderr
    cp = agent.ml("jupyter", "request", "bad", "netlib", user="bob", check=False)
    assert cp.returncode == 5 and "a request cannot change that" in cp.stderr
    cp = agent.ml("jupyter", "request", "bad", "./local.whl", user="bob", check=False)
    assert cp.returncode == 2 and "only a package by name" in cp.stderr
    cp = agent.ml("jupyter", "install", "bad", "matplotlib", "--conda", "-c", "evil-channel", user="bob", check=False)
    assert cp.returncode == 5 and "conda channel evil-channel is not trusted" in cp.stderr
    cp = agent.ml("jupyter", "install", "bad", "conda-forge::matplotlib", "--conda", user="bob", check=False)
    assert cp.returncode == 2 and "conda is not available in workspace bad" in cp.stderr  # a venv has no conda
    cp = agent.ml("jupyter", "install", "bad", "alpha", "-c", "conda-forge", user="bob", check=False)
    assert cp.returncode == 2 and "--channel is for conda installs" in cp.stderr
    assert "packages: policy enforce" in agent.ml("status").stdout


def test_unreachable_upstream(make_agent: Any) -> None:
    agent = make_agent(upstream_url=free_port_url())
    agent.ml("jupyter", "create", "offline", user="bob")
    cp = agent.ml("jupyter", "install", "offline", "alpha", user="bob", check=False)
    assert cp.returncode == 7, cp.stderr
    assert "cannot be reached" in cp.stderr and "package_index.upstream" in cp.stderr
    assert not [p for p in agent.ml_json("jupyter", "packages", "offline")["packages"] if p["installed_by"]]
