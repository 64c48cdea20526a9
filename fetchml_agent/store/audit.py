"""The audit log: one row per mutating action and per security decision."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

__all__ = ["insert_event", "query_events"]


def insert_event(
    conn: sqlite3.Connection,
    user: str,
    action: str,
    workspace: str | None,
    outcome: str,
    details: dict[str, Any] | None = None,
) -> int:
    cur = conn.execute(
        "INSERT INTO audit (ts, user, action, workspace, outcome, details) VALUES (?, ?, ?, ?, ?, ?)",
        (time.time(), user, action, workspace, outcome, json.dumps(details or {}, sort_keys=True, default=str)),
    )
    return int(cur.lastrowid or 0)


def query_events(
    conn: sqlite3.Connection, workspace: str | None = None, limit: int = 1000, action_prefix: str | None = None
) -> list[dict[str, Any]]:
    sql = "SELECT * FROM audit WHERE 1=1"
    params: list[Any] = []
    if workspace is not None:
        sql += " AND workspace = ?"
        params.append(workspace)
    if action_prefix:
        sql += " AND action LIKE ?"
        params.append(action_prefix + "%")
    sql += " ORDER BY id DESC LIMIT ?"
    params.append(limit)
    out = []
    for row in conn.execute(sql, params):
        d = dict(row)
        d["details"] = json.loads(d["details"])
        out.append(d)
    return out
