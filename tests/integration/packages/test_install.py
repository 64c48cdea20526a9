"""Installs end to end: the real `ml`, a real agent, a real workspace, pip through the workspace's index.

The upstream is a local index of tiny wheels (world.py); the agent blocks ``netlib`` (and the
seed's list) and wants approval for ``custom-package``.
"""

from __future__ import annotations

import json

from tests.conftest import AgentProcess
from tests.integration.jupyter import execute
from tests.integration.packages.world import site_packages


def _installed(agent: AgentProcess, ws: str) -> set[str]:
    return {p.name.split("-")[0] for p in site_packages(agent, ws).glob("*.dist-info")}


def _events(agent: AgentProcess, ws: str, action: str) -> list[dict]:
    return [e for e in agent.ml_json("jupyter", "audit", ws, "--action", action)["events"] if e["action"] == action]


def test_allowed_install_records_who_and_when(pkg_agent: AgentProcess, workspace: str) -> None:
    cp = pkg_agent.ml("jupyter", "install", workspace, "beta", user="bob")
    assert "installed beta 1.0, alpha 2.0" in cp.stdout
    assert "Successfully installed alpha-2.0 beta-1.0" in cp.stderr  # pip's output, streamed as log packets
    assert "fetchml-pip-report" not in cp.stderr + cp.stdout
    assert {"alpha", "beta"} <= _installed(pkg_agent, workspace)
    rows = {p["name"]: p for p in pkg_agent.ml_json("jupyter", "packages", workspace)["packages"]}
    assert rows["beta"]["installed_by"] == "bob" and rows["beta"]["spec"] == "beta" and rows["beta"]["requested"]
    assert rows["alpha"]["installed_by"] == "bob" and rows["alpha"]["requested"] is False
    assert rows["beta"]["location"] == "workspace" and rows["beta"]["installed_at"] > 0
    # the kernel base (ipykernel and pip with what they need), not JupyterLab's server environment
    assert rows["ipykernel"]["location"] == "base" and rows["ipykernel"]["installed_by"] is None
    assert "jupyterlab" not in rows and "requests" not in rows
    table = pkg_agent.ml("jupyter", "packages", workspace, user="bob").stdout
    assert "beta" in table and "bob" in table and "ipykernel" not in table and "--all" in table
    decision = _events(pkg_agent, workspace, "package.decision")[0]
    assert decision["user"] == "bob" and decision["outcome"] == "allow"
    assert decision["details"]["spec"] == "beta" and decision["details"]["package"] == "beta"
    assert decision["details"]["rule"] == "default_allow"
    assert _events(pkg_agent, workspace, "package.install")[0]["details"]["installed"] == ["beta==1.0", "alpha==2.0"]


def test_blocked_install_fails_and_records_nothing(pkg_agent: AgentProcess, workspace: str) -> None:
    cp = pkg_agent.ml("jupyter", "install", workspace, "NetLib>=1", user="bob", check=False)
    assert cp.returncode == 5, cp.stderr
    assert "netlib is blocked by the package policy (blocked_packages)" in cp.stderr
    assert "netlib" not in _installed(pkg_agent, workspace)
    assert not [p for p in pkg_agent.ml_json("jupyter", "packages", workspace)["packages"] if p["installed_by"]]
    event = _events(pkg_agent, workspace, "package.decision")[0]
    assert event["outcome"] == "deny" and event["user"] == "bob" and event["workspace"] == workspace
    assert event["details"]["spec"] == "NetLib>=1" and event["details"]["package"] == "netlib"
    assert event["details"]["rule"] == "blocked_packages"


def test_dependency_on_a_blocked_package_fails(pkg_agent: AgentProcess, workspace: str) -> None:
    cp = pkg_agent.ml("jupyter", "install", workspace, "webtool", user="bob", check=False)
    assert cp.returncode == 5, cp.stderr
    assert "pip could not install webtool" in cp.stderr and "netlib is blocked" in cp.stderr
    assert not {"webtool", "netlib"} & _installed(pkg_agent, workspace)
    assert _events(pkg_agent, workspace, "package.install")[0]["outcome"] == "error"
    index = [e for e in _events(pkg_agent, workspace, "package.index") if e["details"]["package"] == "netlib"]
    assert index and index[0]["outcome"] == "deny"


def test_pip_in_a_notebook_uses_the_workspace_index(pkg_agent: AgentProcess, workspace: str) -> None:
    url = pkg_agent.ml_json("jupyter", "info", workspace)["url"]
    out = execute(url, "!pip install leftpad", timeout=240)
    assert "Successfully installed leftpad-1.0" in out, out
    assert execute(url, "import leftpad_mod; leftpad_mod.VERSION").strip() == "'1.0'"
    out = execute(url, "!pip install netlib", timeout=240)
    assert 'fetchml-policy="netlib is blocked by the package policy' in out, out
    assert "No matching distribution found for netlib" in out
    # requests is not in the kernel's environment: any version must come from the index
    out = execute(url, "!pip install requests==2.31.0", timeout=240)
    assert 'fetchml-policy="requests is blocked by the package policy' in out, out
    out = execute(url, "!pip install webtool", timeout=240)
    assert "No matching distribution found for netlib" in out, out
    # %pip and pip's own config: the same index, whatever the host's pip configuration says
    out = execute(url, "%pip config list", timeout=120)
    assert "/index/" in out and "extra-index-url=''" in out, out
    assert not {"netlib", "webtool"} & _installed(pkg_agent, workspace)


def test_approval_workflow(pkg_agent: AgentProcess, workspace: str) -> None:
    denied = pkg_agent.ml("jupyter", "install", workspace, "custom-package", user="bob", check=False)
    assert denied.returncode == 6
    assert f"ml jupyter request {workspace} custom-package" in denied.stderr
    first = pkg_agent.ml_json("jupyter", "request", workspace, "custom-package>=1,<2", "--reason", "parsing", user="bob")
    request_id = first["request"]["id"]
    pkg_agent.ml("jupyter", "access", workspace, "--user=carol", "--role=collaborator", user="bob")
    second = pkg_agent.ml_json("jupyter", "request", workspace, "Custom_Package<2,>=1", "--reason", "me too", user="carol")
    assert second["request"]["id"] == request_id  # one request per package + range + workspace
    assert [(r["requester"], r["reason"]) for r in second["request"]["requesters"]] == [("bob", "parsing"),
                                                                                          ("carol", "me too")]
    assert pkg_agent.ml("jupyter", "review", "--pending", user="bob", check=False).returncode == 3
    assert pkg_agent.ml("jupyter", "approve", request_id, user="bob", check=False).returncode == 3
    pending = pkg_agent.ml_json("jupyter", "review", "--pending")["requests"]
    assert request_id in {r["id"] for r in pending}
    assert "approved" in pkg_agent.ml("jupyter", "approve", request_id).stdout
    again = pkg_agent.ml("jupyter", "approve", request_id, check=False)
    assert again.returncode == 4 and "already approved by admin" in again.stderr
    mine = pkg_agent.ml("jupyter", "review", user="carol").stdout
    assert request_id in mine and "approved" in mine and "admin" in mine
    # the range holds: 1.5 (the newest inside it) installs, 2.5 needs a new request
    assert "installed custom-package 1.5" in pkg_agent.ml("jupyter", "install", workspace, "custom-package",
                                                          user="bob").stdout
    assert pkg_agent.ml("jupyter", "install", workspace, "custom-package==2.5", user="bob", check=False).returncode == 6
    check = json.loads(pkg_agent.ml("jupyter", "check-package", "custom-package==1.0", "--workspace", workspace,
                                    "--json", user="bob").stdout)
    assert check["decision"] == "allow" and check["rule"] == "approved_request"
    approve_events = _events(pkg_agent, workspace, "package.approve")
    assert approve_events[0]["details"]["requesters"] == ["bob", "carol"]


def test_an_approval_answers_only_for_its_workspace(pkg_agent: AgentProcess, workspace: str) -> None:
    other = workspace[:50] + "-b"
    pkg_agent.ml("jupyter", "create", other, user="bob")
    try:
        request_id = pkg_agent.ml_json("jupyter", "request", workspace, "custom-package", user="bob")["request"]["id"]
        pkg_agent.ml("jupyter", "approve", request_id)
        url = pkg_agent.ml_json("jupyter", "info", other)["url"]
        out = execute(url, "!pip install custom-package", timeout=240)
        assert f"ml jupyter request {other} custom-package" in out, out
        assert pkg_agent.ml("jupyter", "install", other, "custom-package", user="bob", check=False).returncode == 6
        assert "installed custom-package 2.5" in pkg_agent.ml("jupyter", "install", workspace, "custom-package",
                                                              user="bob").stdout
    finally:
        pkg_agent.ml("jupyter", "delete", other, "--yes", check=False)


def test_denied_request_stays_blocked(pkg_agent: AgentProcess, workspace: str) -> None:
    request_id = pkg_agent.ml_json("jupyter", "request", workspace, "custom-package==1.0", "--reason", "x",
                                   user="bob")["request"]["id"]
    no_reason = pkg_agent.ml("jupyter", "deny", request_id, check=False)
    assert no_reason.returncode == 2 and "needs a reason" in no_reason.stderr
    assert "denied" in pkg_agent.ml("jupyter", "deny", request_id, "--reason=Security concern").stdout
    mine = pkg_agent.ml_json("jupyter", "review", user="bob")["requests"]
    assert [(r["status"], r["decision_reason"]) for r in mine if r["id"] == request_id] == [("denied",
                                                                                             "Security concern")]
    assert "Security concern" in pkg_agent.ml("jupyter", "review", user="bob").stdout
    assert pkg_agent.ml("jupyter", "install", workspace, "custom-package==1.0", user="bob", check=False).returncode == 6
    assert pkg_agent.ml("jupyter", "deny", request_id, "--reason=again", check=False).returncode == 4
    assert pkg_agent.ml("jupyter", "approve", request_id, check=False).returncode == 4


def test_force_is_admin_only_audited_and_stops_the_next_start(pkg_agent: AgentProcess, workspace: str) -> None:
    refused = pkg_agent.ml("jupyter", "install", workspace, "netlib", "--force", user="bob", check=False)
    assert refused.returncode == 3 and "needs the admin role" in refused.stderr
    forced = pkg_agent.ml("jupyter", "install", workspace, "netlib", "--force")
    assert "installed netlib 1.0" in forced.stdout
    rows = {p["name"]: p for p in pkg_agent.ml_json("jupyter", "packages", workspace)["packages"]}
    assert rows["netlib"]["forced"] and rows["netlib"]["installed_by"] == "admin"
    force_event = _events(pkg_agent, workspace, "package.force")[0]
    assert force_event["user"] == "admin" and force_event["details"]["packages"] == ["netlib"]
    # still blocked for everyone else, in the workspace too
    assert pkg_agent.ml("jupyter", "check-package", "netlib", "--workspace", workspace, check=False).returncode == 5
    scan = pkg_agent.ml("jupyter", "security-scan", workspace, user="bob", check=False)
    assert scan.returncode == 5 and "netlib==1.0" in scan.stdout
    restart = pkg_agent.ml("jupyter", "restart", workspace, user="bob", check=False)
    assert restart.returncode == 5
    assert "blocked packages: netlib 1.0" in restart.stderr and "FETCHML_JUPYTER_STARTUP_BLOCKED_PACKAGES" in restart.stderr
    assert pkg_agent.ml_json("jupyter", "info", workspace)["status"] == "failed"
    assert _events(pkg_agent, workspace, "package.startup_scan")[0]["outcome"] == "denied"


def test_security_scan_of_a_clean_workspace(pkg_agent: AgentProcess, workspace: str) -> None:
    doc = pkg_agent.ml_json("jupyter", "security-scan", workspace, user="bob")
    assert doc["ok"] and doc["startup_scan"]["found"] == []
    assert doc["startup_scan"]["variable"] == "FETCHML_JUPYTER_STARTUP_BLOCKED_PACKAGES"
    # what a kernel can import: the kernel base holds no blocked package (JupyterLab's requests
    # stays in the server's environment)
    assert not [f for f in doc["findings"] if f.get("rule") == "blocked_packages"], doc["findings"]
    cleared = pkg_agent.ml_json("jupyter", "clear-cache", workspace, user="bob")
    assert cleared["pip_exit_code"] == 0 and cleared["index_files_removed"] >= 0
