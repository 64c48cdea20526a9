"""Workspace rows: the record, and the queries that read and write it."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["Workspace", "delete_workspace", "insert_workspace", "load_workspaces", "update_workspace"]

_JSON_FIELDS = ("resources", "limits", "config", "runtime_state")


@dataclass
class Workspace:
    id: str
    name: str
    owner: str
    path: str
    runtime: str
    token: str
    index_key: str
    created_at: float
    updated_at: float
    status: str = "stopped"  # starting | running | stopping | stopped | failed | missing
    status_message: str = ""
    managed_path: bool = True
    url: str | None = None
    port: int | None = None
    password_hash: str | None = None
    resources: dict[str, Any] = field(default_factory=dict)
    limits: dict[str, Any] = field(default_factory=dict)
    image: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    runtime_state: dict[str, Any] | None = None
    started_at: float | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Workspace:
        d = dict(row)
        for key in _JSON_FIELDS:
            if d.get(key) is not None:
                d[key] = json.loads(d[key])
        d["managed_path"] = bool(d["managed_path"])
        return cls(**d)

    def to_row(self) -> dict[str, Any]:
        d = asdict(self)
        for key in _JSON_FIELDS:
            if d[key] is not None:
                d[key] = json.dumps(d[key], sort_keys=True)
        d["managed_path"] = int(self.managed_path)
        return d


_COLUMNS = [f.name for f in fields(Workspace)]


def load_workspaces(conn: sqlite3.Connection) -> list[Workspace]:
    return [Workspace.from_row(r) for r in conn.execute("SELECT * FROM workspaces ORDER BY created_at, name")]


def insert_workspace(conn: sqlite3.Connection, ws: Workspace) -> None:
    row = ws.to_row()
    cols = ", ".join(_COLUMNS)
    marks = ", ".join(f":{c}" for c in _COLUMNS)
    conn.execute(f"INSERT INTO workspaces ({cols}) VALUES ({marks})", row)


def update_workspace(conn: sqlite3.Connection, ws: Workspace) -> None:
    row = ws.to_row()
    sets = ", ".join(f"{c} = :{c}" for c in _COLUMNS if c != "id")
    conn.execute(f"UPDATE workspaces SET {sets} WHERE id = :id", row)


def delete_workspace(conn: sqlite3.Connection, workspace_id: str) -> None:
    conn.execute("DELETE FROM workspaces WHERE id = ?", (workspace_id,))
