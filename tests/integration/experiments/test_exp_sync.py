"""Sync both ways through the real `ml`, with the conflict rule; metadata and its export."""

from __future__ import annotations

import csv
import io
import json
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import KEYS, AgentProcess
from tests.integration.experiments.exp_helpers import audit_actions, wait_for, write_notebook


@pytest.fixture
def pair(agent: AgentProcess, unique_name: str):  # type: ignore[no-untyped-def]
    """Two workspaces linked to one experiment."""
    exp = f"shared-{unique_name}"
    a = agent.ml_json("jupyter", "create", unique_name + "-a", "--experiment", exp)
    b = agent.ml_json("jupyter", "create", unique_name + "-b")
    agent.ml("jupyter", "link", b["name"], exp)
    yield exp, a, b
    for w in (a, b):
        agent.ml("jupyter", "delete", w["name"], "--yes", check=False)


def _sync(agent: AgentProcess, name: str, how: str, expect: int = 0) -> dict:
    cp = agent.ml("jupyter", "sync", name, how, "--json", check=False)
    assert cp.returncode == expect, cp.stderr
    return json.loads(cp.stdout)


def test_sync_both_ways_never_overwrites_a_changed_file(agent: AgentProcess, pair: tuple) -> None:
    exp, a, b = pair
    ra, rb = Path(a["path"]), Path(b["path"])
    files = agent.data_dir / "experiments" / exp / "files"
    (ra / "train.py").write_text("version = 'a1'\n")
    (ra / "config.yaml").write_text("lr: 0.1\n")
    (ra / "data.bin").write_bytes(b"\0" * 10)  # not a source: stays put
    doc = _sync(agent, a["name"], "--to-experiment")
    assert {c["path"] for c in doc["copied"]} == {"train.py", "config.yaml"}
    assert (files / "train.py").read_text() == "version = 'a1'\n" and not (files / "data.bin").exists()
    assert _sync(agent, a["name"], "--to-experiment")["copied"] == []  # nothing changed

    # Workspace b has its own train.py: both sides differ and nothing was agreed: a conflict.
    (rb / "train.py").write_text("version = 'b1'\n")
    doc = _sync(agent, b["name"], "--to-experiment", expect=4)
    assert [c["path"] for c in doc["conflicts"]] == ["train.py"]
    copy = rb / doc["conflicts"][0]["experiment_copy"]
    assert copy.name.startswith("train.conflict-experiment-") and copy.read_text() == "version = 'a1'\n"
    assert (rb / "train.py").read_text() == "version = 'b1'\n"  # untouched
    assert (files / "train.py").read_text() == "version = 'a1'\n"  # untouched
    # Unresolved while the conflict copy exists; the copy itself is never synced.
    doc = _sync(agent, b["name"], "--to-experiment", expect=4)
    assert doc["unresolved"] == ["train.py"] and doc["conflicts"] == []
    assert not list(files.glob("*conflict*"))
    # Resolve: merge into train.py, delete the copy; the next sync carries the merge.
    (rb / "train.py").write_text("version = 'merged'\n")
    copy.unlink()
    doc = _sync(agent, b["name"], "--to-experiment")
    assert doc["copied"] == [{"path": "train.py", "to": "experiment"}]
    assert (files / "train.py").read_text() == "version = 'merged'\n"

    # Workspace a did not touch train.py since it agreed on a1: --full brings the merge in.
    doc = _sync(agent, a["name"], "--full")
    assert {"path": "train.py", "to": "workspace"} in doc["copied"]
    assert (ra / "train.py").read_text() == "version = 'merged'\n"
    # --full also brings files only the experiment has; --to-experiment never writes the workspace.
    (rb / "extra.ipynb").write_text("{}")
    _sync(agent, b["name"], "--to-experiment")
    assert not (ra / "extra.ipynb").exists()
    _sync(agent, a["name"], "--full")
    assert (ra / "extra.ipynb").read_text() == "{}"

    # Both change the same file, a syncs first: b's --full reports a conflict, overwrites nothing.
    (ra / "config.yaml").write_text("lr: 0.2\n")
    (rb / "config.yaml").write_text("lr: 0.3\n")
    _sync(agent, a["name"], "--to-experiment")
    doc = _sync(agent, b["name"], "--full", expect=4)
    assert [c["path"] for c in doc["conflicts"]] == ["config.yaml"]
    assert (rb / "config.yaml").read_text() == "lr: 0.3\n" and (files / "config.yaml").read_text() == "lr: 0.2\n"
    events = [(act, out) for act, out, _ in audit_actions(agent, b["name"]) if act == "experiment.sync"]
    assert events[-1] == ("experiment.sync", "conflict")
    history = agent.ml_json("jupyter", "metadata", b["name"])["sync_history"]
    assert history[-1]["direction"] == "full" and history[-1]["conflicts"][0]["path"] == "config.yaml"


def test_results_come_back_and_a_user_edit_is_kept(agent: AgentProcess, pair: tuple) -> None:
    exp, a, b = pair
    ra, rb = Path(a["path"]), Path(b["path"])
    write_notebook(rb / "nb.ipynb", "from fetchml import log_metric\nlog_metric('m', 1.5)")
    run = agent.ml_json("jupyter", "queue", "--workspace", b["name"], "--notebook", "nb.ipynb")
    wait_for(agent, run["id"], ("succeeded",))
    # b got its run's results automatically; a gets them with --from-experiment.
    assert (rb / "experiments" / exp / "runs" / run["id"] / "output.ipynb").is_file()
    assert not (ra / "experiments").exists()
    doc = _sync(agent, a["name"], "--from-experiment")
    got = ra / "experiments" / exp / "runs" / run["id"]
    assert {"output.ipynb", "run.json", "metrics.csv", "experiment-config.json"} <= {p.name for p in got.iterdir()}
    assert all(c["to"] == "workspace" for c in doc["copied"])
    # The user annotates the experiment summary; the next run changes it too: kept, with a copy.
    summary = ra / "experiments" / exp / "experiment.json"
    summary.write_text(summary.read_text().replace("{", '{"my note": "keep me", ', 1))
    second = agent.ml_json("jupyter", "queue", "--workspace", b["name"], "--notebook", "nb.ipynb")
    wait_for(agent, second["id"], ("succeeded",))
    doc = _sync(agent, a["name"], "--from-experiment", expect=4)
    assert [c["path"] for c in doc["conflicts"]] == [f"experiments/{exp}/experiment.json"]
    assert json.loads(summary.read_text())["my note"] == "keep me"
    theirs = json.loads((ra / doc["conflicts"][0]["experiment_copy"]).read_text())
    assert [r["id"] for r in theirs["runs"]] == [run["id"], second["id"]]
    assert (ra / "experiments" / exp / "runs" / second["id"] / "output.ipynb").is_file()


def test_metadata_export_round_trip(agent: AgentProcess, pair: tuple, tmp_path: Path) -> None:
    exp, a, _ = pair
    write_notebook(Path(a["path"]) / "nb.ipynb", "from fetchml import log_metric\nfor i in range(3): log_metric('loss', 1 / (i + 1), step=i)",
                   parameters="alpha = 1")
    run = agent.ml_json("jupyter", "queue", "--workspace", a["name"], "--notebook", "nb.ipynb", "-p", "alpha=2")
    wait_for(agent, run["id"], ("succeeded",))
    agent.ml("jupyter", "sync", a["name"], "--to-experiment")
    agent.ml("jupyter", "link", a["name"], exp + "-second")
    meta = agent.ml_json("jupyter", "metadata", a["name"])
    assert meta["workspace"]["created_at"] <= meta["workspace"]["modified_at"]
    assert [e["id"] for e in meta["experiments"]] == [exp, exp + "-second"]
    assert meta["experiments"][1]["current"] is True
    assert meta["notebook_executions"][0]["parameters"] == {"alpha": 2}
    assert meta["resource_usage"][0]["peak_memory_bytes"] > 0
    assert [s["direction"] for s in meta["sync_history"]] == ["auto", "to-experiment"]
    human = agent.ml("jupyter", "metadata", a["name"]).stdout
    for heading in ("linked experiments:", "resource usage:", "package installations:", "notebook executions:", "sync history:"):
        assert heading in human

    out = tmp_path / "export.json"
    agent.ml("jupyter", "export", a["name"], "--format=json", "--output", str(out))
    exported = json.loads(out.read_text())
    for table, value in meta.items():  # every field metadata shows is in the export, equal
        assert exported[table] == value, table
    assert [m["value"] for m in exported["metrics"]] == [1.0, 0.5, 1 / 3]

    csv_dir = tmp_path / "csv"
    agent.ml("jupyter", "export", a["name"], "--format=csv", "--output", str(csv_dir))
    tables = {p.stem: list(csv.DictReader(io.StringIO(p.read_text()))) for p in csv_dir.glob("*.csv")}
    assert set(tables) == {"workspace", "experiments", "resource_usage", "packages", "notebook_executions", "sync_history", "metrics"}
    assert tables["workspace"][0]["name"] == a["name"] and tables["workspace"][0]["id"] == a["id"]
    assert [r["id"] for r in tables["experiments"]] == [exp, exp + "-second"]
    row = tables["notebook_executions"][0]
    assert row["run_id"] == run["id"] and json.loads(row["parameters"]) == {"alpha": 2}
    assert [float(r["value"]) for r in tables["metrics"]] == [1.0, 0.5, 1 / 3]
    for table, value in meta.items():
        rows = [value] if isinstance(value, dict) else value
        assert len(tables[table]) == len(rows), table
        for got, want in zip(tables[table], rows, strict=True):
            assert set(got) >= set(want), table  # every field is a column
    assert (csv_dir / "packages.csv").read_text().startswith("ts,user,action,outcome,details")


def test_http_link_route_and_create_with_experiment(agent: AgentProcess, unique_name: str) -> None:
    ws = agent.ml_json("jupyter", "create", unique_name, "--experiment", "brand-new-" + unique_name)
    try:
        assert ws["experiment"] == "brand-new-" + unique_name
        req = urllib.request.Request(
            f"{agent.http_url}/api/v1/jupyter/workspaces/{unique_name}/experiments",
            data=json.dumps({"experiment_id": "exp-123"}).encode(), method="POST",
            headers={"Authorization": f"Bearer {KEYS['admin']}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 201
            body = json.loads(resp.read())
        assert body["experiments"] == ["brand-new-" + unique_name, "exp-123"] and body["linked"] is True
        assert agent.ml_json("jupyter", "info", unique_name)["experiment"] == "exp-123"
        again = agent.ml("jupyter", "link", unique_name, "exp-123").stdout
        assert "already linked" in again
        bad = agent.ml("jupyter", "create", unique_name + "-x", "--experiment", "no spaces allowed", check=False)
        assert bad.returncode == 2 and "invalid experiment id" in bad.stderr
        assert agent.ml("jupyter", "info", unique_name + "-x", check=False).returncode == 4  # nothing was started
    finally:
        agent.ml("jupyter", "delete", unique_name, "--yes", check=False)
