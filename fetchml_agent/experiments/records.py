"""Experiments, links, runs, metrics and sync history as rows; the queries that read and write them.

Every function takes a ``sqlite3.Connection`` first and runs on the store's thread
(``await agent.store.run(fn, ...)``). Runs keep their workspace's name and id without a foreign
key, so a run's record outlives a deleted workspace.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..store import transaction

__all__ = [
    "ACTIVE",
    "FINISHED",
    "Run",
    "claim_run",
    "count_runs",
    "ensure_experiment",
    "get_experiment",
    "get_run",
    "insert_metrics",
    "insert_run",
    "insert_sync",
    "link_experiment",
    "links_of",
    "metrics_of",
    "runs_by_status",
    "runs_of",
    "status_summary",
    "sync_bases",
    "sync_history_of",
    "set_sync_bases",
    "update_run",
    "pending_conflicts",
    "save_sync_state",
    "forget_workspace_sync",
]

ACTIVE = ("queued", "running")
FINISHED = ("succeeded", "failed", "cancelled")
_JSON_FIELDS = ("parameters", "config", "error", "gpu_indexes", "outputs", "warnings", "attempts")


@dataclass
class Run:
    """One queued execution of a notebook or script. ``status``: queued → running → succeeded |
    failed | cancelled. ``error`` holds the failing cell (``cell`` counts from 1 in the executed
    notebook), ``ename``, ``evalue``, ``traceback``."""

    id: str
    experiment_id: str
    workspace_id: str
    workspace: str
    user: str
    kind: str  # notebook | script
    target: str  # path relative to the workspace
    run_dir: str
    queued_at: float
    status: str = "queued"
    message: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    gpus: int = 0
    gpu_indexes: list[int] = field(default_factory=list)
    timeout_s: float | None = None
    retries: int = 0
    attempt: int = 0
    current_cell: int | None = None
    cells_total: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    duration_s: float | None = None
    peak_memory_bytes: int | None = None
    pid: int | None = None
    pid_start: int | None = None
    outputs: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Run:
        d = dict(row)
        for key in _JSON_FIELDS:
            if d.get(key) is not None:
                d[key] = json.loads(d[key])
        return cls(**d)

    def to_row(self) -> dict[str, Any]:
        d = asdict(self)
        for key in _JSON_FIELDS:
            if d[key] is not None:
                d[key] = json.dumps(d[key], sort_keys=True, default=str)
        return d


_COLUMNS = [f.name for f in fields(Run)]


# -- experiments and links ----------------------------------------------------------------------


def get_experiment(conn: sqlite3.Connection, experiment_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM experiments WHERE id = ?", (experiment_id,)).fetchone()
    return dict(row) if row else None


def ensure_experiment(conn: sqlite3.Connection, experiment_id: str, user: str) -> bool:
    """Create the experiment unless it exists; True when it was created."""
    cur = conn.execute(
        "INSERT OR IGNORE INTO experiments (id, created_at, created_by) VALUES (?, ?, ?)", (experiment_id, time.time(), user)
    )
    return cur.rowcount == 1


def link_experiment(conn: sqlite3.Connection, workspace_id: str, experiment_id: str, user: str) -> tuple[bool, bool]:
    """Create the experiment if new and link it; returns (experiment created, link created)."""
    with transaction(conn):
        created = ensure_experiment(conn, experiment_id, user)
        cur = conn.execute(
            "INSERT OR IGNORE INTO experiment_links (workspace_id, experiment_id, linked_at, linked_by) VALUES (?, ?, ?, ?)",
            (workspace_id, experiment_id, time.time(), user),
        )
    return created, cur.rowcount == 1


def links_of(conn: sqlite3.Connection, workspace_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT l.experiment_id AS id, l.linked_at, l.linked_by, e.created_at, e.created_by FROM experiment_links l"
        " JOIN experiments e ON e.id = l.experiment_id WHERE l.workspace_id = ? ORDER BY l.linked_at, l.experiment_id",
        (workspace_id,),
    )
    return [dict(r) for r in rows]


# -- runs ---------------------------------------------------------------------------------------


def insert_run(conn: sqlite3.Connection, run: Run) -> None:
    cols = ", ".join(_COLUMNS)
    marks = ", ".join(f":{c}" for c in _COLUMNS)
    conn.execute(f"INSERT INTO runs ({cols}) VALUES ({marks})", run.to_row())


def update_run(conn: sqlite3.Connection, run: Run) -> None:
    sets = ", ".join(f"{c} = :{c}" for c in _COLUMNS if c != "id")
    conn.execute(f"UPDATE runs SET {sets} WHERE id = :id", run.to_row())


def claim_run(conn: sqlite3.Connection, run_id: str, to: str, started_at: float | None = None) -> bool:
    """Move a queued run to ``to`` (running or cancelled) unless something else already did."""
    cur = conn.execute(
        "UPDATE runs SET status = ?, started_at = COALESCE(?, started_at) WHERE id = ? AND status = 'queued'",
        (to, started_at, run_id),
    )
    return cur.rowcount == 1


def get_run(conn: sqlite3.Connection, run_id: str) -> Run | None:
    row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
    return Run.from_row(row) if row else None


def runs_by_status(conn: sqlite3.Connection, *statuses: str) -> list[Run]:
    marks = ", ".join("?" for _ in statuses)
    rows = conn.execute(f"SELECT * FROM runs WHERE status IN ({marks}) ORDER BY queued_at, id", statuses)
    return [Run.from_row(r) for r in rows]


def _run_filters(
    workspace_ids: list[str] | None, experiment_id: str | None, status: str | None, or_user: str | None
) -> tuple[str, list[Any]]:
    sql, params = " WHERE 1=1", []
    if workspace_ids is not None:
        marks = ", ".join("?" for _ in workspace_ids)
        if or_user is not None:
            sql += f" AND (workspace_id IN ({marks}) OR user = ?)"
            params.extend([*workspace_ids, or_user])
        else:
            sql += f" AND workspace_id IN ({marks})"
            params.extend(workspace_ids)
    if experiment_id is not None:
        sql += " AND experiment_id = ?"
        params.append(experiment_id)
    if status is not None:
        sql += " AND status = ?"
        params.append(status)
    return sql, params


def runs_of(
    conn: sqlite3.Connection,
    *,
    workspace_ids: list[str] | None = None,
    experiment_id: str | None = None,
    status: str | None = None,
    or_user: str | None = None,
    limit: int | None = None,
) -> list[Run]:
    """Runs newest first, filtered by any of: workspace ids (or runs of ``or_user``), experiment, status."""
    where, params = _run_filters(workspace_ids, experiment_id, status, or_user)
    sql = "SELECT * FROM runs" + where + " ORDER BY queued_at DESC, id DESC"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return [Run.from_row(r) for r in conn.execute(sql, params)]


def count_runs(
    conn: sqlite3.Connection,
    *,
    workspace_ids: list[str] | None = None,
    experiment_id: str | None = None,
    status: str | None = None,
    or_user: str | None = None,
) -> int:
    where, params = _run_filters(workspace_ids, experiment_id, status, or_user)
    return int(conn.execute("SELECT COUNT(*) FROM runs" + where, params).fetchone()[0])


def status_summary(conn: sqlite3.Connection, recent: int) -> tuple[list[tuple[str, str, str, int]], list[Run], list[Run]]:
    """What ``ml status`` needs, in three indexed queries however many runs there are:
    counts per (workspace id, user, status), the active runs, and the ``recent`` latest finished."""
    counts = [
        (r[0], r[1], r[2], r[3])
        for r in conn.execute("SELECT workspace_id, user, status, COUNT(*) FROM runs GROUP BY workspace_id, user, status")
    ]
    active = runs_by_status(conn, *ACTIVE)
    rows = conn.execute("SELECT * FROM runs WHERE finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT ?", (recent,))
    return counts, active, [Run.from_row(r) for r in rows]


# -- metrics ------------------------------------------------------------------------------------


def insert_metrics(conn: sqlite3.Connection, run_id: str, records: list[dict[str, Any]]) -> int:
    """Store the run's metric records (replacing any stored before); returns how many."""
    with transaction(conn):
        conn.execute("DELETE FROM run_metrics WHERE run_id = ?", (run_id,))
        conn.executemany(
            "INSERT INTO run_metrics (run_id, seq, attempt, name, step, value, ts) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(run_id, i, r.get("attempt", 1), r["name"], r.get("step"), r.get("value"), r.get("ts", 0.0)) for i, r in enumerate(records)],
        )
    return len(records)


def metrics_of(conn: sqlite3.Connection, run_ids: list[str]) -> list[dict[str, Any]]:
    if not run_ids:
        return []
    marks = ", ".join("?" for _ in run_ids)
    rows = conn.execute(
        f"SELECT run_id, seq, attempt, name, step, value, ts FROM run_metrics WHERE run_id IN ({marks}) ORDER BY run_id, seq",
        run_ids,
    )
    return [dict(r) for r in rows]


# -- sync ---------------------------------------------------------------------------------------


def sync_bases(conn: sqlite3.Connection, workspace_id: str, experiment_id: str) -> dict[str, str]:
    """Path → sha256 of each file as it was when this workspace and experiment last agreed on it."""
    rows = conn.execute(
        "SELECT path, sha256 FROM sync_files WHERE workspace_id = ? AND experiment_id = ?", (workspace_id, experiment_id)
    )
    return {r[0]: r[1] for r in rows}


def set_sync_bases(conn: sqlite3.Connection, workspace_id: str, experiment_id: str, bases: dict[str, str]) -> None:
    now = time.time()
    conn.executemany(
        "INSERT OR REPLACE INTO sync_files (workspace_id, experiment_id, path, sha256, synced_at) VALUES (?, ?, ?, ?, ?)",
        [(workspace_id, experiment_id, path, digest, now) for path, digest in bases.items()],
    )


def insert_sync(
    conn: sqlite3.Connection,
    workspace_id: str,
    workspace: str,
    experiment_id: str,
    direction: str,
    user: str,
    copied: list[str],
    conflicts: list[dict[str, str]],
    run_id: str | None = None,
) -> dict[str, Any]:
    ts = time.time()
    cur = conn.execute(
        "INSERT INTO sync_history (ts, workspace_id, workspace, experiment_id, direction, user, run_id, copied, conflicts)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (ts, workspace_id, workspace, experiment_id, direction, user, run_id, json.dumps(copied), json.dumps(conflicts)),
    )
    return {"id": cur.lastrowid, "ts": ts, "experiment_id": experiment_id, "direction": direction, "user": user,
            "run_id": run_id, "copied": copied, "conflicts": conflicts}


def sync_history_of(conn: sqlite3.Connection, workspace_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT id, ts, experiment_id, direction, user, run_id, copied, conflicts FROM sync_history"
        " WHERE workspace_id = ? ORDER BY ts, id",
        (workspace_id,),
    )
    out = []
    for r in rows:
        d = dict(r)
        d["copied"], d["conflicts"] = json.loads(d["copied"]), json.loads(d["conflicts"])
        out.append(d)
    return out


def pending_conflicts(conn: sqlite3.Connection, workspace_id: str, experiment_id: str) -> dict[str, dict[str, Any]]:
    """Path → ``{"theirs_sha256", "copy_path", "created_at"}`` of conflicts not resolved yet."""
    rows = conn.execute(
        "SELECT path, theirs_sha256, copy_path, created_at FROM sync_conflicts WHERE workspace_id = ? AND experiment_id = ?",
        (workspace_id, experiment_id),
    )
    return {r[0]: {"theirs_sha256": r[1], "copy_path": r[2], "created_at": r[3]} for r in rows}


def save_sync_state(
    conn: sqlite3.Connection,
    workspace_id: str,
    experiment_id: str,
    bases: dict[str, str],
    resolved: list[str],
    new_conflicts: dict[str, dict[str, Any]],
) -> None:
    """One transaction: the new agreed hashes, conflicts resolved and conflicts found."""
    with transaction(conn):
        set_sync_bases(conn, workspace_id, experiment_id, bases)
        conn.executemany(
            "DELETE FROM sync_conflicts WHERE workspace_id = ? AND experiment_id = ? AND path = ?",
            [(workspace_id, experiment_id, path) for path in resolved],
        )
        conn.executemany(
            "INSERT OR REPLACE INTO sync_conflicts (workspace_id, experiment_id, path, theirs_sha256, copy_path, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [(workspace_id, experiment_id, path, c["theirs_sha256"], c["copy_path"], c["created_at"]) for path, c in new_conflicts.items()],
        )


def forget_workspace_sync(conn: sqlite3.Connection, workspace_id: str) -> None:
    """A deleted workspace's sync state (its history stays)."""
    with transaction(conn):
        conn.execute("DELETE FROM sync_files WHERE workspace_id = ?", (workspace_id,))
        conn.execute("DELETE FROM sync_conflicts WHERE workspace_id = ?", (workspace_id,))
