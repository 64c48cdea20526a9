"""Helpers for the experiment tests: real notebooks on disk, the agent's database, processes."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import nbformat

from tests.conftest import AgentProcess

__all__ = ["audit_actions", "processes_in", "run_record", "wait_for", "write_notebook"]


def write_notebook(path: Path, *cells: str, parameters: str | None = None) -> Path:
    """A real .ipynb: an optional cell tagged ``parameters`` first, then ``cells``."""
    nb = nbformat.v4.new_notebook()
    if parameters is not None:
        cell = nbformat.v4.new_code_cell(parameters)
        cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    nb.cells.extend(nbformat.v4.new_code_cell(c) for c in cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


def wait_for(agent: AgentProcess, run_id: str, statuses: tuple[str, ...], timeout: float = 180, user: str = "admin") -> dict[str, Any]:
    """Poll ``ml status RUN_ID --json`` until the run is in one of ``statuses``."""
    deadline = time.monotonic() + timeout
    run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        run = agent.ml_json("status", run_id, user=user)
        if run["status"] in statuses:
            return run
        time.sleep(0.2)
    raise AssertionError(f"{run_id} did not reach {statuses}: {run}")


def run_record(agent: AgentProcess, run_id: str) -> dict[str, Any]:
    conn = sqlite3.connect(agent.data_dir / "agent.db")
    conn.row_factory = sqlite3.Row
    try:
        return dict(conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone())
    finally:
        conn.close()


def audit_actions(agent: AgentProcess, workspace: str) -> list[tuple[str, str, dict[str, Any]]]:
    conn = sqlite3.connect(agent.data_dir / "agent.db")
    try:
        rows = conn.execute("SELECT action, outcome, details FROM audit WHERE workspace = ? ORDER BY id", (workspace,)).fetchall()
    finally:
        conn.close()
    return [(a, o, json.loads(d)) for a, o, d in rows]


def processes_in(directory: Path) -> list[int]:
    """Pids of live processes whose working directory is ``directory`` or below (a run's kernel)."""
    found = []
    target = str(directory.resolve())
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and (cwd == target or cwd.startswith(target + "/")):
            found.append(int(entry))
    return found
