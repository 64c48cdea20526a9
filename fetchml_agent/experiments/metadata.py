"""The workspace metadata document (``ml jupyter metadata``) and its export (``ml jupyter export``).

The document holds the seed's tracked information, one table each: ``workspace`` (creation and
modification dates, resources), ``experiments`` (linked experiment ids), ``resource_usage``
(per run: duration, peak memory, GPUs), ``packages`` (package installation records: the audit
log's ``package.*`` events), ``notebook_executions`` (every run) and ``sync_history``. The export
is the same document plus every recorded ``metrics`` row, so it contains every field metadata
shows; :func:`csv_tables` renders it as one CSV text per table (nested values as JSON).
"""

from __future__ import annotations

import csv
import io
import json
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..agent import Agent
    from ..store.workspaces import Workspace

__all__ = ["COLUMNS", "TABLES", "csv_tables", "export_document", "metadata_document"]

TABLES = ("workspace", "experiments", "resource_usage", "packages", "notebook_executions", "sync_history", "metrics")
FORMAT_VERSION = 1
# Columns of each table, so an empty table still exports its header (a unit test keeps these
# equal to the keys the documents are built with).
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


async def metadata_document(agent: Agent, ws: Workspace) -> dict[str, Any]:
    from ..store.audit import query_events
    from .records import links_of, runs_of, sync_history_of

    store = agent.store
    links = await store.run(links_of, ws.id)
    runs = await store.run(lambda conn: runs_of(conn, workspace_ids=[ws.id]))
    packages = await store.run(lambda conn: query_events(conn, ws.name, 100_000, "package.", workspace_id=ws.id))
    syncs = await store.run(sync_history_of, ws.id)
    current = ws.config.get("experiment")
    runs.sort(key=lambda r: (r.queued_at, r.id))
    return {
        "workspace": {
            "name": ws.name,
            "id": ws.id,
            "owner": ws.owner,
            "created_at": ws.created_at,
            "modified_at": ws.updated_at,
            "started_at": ws.started_at,
            "status": ws.status,
            "path": ws.path,
            "runtime": ws.runtime,
            "image": ws.image,
            "cpu": ws.resources.get("cpu"),
            "memory_mb": ws.resources.get("memory_mb"),
            "gpu": ws.resources.get("gpu", 0),
            "disk_mb": ws.resources.get("disk_mb"),
            "current_experiment": current,
        },
        "experiments": [{**link, "current": link["id"] == current} for link in links],
        "resource_usage": [
            {
                "run_id": r.id,
                "experiment": r.experiment_id,
                "status": r.status,
                "started_at": r.started_at,
                "finished_at": r.finished_at,
                "duration_s": r.duration_s,
                "peak_memory_bytes": r.peak_memory_bytes,
                "gpus": r.gpus,
                "gpu_indexes": r.gpu_indexes,
            }
            for r in runs
        ],
        "packages": [
            {"ts": e["ts"], "user": e["user"], "action": e["action"], "outcome": e["outcome"], "details": e["details"]}
            for e in reversed(packages)
        ],
        "notebook_executions": [
            {
                "run_id": r.id,
                "experiment": r.experiment_id,
                "user": r.user,
                "kind": r.kind,
                "target": r.target,
                "parameters": r.parameters,
                "status": r.status,
                "message": r.message,
                "error": r.error,
                "attempts": len(r.attempts) or r.attempt,
                "retries": r.retries,
                "timeout_s": r.timeout_s,
                "queued_at": r.queued_at,
                "started_at": r.started_at,
                "finished_at": r.finished_at,
                "exit_code": r.exit_code,
                "outputs": r.outputs,
                "warnings": r.warnings,
            }
            for r in runs
        ],
        "sync_history": syncs,
    }


async def export_document(agent: Agent, ws: Workspace) -> dict[str, Any]:
    """The metadata document, every metric of the workspace's runs, and when it was exported."""
    from .records import metrics_of

    doc = await metadata_document(agent, ws)
    run_ids = [r["run_id"] for r in doc["notebook_executions"]]
    doc["metrics"] = await agent.store.run(metrics_of, run_ids)
    doc["exported_at"] = time.time()
    doc["format_version"] = FORMAT_VERSION
    return doc


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
