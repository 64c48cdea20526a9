"""The ``fetchml`` helper that notebooks import."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest

import fetchml


def test_log_metric_appends_json_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "metrics.jsonl"
    monkeypatch.setenv("FETCHML_METRICS_FILE", str(target))
    monkeypatch.setenv("FETCHML_ATTEMPT", "2")
    assert fetchml.in_run()
    fetchml.log_metric("loss", 0.12, step=3)
    fetchml.log_metrics({"acc": 1, "f1": 0.5})
    fetchml.log_metric("diverged", math.nan)
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert [(r["name"], r["value"], r["step"], r["attempt"]) for r in rows] == [
        ("loss", 0.12, 3, 2), ("acc", 1.0, None, 2), ("f1", 0.5, None, 2), ("diverged", None, None, 2)]
    assert rows[-1]["text"] == "nan"


@pytest.mark.parametrize(("args", "error"), [
    (("", 1.0), ValueError), (("x" * 201, 1.0), ValueError), (("a", "1.0"), TypeError), (("a", True), TypeError),
    (("a", 1.0, 1.5), TypeError), (("a", 1.0, True), TypeError),
])
def test_log_metric_refuses_bad_values(args: tuple, error: type) -> None:
    with pytest.raises(error):
        fetchml.log_metric(*args)


def test_outside_a_run_nothing_is_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FETCHML_METRICS_FILE", raising=False)
    monkeypatch.setattr(fetchml, "_warned", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = fetchml.log_metric("loss", 1.0)
        fetchml.log_metric("loss", 2.0)
    assert record["value"] == 1.0 and len(caught) == 1 and "not inside a run" in str(caught[0].message)
    assert not fetchml.in_run() and fetchml.run_id() is None and fetchml.parameters() == {}


def test_parameters_and_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FETCHML_PARAMETERS", json.dumps({"lr": 0.1}))
    monkeypatch.setenv("FETCHML_OUTPUTS_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("FETCHML_RUN_ID", "run-1")
    assert fetchml.parameters() == {"lr": 0.1} and fetchml.run_id() == "run-1"
    assert fetchml.outputs_dir() == tmp_path / "out" and (tmp_path / "out").is_dir()
