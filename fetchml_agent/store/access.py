"""Rows of the access concern: token generations, sessions, MFA enrolments, server bindings.

Plain functions of a connection, run on the store's thread (:meth:`Store.run`). The schema is the
access migration in :mod:`fetchml_agent.store.migrations`.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MfaRow",
    "SessionRow",
    "bind_server",
    "bump_generation",
    "delete_mfa",
    "end_sessions",
    "load_bindings",
    "load_generations",
    "load_mfa",
    "load_open_sessions",
    "query_sessions",
    "save_mfa",
    "insert_session",
    "touch_sessions",
]


@dataclass
class SessionRow:
    id: str
    user: str
    workspace_id: str
    workspace: str
    method: str
    mfa: bool
    address: str
    created_at: float
    last_seen: float
    ended_at: float | None = None
    end_reason: str | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> SessionRow:
        d = dict(row)
        d["mfa"] = bool(d["mfa"])
        return cls(**d)


@dataclass
class MfaRow:
    user: str
    secret_sealed: str
    created_at: float
    confirmed_at: float | None = None
    last_step: int = 0
    recovery: list[str] = field(default_factory=list)  # sha256 hex of each unused recovery code


def load_generations(conn: sqlite3.Connection) -> dict[tuple[str, str], int]:
    rows = conn.execute("SELECT user, workspace_id, generation FROM access_token_generations")
    return {(r[0], r[1]): int(r[2]) for r in rows}


def bump_generation(conn: sqlite3.Connection, user: str, workspace_id: str) -> int:
    conn.execute(
        "INSERT INTO access_token_generations VALUES (?, ?, 1) "
        "ON CONFLICT (user, workspace_id) DO UPDATE SET generation = generation + 1",
        (user, workspace_id),
    )
    (gen,) = conn.execute(
        "SELECT generation FROM access_token_generations WHERE user = ? AND workspace_id = ?", (user, workspace_id)
    ).fetchone()
    return int(gen)


def insert_session(conn: sqlite3.Connection, s: SessionRow) -> None:
    conn.execute(
        "INSERT INTO access_sessions (id, user, workspace_id, workspace, method, mfa, address, created_at, last_seen) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (s.id, s.user, s.workspace_id, s.workspace, s.method, int(s.mfa), s.address, s.created_at, s.last_seen),
    )


def load_open_sessions(conn: sqlite3.Connection) -> list[SessionRow]:
    return [SessionRow.from_row(r) for r in conn.execute("SELECT * FROM access_sessions WHERE ended_at IS NULL")]


def touch_sessions(conn: sqlite3.Connection, seen: dict[str, float]) -> None:
    conn.executemany("UPDATE access_sessions SET last_seen = ? WHERE id = ? AND last_seen < ?",
                     [(ts, sid, ts) for sid, ts in seen.items()])


def end_sessions(conn: sqlite3.Connection, ids: list[str], ended_at: float, reason: str) -> None:
    conn.executemany("UPDATE access_sessions SET ended_at = ?, end_reason = ? WHERE id = ? AND ended_at IS NULL",
                     [(ended_at, reason, sid) for sid in ids])


def query_sessions(conn: sqlite3.Connection, user: str | None, include_ended: bool, limit: int = 200) -> list[SessionRow]:
    sql = "SELECT * FROM access_sessions WHERE 1=1"
    params: list[Any] = []
    if user is not None:
        sql += " AND user = ?"
        params.append(user)
    if not include_ended:
        sql += " AND ended_at IS NULL"
    sql += " ORDER BY created_at DESC LIMIT ?"
    params.append(limit)
    return [SessionRow.from_row(r) for r in conn.execute(sql, params)]


def load_mfa(conn: sqlite3.Connection) -> dict[str, MfaRow]:
    out = {}
    for r in conn.execute("SELECT * FROM access_mfa"):
        d = dict(r)
        d["recovery"] = json.loads(d["recovery"])
        out[d["user"]] = MfaRow(**d)
    return out


def save_mfa(conn: sqlite3.Connection, m: MfaRow) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO access_mfa VALUES (?, ?, ?, ?, ?, ?)",
        (m.user, m.secret_sealed, m.created_at, m.confirmed_at, m.last_step, json.dumps(m.recovery)),
    )


def delete_mfa(conn: sqlite3.Connection, user: str) -> None:
    conn.execute("DELETE FROM access_mfa WHERE user = ?", (user,))


def load_bindings(conn: sqlite3.Connection) -> dict[str, str]:
    return {r[0]: r[1] for r in conn.execute("SELECT digest, workspace_id FROM access_server_bindings")}


def bind_server(conn: sqlite3.Connection, digest: str, workspace_id: str, bound_at: float) -> None:
    conn.execute("INSERT OR REPLACE INTO access_server_bindings VALUES (?, ?, ?)", (digest, workspace_id, bound_at))
