"""The pieces of runs on a remote runtime that need no Nomad: the sources rule as a ``find``
expression (same answer as :func:`select_sources`), the snapshot's place on the snapshot volume,
the error of an executed notebook, and the result a final Nomad status becomes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import nbformat
import pytest

from fetchml_agent.experiments.files import select_sources, source_find_expression
from fetchml_agent.experiments.records import Run
from fetchml_agent.experiments.remote import _unpack
from fetchml_agent.experiments.results import (
    notebook_error,
    publish_snapshot,
    result_from_status,
    unpublish_snapshot,
)
from fetchml_agent.runtimes.base import RunStatus

TREE = {
    "train.ipynb": 10, "src/model.py": 10, "src/deep/conf.YAML": 10, "Makefile": 5,
    "requirements-gpu.txt": 5, "data/big.csv": 10, "data/small.json": 10, "big.py": 5000,
    ".hidden.py": 5, ".git/config.py": 5, "src/__pycache__/m.py": 5, ".ipynb_checkpoints/a.ipynb": 5,
    "outputs/o.py": 5, "experiments/e/x.py": 5, "nested/outputs/kept.py": 5,
    "train.conflict-experiment-20260101T000000Z.ipynb": 5, "notes.txt": 5, "with space.py": 5,
}


def _tree(root: Path) -> None:
    for rel, size in TREE.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)


def test_the_find_expression_selects_what_select_sources_selects(tmp_path: Path) -> None:
    _tree(tmp_path)
    out = subprocess.run(["find", ".", *source_find_expression(1000)], cwd=tmp_path, capture_output=True, check=True)
    found = sorted(p.removeprefix("./") for p in out.stdout.decode().split("\0") if p)
    expected, too_large = select_sources(tmp_path, 1000)
    assert found == sorted(expected)
    assert too_large == ["big.py"]
    assert "nested/outputs/kept.py" in found and "data/small.json" in found


def test_an_empty_archive_unpacks_to_nothing_and_a_damaged_one_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"\0" * 10240)
    (tmp_path / "a").mkdir()
    _unpack(empty, tmp_path / "a")
    assert list((tmp_path / "a").iterdir()) == []
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"not a tar" * 100)
    from fetchml_agent.errors import BackendError

    with pytest.raises(BackendError, match="damaged"):
        _unpack(bad, tmp_path / "b")


def test_publish_uses_the_run_dir_in_place_inside_the_volume_else_copies(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    inside = volume / "exp" / "runs" / "run-1"
    (inside / "work").mkdir(parents=True)
    (inside / "work" / "a.py").write_text("x")
    rel, copied = publish_snapshot(volume, inside, "run-1")
    assert (rel, copied) == (Path("exp/runs/run-1/work"), False)
    outside = tmp_path / "agent" / "run-2"
    (outside / "work" / "sub").mkdir(parents=True)
    (outside / "work" / "sub" / "b.py").write_text("y")
    rel, copied = publish_snapshot(volume, outside, "run-2")
    assert (rel, copied) == (Path("runs/run-2"), True)
    assert (volume / "runs" / "run-2" / "sub" / "b.py").read_text() == "y"
    unpublish_snapshot(volume, {"snapshot_path": str(rel), "snapshot_copy": True})
    assert not (volume / "runs" / "run-2").exists()
    unpublish_snapshot(volume, {"snapshot_path": "exp/runs/run-1/work", "snapshot_copy": False})
    assert (inside / "work" / "a.py").exists()  # in place: never removed


def _executed(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    banner = nbformat.v4.new_markdown_cell("An Exception was encountered")
    banner.metadata["tags"] = ["papermill-error-cell-tag"]
    ok = nbformat.v4.new_code_cell("x = 1")
    ok.execution_count = 1
    bad = nbformat.v4.new_code_cell("raise ValueError('diverged')")
    bad.execution_count = 2
    bad.outputs = [nbformat.v4.new_output("error", ename="ValueError", evalue="diverged", traceback=["tb"])]
    nb.cells = [banner, ok, bad]
    nbformat.write(nb, str(path))


def _run(tmp_path: Path, kind: str = "notebook") -> Run:
    return Run(id="run-1", experiment_id="e", workspace_id="w", workspace="lab", user="alice", kind=kind,
               target="t.ipynb", run_dir=str(tmp_path), queued_at=0.0, started_at=1.0, timeout_s=30)


def test_the_failing_cell_is_counted_without_papermills_banners(tmp_path: Path) -> None:
    _executed(tmp_path / "output.ipynb")
    err = notebook_error(tmp_path / "output.ipynb")
    assert err is not None and (err["cell"], err["execution_count"], err["ename"]) == (2, 2, "ValueError")
    doc = result_from_status(_run(tmp_path), RunStatus("failed", "Exit Code: 1", "a1", 1), False, None)
    assert doc["status"] == "failed" and doc["message"] == "cell 2 (In [2]) failed: ValueError: diverged"
    assert doc["exit_code"] == 1 and doc["attempts"][0]["alloc_id"] == "a1"
    assert notebook_error(tmp_path / "missing.ipynb") is None


@pytest.mark.parametrize(
    ("status", "cancelled", "fetched", "want_status", "words"),
    [
        (RunStatus("succeeded", "", "a", 0), False, None, "succeeded", ""),
        (RunStatus("succeeded", "", "a", 0), False, "Nomad down", "succeeded", "could not be fetched: Nomad down"),
        (RunStatus("cancelled", "stopped", "a"), False, None, "cancelled", "cancelled"),
        (RunStatus("running", "", "a"), True, None, "cancelled", "cancelled"),
        (RunStatus("timed_out", "", "a"), False, None, "failed", "timed out after 30 s"),
        (RunStatus("missing", "Nomad has no job j"), False, "no allocation", "failed", "its results are lost"),
        (RunStatus("failed", "Driver Failure: image not found", "a", None), False, None, "failed", "image not found"),
    ],
)
def test_final_statuses_become_results(
    tmp_path: Path, status: RunStatus, cancelled: bool, fetched: str | None, want_status: str, words: str
) -> None:
    doc = result_from_status(_run(tmp_path, "script"), status, cancelled, fetched)
    assert doc["status"] == want_status
    assert words in doc["message"]
    json.dumps(doc)
