"""Retention of runs, logs and metrics through the real ``ml admin retention`` on a real agent:
what the dry run counts is what the purge removes, each purge is audited, and the workspace's
report still works with its history gone."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from tests.conftest import AgentProcess, free_port


@pytest.mark.slow
def test_runs_logs_and_metrics_are_purged_past_their_retention(tmp_path: Path) -> None:
    agent = AgentProcess(tmp_path / "agent", free_port(), {
        "usage": {"interval": "1s"}, "retention": {"runs": "4s", "logs": "4s", "metrics": "4s"}})
    with agent.running():
        ws = agent.ml_json("jupyter", "create", "keep", "--experiment", "exp-1")
        Path(ws["path"], "hello.py").write_text("import fetchml\nfetchml.log_metric('loss', 0.5)\nprint('hi')\n")
        assert agent.ml_json("jupyter", "queue", "--workspace", "keep", "--script", "hello.py", "--wait")["status"] == "succeeded"
        deadline = time.monotonic() + 30
        while not agent.ml_json("jupyter", "stats", "keep", "--since", "1h")["series"]:
            assert time.monotonic() < deadline
            time.sleep(0.5)
        agent.ml("jupyter", "stop", "keep")
        conn = sqlite3.connect(agent.data_dir / "agent.db")
        (run_id, run_dir), = conn.execute("SELECT id, run_dir FROM runs").fetchall()
        assert Path(run_dir, "run.log").is_file()
        assert conn.execute("SELECT count(*) FROM run_metrics").fetchone()[0] >= 1
        time.sleep(4.5)  # everything above is now older than its retention

        plan = agent.ml_json("admin", "retention", "--dry-run")["plan"]
        assert plan["runs"] == {"would_remove": 1, "unit": "runs", "enforced": True}
        assert plan["logs"]["would_remove"] >= 2  # the stopped server's log and the run's log
        assert plan["metrics"]["usage_samples"] >= 1 and plan["metrics"]["run_metrics"] >= 1
        table = agent.ml("admin", "retention", "--dry-run").stdout
        assert "not yet" not in table and "1 runs" in table

        done = agent.ml_json("admin", "retention", "--run")["removed"]
        assert done["runs"]["removed"] == 1 and done["runs"]["directories"] == 1
        assert done["logs"]["removed"] == plan["logs"]["would_remove"]
        assert done["metrics"]["removed"] >= plan["metrics"]["would_remove"]
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM run_metrics").fetchone()[0] == 0
        assert not Path(run_dir).exists() and not list((agent.data_dir / "logs").glob("*.log"))
        purges = agent.ml_json("jupyter", "audit", "--action", "retention.purge")["events"]
        assert {e["details"]["category"] for e in purges} >= {"runs", "logs", "metrics"}
        doc = agent.ml_json("jupyter", "stats", "keep", "--since", "4s")
        assert doc["series"] == []
        assert "advice:" in agent.ml("jupyter", "report", "keep").stdout
        conn.close()
        assert run_id.startswith("run")
