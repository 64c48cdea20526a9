"""Per-workspace access grants in memory: read once from the store, written through on change."""

from __future__ import annotations

import sqlite3
import time

from ..store import Store

__all__ = ["Grants"]

Grant = tuple[str, str]  # (principal type "user" | "team", principal)


class Grants:
    """``{workspace id: {(kind, principal): role}}``, loaded from the store on first use."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._cache: dict[str, dict[Grant, str]] | None = None

    def _all(self) -> dict[str, dict[Grant, str]]:
        if self._cache is None:
            rows = self._store.run_sync(
                lambda conn: conn.execute("SELECT workspace_id, principal_type, principal, role FROM access").fetchall()
            )
            cache: dict[str, dict[Grant, str]] = {}
            for r in rows:
                cache.setdefault(r[0], {})[(r[1], r[2])] = r[3]
            self._cache = cache
        return self._cache

    def of(self, workspace_id: str) -> dict[Grant, str]:
        """The grants of one workspace (a live view: do not change it)."""
        return self._all().get(workspace_id, {})

    async def set(self, workspace_id: str, kind: str, principal: str, role: str | None, by: str) -> None:
        """Grant ``role`` (``None``: revoke) and write it through."""
        await self._store.run(_set_grant, workspace_id, kind, principal, role, by)
        grants = self._all().setdefault(workspace_id, {})
        if role is None:
            grants.pop((kind, principal), None)
        else:
            grants[(kind, principal)] = role

    def forget(self, workspace_id: str) -> None:
        """The workspace is deleted (its rows go with it)."""
        self._all().pop(workspace_id, None)

    def reload(self) -> None:
        """Read every grant from the store again at next use (rows changed under it: a GDPR erase)."""
        self._cache = None


def _set_grant(conn: sqlite3.Connection, ws_id: str, kind: str, principal: str, role: str | None, by: str) -> None:
    if role is None:
        conn.execute(
            "DELETE FROM access WHERE workspace_id = ? AND principal_type = ? AND principal = ?", (ws_id, kind, principal)
        )
    else:
        conn.execute(
            "INSERT OR REPLACE INTO access VALUES (?, ?, ?, ?, ?, ?)", (ws_id, kind, principal, role, by, time.time())
        )
