from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fetchml_agent.experiments import records as R
from fetchml_agent.store import open_connection


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = open_connection(tmp_path / "agent.db")
    c.execute("INSERT INTO workspaces (id, name, owner, path, status, token, runtime, index_key, created_at, updated_at)"
              " VALUES ('ws-1', 'one', 'admin', '/tmp/one', 'running', 't', 'local', 'k', 0, 0)")
    yield c
    c.close()


def _run(run_id: str, **kw: object) -> R.Run:
    base = {"experiment_id": "e", "workspace_id": "ws-1", "workspace": "one", "user": "admin", "kind": "notebook",
            "target": "a.ipynb", "run_dir": f"/tmp/{run_id}", "queued_at": time.time()}
    base.update(kw)
    return R.Run(id=run_id, **base)  # type: ignore[arg-type]


def test_link_creates_once(conn: sqlite3.Connection) -> None:
    assert R.link_experiment(conn, "ws-1", "e", "admin") == (True, True)
    assert R.link_experiment(conn, "ws-1", "e", "bob") == (False, False)
    assert R.link_experiment(conn, "ws-1", "f", "bob") == (True, True)
    assert [link["id"] for link in R.links_of(conn, "ws-1")] == ["e", "f"]
    assert R.get_experiment(conn, "e")["created_by"] == "admin"
    conn.execute("DELETE FROM workspaces WHERE id = 'ws-1'")  # links go with the workspace, experiments stay
    assert R.links_of(conn, "ws-1") == [] and R.get_experiment(conn, "f") is not None


def test_runs_round_trip_and_claim_once(conn: sqlite3.Connection) -> None:
    R.ensure_experiment(conn, "e", "admin")
    run = _run("run-1", parameters={"lr": 0.1}, error={"cell": 2}, gpu_indexes=[0, 1], attempts=[{"attempt": 1}])
    R.insert_run(conn, run)
    assert R.get_run(conn, "run-1") == run
    assert R.claim_run(conn, "run-1", "running", 5.0) is True
    assert R.claim_run(conn, "run-1", "cancelled") is False  # a run is claimed once
    got = R.get_run(conn, "run-1")
    assert got is not None and got.status == "running" and got.started_at == 5.0
    got.status, got.message = "failed", "boom"
    R.update_run(conn, got)
    assert R.get_run(conn, "run-1") == got


def test_filters_counts_and_summary(conn: sqlite3.Connection) -> None:
    R.ensure_experiment(conn, "e", "admin")
    R.ensure_experiment(conn, "x", "admin")
    for i, status in enumerate(["queued", "running", "succeeded", "failed", "succeeded"]):
        R.insert_run(conn, _run(f"run-{i}", status=status, queued_at=float(i), finished_at=float(i) if status in R.FINISHED else None,
                                experiment_id="x" if i == 4 else "e", user="bob" if i == 3 else "admin",
                                workspace_id="ws-gone" if i == 3 else "ws-1"))
    assert [r.id for r in R.runs_of(conn, experiment_id="e", limit=2)] == ["run-3", "run-2"]
    assert R.count_runs(conn, status="succeeded") == 2
    assert [r.id for r in R.runs_of(conn, workspace_ids=["ws-1"])] == ["run-4", "run-2", "run-1", "run-0"]
    assert {r.id for r in R.runs_of(conn, workspace_ids=[], or_user="bob")} == {"run-3"}
    counts, active, recent = R.status_summary(conn, 2)
    assert ("ws-gone", "bob", "failed", 1) in counts
    assert [r.id for r in active] == ["run-0", "run-1"] and [r.id for r in recent] == ["run-4", "run-3"]


def test_status_summary_uses_indexes(conn: sqlite3.Connection) -> None:
    plans = [" ".join(str(c) for c in row) for sql in (
        "SELECT * FROM runs WHERE status IN ('queued', 'running') ORDER BY queued_at, id",
        "SELECT * FROM runs WHERE finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT 10",
    ) for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]
    assert "runs_status" in plans[0] and "runs_finished" in " ".join(plans[1:])


def test_metrics_replace_and_sync_state(conn: sqlite3.Connection) -> None:
    R.ensure_experiment(conn, "e", "admin")
    R.insert_run(conn, _run("run-1"))
    R.insert_metrics(conn, "run-1", [{"name": "loss", "value": 1.0, "step": 0, "ts": 1.0}])
    assert R.insert_metrics(conn, "run-1", [{"name": "loss", "value": 0.5, "step": 1, "ts": 2.0, "attempt": 2},
                                            {"name": "acc", "value": None, "ts": 3.0}]) == 2
    assert [(m["name"], m["value"], m["attempt"]) for m in R.metrics_of(conn, ["run-1"])] == [("loss", 0.5, 2), ("acc", None, 1)]
    R.save_sync_state(conn, "ws-1", "e", {"src:a.py": "h1"}, [], {"src:b.py": {"theirs_sha256": "h2", "copy_path": "b.c.py", "created_at": 1.0}})
    assert R.sync_bases(conn, "ws-1", "e") == {"src:a.py": "h1"}
    assert R.pending_conflicts(conn, "ws-1", "e")["src:b.py"]["copy_path"] == "b.c.py"
    R.save_sync_state(conn, "ws-1", "e", {"src:b.py": "h2"}, ["src:b.py"], {})
    assert R.pending_conflicts(conn, "ws-1", "e") == {} and R.sync_bases(conn, "ws-1", "e")["src:b.py"] == "h2"
    rec = R.insert_sync(conn, "ws-1", "one", "e", "full", "admin", ["a.py -> experiment"], [])
    assert R.sync_history_of(conn, "ws-1") == [{**rec, "id": rec["id"]}]
    R.forget_workspace_sync(conn, "ws-1")
    assert R.sync_bases(conn, "ws-1", "e") == {} and len(R.sync_history_of(conn, "ws-1")) == 1
