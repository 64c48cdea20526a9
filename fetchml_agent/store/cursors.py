"""Positions in a runtime's change feed (``runtime_cursors``): the last one processed, by feed name
(``nomad:events``), so that an agent restarted resumes there."""

from __future__ import annotations

import sqlite3
import time

__all__ = ["get_cursor", "set_cursor"]


def get_cursor(conn: sqlite3.Connection, name: str) -> int:
    """The last position stored for ``name``; 0 when none."""
    row = conn.execute("SELECT position FROM runtime_cursors WHERE name = ?", (name,)).fetchone()
    return int(row[0]) if row else 0


def set_cursor(conn: sqlite3.Connection, name: str, position: int) -> None:
    conn.execute(
        "INSERT INTO runtime_cursors (name, position, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT(name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at",
        (name, int(position), time.time()),
    )
