from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from fetchml_agent.cli.experiments import parse_parameter
from fetchml_agent.cli.export import COLUMNS, TABLES, csv_tables
from fetchml_agent.errors import InvalidArgument
from fetchml_agent.experiments import records as R
from fetchml_agent.experiments.metadata import export_document
from fetchml_agent.store import Store
from fetchml_agent.store.audit import append_event
from fetchml_agent.store.chain import ChainKey
from fetchml_agent.store.workspaces import Workspace, insert_workspace


@pytest.mark.parametrize(("text", "value"), [
    ("a=1", 1), ("a=1.5", 1.5), ("a=True", True), ("a=False", False), ("a=None", None), ("a=text", "text"),
    ("a=", ""), ("a=1e-3", 0.001), ("a=x=y", "x=y"),
])
def test_parameters_are_typed_like_papermill(text: str, value: object) -> None:
    assert parse_parameter(text) == ("a", value)


@pytest.mark.parametrize("text", ["novalue", "1a=2", "a-b=1", "=1"])
def test_bad_parameters(text: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_parameter(text)


def test_export_tables_have_their_columns_even_when_empty(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db")
    store.open()
    try:
        ws = Workspace(id="ws-1", name="one", owner="admin", path=str(tmp_path), runtime="local", token="t", index_key="k",
                       created_at=1.0, updated_at=2.0, resources={"cpu": 2, "gpu": 0}, config={"experiment": "e"})
        store.run_sync(insert_workspace, ws, store.sealer)
        agent = SimpleNamespace(store=store)
        empty = asyncio.run(export_document(agent, ws))  # type: ignore[arg-type]
        for table, text in csv_tables(empty).items():
            assert next(csv.reader(io.StringIO(text))) == list(COLUMNS[table])
        store.run_sync(R.link_experiment, "ws-1", "e", "admin")
        store.run_sync(R.insert_run, R.Run(id="run-1", experiment_id="e", workspace_id="ws-1", workspace="one", user="admin",
                                           kind="notebook", target="a.ipynb", run_dir="/x", queued_at=time.time(),
                                           parameters={"lr": 0.1}, error={"cell": 2}))
        store.run_sync(R.insert_metrics, "run-1", [{"name": "loss", "value": 0.5, "ts": 1.0}])
        store.run_sync(R.insert_sync, "ws-1", "one", "e", "full", "admin", ["a.py -> experiment"], [])
        store.run_sync(append_event, ChainKey(b"k" * 32), None, "admin", "package.install", "one", "ws-1", "ok",
                       {"package": "numpy"})
        doc = asyncio.run(export_document(agent, ws))  # type: ignore[arg-type]
        for table in TABLES:  # the documents are built with exactly the declared columns
            rows = [doc[table]] if isinstance(doc[table], dict) else doc[table]
            assert rows and all(list(r) == list(COLUMNS[table]) for r in rows), table
        tables = {t: list(csv.DictReader(io.StringIO(text))) for t, text in csv_tables(doc).items()}
        assert json.loads(tables["notebook_executions"][0]["parameters"]) == {"lr": 0.1}
        assert tables["packages"][0]["action"] == "package.install"
        assert tables["workspace"][0]["current_experiment"] == "e" and tables["experiments"][0]["current"] == "True"
    finally:
        store.close()
