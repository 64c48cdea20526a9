"""The workspace metadata document (``ml jupyter metadata``) and its export (``ml jupyter export``).

The document holds the seed's tracked information, one table each: ``workspace`` (creation and
modification dates, resources), ``experiments`` (linked experiment ids), ``resource_usage``
(per run: duration, peak memory, GPUs), ``packages`` (package installation records: the audit
log's ``package.*`` events), ``notebook_executions`` (every run) and ``sync_history``. The export
is the same document plus every recorded ``metrics`` row, so it contains every field metadata
shows; ``ml jupyter export --format=csv`` renders it as one CSV file per table
(:mod:`fetchml_agent.cli.export`, which declares each table's columns).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..core import AgentCore
from ..store.audit import query_events
from .records import links_of, metrics_of, runs_of, sync_history_of

if TYPE_CHECKING:
    from ..store.workspaces import Workspace

__all__ = ["FORMAT_VERSION", "export_document", "metadata_document"]

FORMAT_VERSION = 1


async def metadata_document(agent: AgentCore, ws: Workspace) -> dict[str, Any]:
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


async def export_document(agent: AgentCore, ws: Workspace) -> dict[str, Any]:
    """The metadata document, every metric of the workspace's runs, and when it was exported."""
    doc = await metadata_document(agent, ws)
    run_ids = [r["run_id"] for r in doc["notebook_executions"]]
    doc["metrics"] = await agent.store.run(metrics_of, run_ids)
    doc["exported_at"] = time.time()
    doc["format_version"] = FORMAT_VERSION
    return doc
