"""Schema migrations, applied in order at start-up. Append; never edit a released step.

Each concern appends its own steps (workspaces and audit here; packages, experiments and runs in
their own steps below). ``PRAGMA user_version`` records how many steps ran.
"""

from __future__ import annotations

__all__ = ["MIGRATIONS"]

MIGRATIONS: list[str] = [
    # 1: workspaces, access grants, audit log.
    """
    CREATE TABLE workspaces (
        id             TEXT PRIMARY KEY,
        name           TEXT NOT NULL UNIQUE,
        owner          TEXT NOT NULL,
        path           TEXT NOT NULL,
        managed_path   INTEGER NOT NULL DEFAULT 1,
        status         TEXT NOT NULL,
        status_message TEXT NOT NULL DEFAULT '',
        url            TEXT,
        port           INTEGER,
        token          TEXT NOT NULL,
        password_hash  TEXT,
        resources      TEXT NOT NULL DEFAULT '{}',
        limits         TEXT NOT NULL DEFAULT '{}',
        image          TEXT,
        config         TEXT NOT NULL DEFAULT '{}',
        runtime        TEXT NOT NULL,
        runtime_state  TEXT,
        index_key      TEXT NOT NULL UNIQUE,
        created_at     REAL NOT NULL,
        updated_at     REAL NOT NULL,
        started_at     REAL
    );
    CREATE TABLE access (
        workspace_id   TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
        principal_type TEXT NOT NULL CHECK (principal_type IN ('user', 'team')),
        principal      TEXT NOT NULL,
        role           TEXT NOT NULL,
        granted_by     TEXT NOT NULL,
        granted_at     REAL NOT NULL,
        PRIMARY KEY (workspace_id, principal_type, principal)
    );
    CREATE TABLE audit (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        ts        REAL NOT NULL,
        user      TEXT NOT NULL,
        action    TEXT NOT NULL,
        workspace TEXT,
        outcome   TEXT NOT NULL,
        details   TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX audit_workspace_ts ON audit (workspace, ts);
    """,
]
