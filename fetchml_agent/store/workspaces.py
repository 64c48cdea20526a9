"""Workspace rows: the record, and the queries that read and write it.

The record's secrets (:data:`SEALED`: Jupyter's token, the package index key, the password hash)
are clear text in memory and sealed in the row (:mod:`fetchml_agent.store.sealed`): every query
that reads or writes a row takes the agent's :class:`~fetchml_agent.store.sealed.Sealer`.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .sealed import Sealer, is_sealed

__all__ = ["SEALED", "Workspace", "delete_workspace", "insert_workspace", "load_workspaces", "update_workspace"]

_JSON_FIELDS = ("resources", "limits", "config", "runtime_state")
#: Columns stored sealed, never in clear.
SEALED = ("token", "index_key", "password_hash")


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
    def from_row(cls, row: sqlite3.Row, sealer: Sealer) -> Workspace:
        d = dict(row)
        for key in _JSON_FIELDS:
            if d.get(key) is not None:
                d[key] = json.loads(d[key])
        for key in SEALED:
            d[key] = sealer.open(d[key], _aad(key, d["id"]))
        d["managed_path"] = bool(d["managed_path"])
        return cls(**d)

    def to_row(self, sealer: Sealer) -> dict[str, Any]:
        d = asdict(self)
        for key in _JSON_FIELDS:
            if d[key] is not None:
                d[key] = json.dumps(d[key], sort_keys=True)
        for key in SEALED:
            d[key] = sealer.seal(d[key], _aad(key, self.id))
        d["managed_path"] = int(self.managed_path)
        return d


def _aad(column: str, workspace_id: str) -> str:
    return f"workspaces.{column}.{workspace_id}"


_COLUMNS = [f.name for f in fields(Workspace)]


def load_workspaces(conn: sqlite3.Connection, sealer: Sealer) -> list[Workspace]:
    """Every workspace; a row an older agent wrote with secrets in clear is sealed now.

    Raises :class:`~fetchml_agent.store.sealed.SealError` when a secret does not open (another key).
    """
    rows = conn.execute("SELECT * FROM workspaces ORDER BY created_at, name").fetchall()
    found = [Workspace.from_row(r, sealer) for r in rows]
    for row, ws in zip(rows, found, strict=True):
        if not all(is_sealed(row[key]) for key in SEALED):
            update_workspace(conn, ws, sealer)
    return found


def insert_workspace(conn: sqlite3.Connection, ws: Workspace, sealer: Sealer) -> None:
    row = ws.to_row(sealer)
    cols = ", ".join(_COLUMNS)
    marks = ", ".join(f":{c}" for c in _COLUMNS)
    conn.execute(f"INSERT INTO workspaces ({cols}) VALUES ({marks})", row)


def update_workspace(conn: sqlite3.Connection, ws: Workspace, sealer: Sealer) -> None:
    row = ws.to_row(sealer)
    sets = ", ".join(f"{c} = :{c}" for c in _COLUMNS if c != "id")
    conn.execute(f"UPDATE workspaces SET {sets} WHERE id = :id", row)


def delete_workspace(conn: sqlite3.Connection, workspace_id: str) -> None:
    conn.execute("DELETE FROM workspaces WHERE id = ?", (workspace_id,))
