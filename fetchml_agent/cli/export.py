"""``ml jupyter export --format=csv``: the export document (``ml jupyter export``, built by the
agent's :mod:`fetchml_agent.experiments.metadata`) as one CSV text per table, nested values as JSON.

:data:`COLUMNS` declares each table's columns, so that an empty table still exports its header (a
unit test keeps them equal to the keys the agent builds the documents with).
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

__all__ = ["COLUMNS", "TABLES", "csv_tables"]

TABLES = ("workspace", "experiments", "resource_usage", "packages", "notebook_executions", "sync_history", "metrics")
COLUMNS: dict[str, tuple[str, ...]] = {
    "workspace": ("name", "id", "owner", "created_at", "modified_at", "started_at", "status", "path", "runtime",
                  "image", "cpu", "memory_mb", "gpu", "disk_mb", "current_experiment"),
    "experiments": ("id", "linked_at", "linked_by", "created_at", "created_by", "current"),
    "resource_usage": ("run_id", "experiment", "status", "started_at", "finished_at", "duration_s",
                       "peak_memory_bytes", "gpus", "gpu_indexes"),
    "packages": ("ts", "user", "action", "outcome", "details"),
    "notebook_executions": ("run_id", "experiment", "user", "kind", "target", "parameters", "status", "message",
                            "error", "attempts", "retries", "timeout_s", "queued_at", "started_at", "finished_at",
                            "exit_code", "outputs", "warnings"),
    "sync_history": ("id", "ts", "experiment_id", "direction", "user", "run_id", "copied", "conflicts"),
    "metrics": ("run_id", "seq", "attempt", "name", "step", "value", "ts"),
}


def _cell(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return "" if value is None else value


def csv_tables(doc: dict[str, Any]) -> dict[str, str]:
    """``{table: CSV text}`` for each table of an export document (header row first)."""
    out: dict[str, str] = {}
    for table in TABLES:
        value = doc.get(table)
        rows = [value] if isinstance(value, dict) else list(value or [])
        columns: list[str] = list(COLUMNS[table])
        for row in rows:
            columns.extend(k for k in row if k not in columns)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in columns])
        out[table] = buf.getvalue()
    return out
