"""A run's result: the snapshot it reads, the document its outcome becomes, the files it leaves.

- :func:`publish_snapshot` puts the run's sources (``work/``) where the backend's workers read
  them (the snapshot volume; in place when the run's directory is inside it);
- :func:`result_from_status` turns a backend's final :class:`~fetchml_agent.runtimes.base.RunStatus`
  into the run's result document, shaped like the local runner's ``result.json`` (a backend whose
  runner wrote one hands that over instead, ``RunStatus.result``);
- :func:`read_metrics`, :func:`list_outputs` and :func:`write_results` read what the run left in
  its directory and write the experiment's record of it (``run.json``, ``metrics.csv``,
  ``experiment-config.json``), which sync carries into the workspace.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from ..jsonfiles import read_json, write_json
from ..runtimes.base import RunStatus
from .environment import REPORT as ENVIRONMENT_REPORT
from .records import Run

__all__ = [
    "EXIT_CANCELLED",
    "EXIT_TIMEOUT",
    "STATE_FILE",
    "list_outputs",
    "notebook_error",
    "publish_snapshot",
    "read_metrics",
    "result_from_status",
    "unpublish_snapshot",
    "write_results",
]

#: The backend's state of a run, in the run's directory: what a restarted agent follows again.
STATE_FILE = "runtime-job.json"
EXIT_TIMEOUT = 124
EXIT_CANCELLED = 143


def publish_snapshot(snapshot_dir: Path | None, run_dir: Path, run_id: str) -> tuple[Path, bool]:
    """Where the run's workers find ``run_dir/work``: its path relative to ``snapshot_dir``, and
    whether a copy was made there (to remove after the run). ``run_dir`` inside ``snapshot_dir``
    is used in place."""
    work = run_dir / "work"
    if snapshot_dir is None:
        return work, False
    base = snapshot_dir.resolve()
    if base == work.resolve() or base in work.resolve().parents:
        return work.resolve().relative_to(base), False
    dest = base / "runs" / run_id
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(work, dest, symlinks=True)
    return dest.relative_to(base), True


def unpublish_snapshot(snapshot_dir: Path | None, state: dict[str, Any]) -> None:
    if snapshot_dir is not None and state.get("snapshot_copy"):
        shutil.rmtree(snapshot_dir.resolve() / state["snapshot_path"], ignore_errors=True)


def notebook_error(path: Path) -> dict[str, Any] | None:
    """The first error papermill recorded in an executed notebook: ``{cell, execution_count,
    ename, evalue, traceback}`` (``cell`` counts from 1), or ``None``."""
    try:
        nb = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    # papermill's own banners (markdown cells tagged papermill-error-cell-tag) are not counted.
    cells = [c for c in nb.get("cells") or [] if "papermill-error-cell-tag" not in c.get("metadata", {}).get("tags", [])]
    for i, cell in enumerate(cells, start=1):
        for out in cell.get("outputs") or []:
            if out.get("output_type") == "error":
                return {"cell": i, "execution_count": cell.get("execution_count"), "ename": out.get("ename"),
                        "evalue": out.get("evalue"), "traceback": out.get("traceback") or []}
    return None


def result_from_status(run: Run, status: RunStatus, cancelled: bool, fetched: str | None) -> dict[str, Any]:
    """The run's result document (as the local runner writes it) from the runtime's final
    :class:`~fetchml_agent.runtimes.base.RunStatus`. ``fetched`` says why outputs are missing."""
    now = time.time()
    base: dict[str, Any] = {"finished_at": now, "attempts": [{"attempt": 1, "started_at": run.started_at,
                                                              "finished_at": now, "alloc_id": status.alloc_id}],
                            "peak_memory_bytes": status.peak_memory_bytes}
    note = f" (its results could not be fetched: {fetched})" if fetched else ""
    if status.state == "succeeded":
        return {**base, "status": "succeeded", "message": note.strip(" ()"), "error": None, "exit_code": 0}
    if status.state == "cancelled" or cancelled:
        return {**base, "status": "cancelled", "message": "cancelled" + note, "error": None, "exit_code": EXIT_CANCELLED}
    if status.state == "timed_out":
        limit = f"timed out after {float(run.timeout_s or 0):g} s"
        return {**base, "status": "failed", "message": limit + note, "exit_code": EXIT_TIMEOUT,
                "error": {"ename": "Timeout", "evalue": limit, "cell": None}}
    error = notebook_error(Path(run.run_dir, "output.ipynb")) if run.kind == "notebook" else None
    environment = read_json(Path(run.run_dir, ENVIRONMENT_REPORT)) or {}
    if environment.get("status") == "failed":
        message = f"the run's environment could not be installed: {environment.get('error')}"
        error = {"ename": "Environment", "evalue": environment.get("error"), "cell": None}
    elif error:
        message = f"cell {error['cell']} (In [{error['execution_count']}]) failed: {error['ename']}: {error['evalue']}"
    elif status.state == "missing":
        message = f"{status.message} while the run was followed: its results are lost"
    else:
        message = status.message or "the run failed"
        error = {"ename": "ExitCode" if status.exit_code else "NomadAllocation", "evalue": message, "cell": None}
    return {**base, "status": "failed", "message": message + note, "error": error, "exit_code": status.exit_code}


def read_metrics(path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill: the rest is still good
        if isinstance(rec, dict) and isinstance(rec.get("name"), str):
            out.append(rec)
    return out


def list_outputs(outputs: Path) -> list[str]:
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(outputs):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if not path.is_symlink():
                found.append(str(path.relative_to(outputs)))
    return found


def _metrics_csv(records: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["attempt", "name", "step", "value", "ts"])
    for r in records:
        writer.writerow([r.get("attempt", 1), r["name"], r.get("step"), r.get("value"), r.get("ts")])
    return buf.getvalue()


def _notebook_metadata(path: Path) -> dict[str, Any]:
    """What papermill recorded in the executed notebook: parameters, kernel, timings per cell."""
    try:
        nb = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(nb, dict):
        return {}

    def obj(value: Any) -> dict[str, Any]:  # some tools write null where an object belongs
        return value if isinstance(value, dict) else {}

    meta = obj(nb.get("metadata"))
    pm = obj(meta.get("papermill"))
    cells = []
    for i, cell in enumerate(nb.get("cells") or [], start=1):
        cp = cell.get("metadata", {}).get("papermill", {})
        if cell.get("cell_type") == "code":
            cells.append({"cell": i, "status": cp.get("status"), "duration_s": cp.get("duration"),
                          "execution_count": cell.get("execution_count"),
                          "injected_parameters": "injected-parameters" in cell.get("metadata", {}).get("tags", [])})
    return {
        "kernel": obj(meta.get("kernelspec")).get("name"),
        "language": obj(meta.get("language_info")).get("name"),
        "language_version": obj(meta.get("language_info")).get("version"),
        "papermill": {k: pm.get(k) for k in ("parameters", "default_parameters", "start_time", "end_time", "duration", "version", "exception")},
        "cells": cells,
    }


def write_results(run: Run, view: dict[str, Any], metrics: list[dict[str, Any]]) -> None:
    """The experiment's record of the finished ``run`` (``view``: the run as clients see it), as
    files: what sync carries into the workspace."""
    run_dir = Path(run.run_dir)
    doc = dict(view)
    doc["attempts"] = run.attempts
    doc["config"] = run.config
    if run.kind == "notebook":
        doc["notebook"] = _notebook_metadata(run_dir / "output.ipynb")
    latest: dict[str, Any] = {}
    for m in metrics:
        latest[m["name"]] = m.get("value")
    doc["metrics"] = {"count": len(metrics), "latest": latest}
    write_json(run_dir / "run.json", doc)
    (run_dir / "metrics.csv").write_text(_metrics_csv(metrics))
    write_json(run_dir / "experiment-config.json", run.config)
