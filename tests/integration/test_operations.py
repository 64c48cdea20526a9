"""Day-two operations through the real `ml`: scale, reset, monitor, logs, git, versions, optimize, report."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import AgentProcess
from tests.integration.jupyter import execute


def test_scale_restarts_with_new_limits(agent: AgentProcess, unique_name: str) -> None:
    agent.ml_json("jupyter", "create", unique_name, "--cpu", "1", "--memory", "1g")
    try:
        scaled = agent.ml_json("jupyter", "scale", unique_name, "--cpu", "2", "--memory", "2g")
        assert scaled["status"] == "running"
        assert scaled["resources"]["cpu"] == 2.0 and scaled["resources"]["memory"] == "2g"
        limits = agent.ml_json("jupyter", "limits", unique_name)
        assert limits["resources"]["memory_mb"] == 2048
        assert agent.ml("jupyter", "scale", unique_name, check=False).returncode == 2
        bad = agent.ml("jupyter", "scale", unique_name, "--memory", "lots", check=False)
        assert bad.returncode == 2 and "--memory" in bad.stderr
        assert agent.ml_json("jupyter", "info", unique_name)["resources"]["memory"] == "2g"  # unchanged by the bad call
    finally:
        agent.ml("jupyter", "delete", unique_name, "--yes", check=False)


def test_reset_hard_discards_installed_packages_but_keeps_files(agent: AgentProcess, unique_name: str) -> None:
    ws = agent.ml_json("jupyter", "create", unique_name)
    try:
        Path(ws["path"], "keep.txt").write_text("mine")
        code = ("import sys, pathlib; p = pathlib.Path(sys.prefix, 'lib', f'python{sys.version_info[0]}.{sys.version_info[1]}',"
                " 'site-packages', 'scratchpkg.py'); p.write_text('V = 1'); 'ok'")
        assert execute(ws["url"], code).strip() == "'ok'"
        soft = agent.ml_json("jupyter", "reset", unique_name)
        assert execute(soft["url"], "import scratchpkg; scratchpkg.V").strip() == "1"
        hard = agent.ml_json("jupyter", "reset", unique_name, "--hard")
        assert "ModuleNotFoundError" in execute(hard["url"], "import scratchpkg")
        assert Path(ws["path"], "keep.txt").read_text() == "mine"
        events = [e["action"] for e in agent.ml_json("jupyter", "audit", unique_name)["events"]]
        assert events.count("workspace.reset") == 2
    finally:
        agent.ml("jupyter", "delete", unique_name, "--yes", check=False)


def test_monitor_logs_optimize_report(agent: AgentProcess, unique_name: str) -> None:
    ws = agent.ml_json("jupyter", "create", unique_name, "--memory", "1g")
    try:
        samples = agent.ml_json("jupyter", "monitor", unique_name, "--interval", "0.2", "--count", "3")["samples"]
        assert len(samples) == 3 and all(s["memory_bytes"] > 0 for s in samples)
        logs = agent.ml_json("jupyter", "logs", unique_name)["lines"]
        assert any("Jupyter" in line for line in logs)
        execute(ws["url"], "1")  # leaves no kernel behind (execute deletes it), so nothing is idle
        opt = agent.ml_json("jupyter", "optimize", unique_name, "--idle-minutes", "0")
        assert opt["kernels"] == 0 and opt["advice"]
        html = agent.ml("jupyter", "report", unique_name, "--format", "html").stdout
        assert html.startswith("<!doctype html>") and unique_name in html and 'class="event-start"' in html  # the create, from the audit
        report = json.loads(agent.ml("jupyter", "report", unique_name, "--format", "json").stdout)
        assert report["workspace"]["name"] == unique_name and report["workspace"]["status"] == "running" and report["history"]["events"]
        agent.ml("jupyter", "stop", unique_name)
        cp = agent.ml("jupyter", "monitor", unique_name, "--count", "1", check=False)
        assert cp.returncode == 4 and "needs it running" in cp.stderr
    finally:
        agent.ml("jupyter", "delete", unique_name, "--yes", check=False)


def test_git_and_notebook_versions(agent: AgentProcess, unique_name: str) -> None:
    ws = agent.ml_json("jupyter", "create", unique_name)
    try:
        nb = Path(ws["path"], "notebook.ipynb")
        nb.write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
        agent.ml("jupyter", "git", unique_name, "init")
        agent.ml("jupyter", "git", unique_name, "add", ".")
        commit = agent.ml("jupyter", "git", unique_name, "commit", "-m", "Initial commit")
        assert "Initial commit" in commit.stdout
        log = agent.ml("jupyter", "git", unique_name, "log", "--oneline").stdout
        assert "Initial commit" in log
        refused = agent.ml("jupyter", "git", unique_name, "push", check=False)
        assert refused.returncode == 2 and "not available" in refused.stderr

        v1 = agent.ml_json("jupyter", "version", unique_name, "notebook.ipynb", "-m", "first")
        assert v1["saved"] and v1["version"]["version"] == 1
        assert not agent.ml_json("jupyter", "version", unique_name, "notebook.ipynb")["saved"]  # unchanged
        nb.write_text(nb.read_text().replace('"cells": []', '"cells": [{"cell_type": "markdown", "metadata": {}, "source": "x"}]'))
        assert agent.ml_json("jupyter", "version", unique_name, "notebook.ipynb")["version"]["version"] == 2
        listed = agent.ml_json("jupyter", "version", unique_name, "notebook.ipynb", "--list")["versions"]
        assert [v["version"] for v in listed] == [1, 2] and listed[0]["note"] == "first"
        agent.ml_json("jupyter", "version", unique_name, "notebook.ipynb", "--restore", "1")
        assert json.loads(nb.read_text())["cells"] == []
        missing = agent.ml("jupyter", "version", unique_name, "nope.ipynb", check=False)
        assert missing.returncode == 4 and "no such notebook" in missing.stderr
        outside = agent.ml("jupyter", "version", unique_name, "../../etc/passwd", check=False)
        assert outside.returncode == 2
    finally:
        agent.ml("jupyter", "delete", unique_name, "--yes", check=False)
