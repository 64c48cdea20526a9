"""Package requests, their requesters' reasons, and the install records of each workspace.

A request is keyed by workspace, normalized package name, version range and installer (pip or
conda); while it is pending, a second request for the same key adds its requester's reason to it
instead of opening another. Deciding is atomic: only a pending request changes, so approving twice
is visible to the caller (:func:`decide_request` returns the row as it was).
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from . import transaction

__all__ = [
    "InstallRecord",
    "add_request",
    "approved_requests",
    "clear_installs",
    "decide_request",
    "get_request",
    "list_installs",
    "list_removals",
    "list_requests",
    "record_installs",
    "record_removals",
]


@dataclass(frozen=True)
class InstallRecord:
    """One package that ``ml jupyter install`` put into a workspace (after pip succeeded)."""

    name: str  # normalized
    display_name: str
    version: str
    spec: str  # the spec as typed, for requested packages ("" for dependencies)
    requested: bool
    installer: str  # pip | conda
    forced: bool
    installed_by: str
    installed_at: float
    sha256: str = ""  # of the file pip installed, where pip reported it (a run's lock pins it; issue #18)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.display_name, "normalized": self.name, "version": self.version, "spec": self.spec,
                "requested": self.requested, "installer": self.installer, "forced": self.forced,
                "installed_by": self.installed_by, "installed_at": self.installed_at}


def _reasons(conn: sqlite3.Connection, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    for chunk in (ids[i:i + 500] for i in range(0, len(ids), 500)):
        marks = ",".join("?" * len(chunk))
        for r in conn.execute(
            f"SELECT request_id, requester, spec, reason, requested_at FROM package_request_reasons "
            f"WHERE request_id IN ({marks}) ORDER BY rowid", chunk
        ):
            out[r[0]].append({"requester": r[1], "spec": r[2], "reason": r[3], "requested_at": r[4]})
    return out


def _request_dicts(conn: sqlite3.Connection, rows: Iterable[sqlite3.Row]) -> list[dict[str, Any]]:
    docs = [dict(r) for r in rows]
    reasons = _reasons(conn, [d["id"] for d in docs])
    for d in docs:
        d["conda"] = bool(d["conda"])
        d["requesters"] = reasons[d["id"]]
    return docs


def get_request(conn: sqlite3.Connection, request_id: str) -> dict[str, Any] | None:
    rows = conn.execute("SELECT * FROM package_requests WHERE id = ?", (request_id,)).fetchall()
    docs = _request_dicts(conn, rows)
    return docs[0] if docs else None


def add_request(conn: sqlite3.Connection, workspace_id: str, workspace: str, package: str, specifier: str,
                conda: bool, requester: str, spec: str, reason: str) -> tuple[dict[str, Any], bool]:
    """Opens a request, or adds this requester's reason to the open one; returns (request, created)."""
    now = time.time()
    with transaction(conn):
        row = conn.execute(
            "SELECT id FROM package_requests WHERE workspace_id = ? AND package = ? AND specifier = ? AND conda = ? "
            "AND status = 'pending'", (workspace_id, package, specifier, int(conda))).fetchone()
        created = row is None
        request_id = "req-" + secrets.token_hex(4) if created else row[0]
        if created:
            conn.execute(
                "INSERT INTO package_requests (id, workspace_id, workspace, package, specifier, conda, status, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?)",
                (request_id, workspace_id, workspace, package, specifier, int(conda), now))
        conn.execute("INSERT INTO package_request_reasons VALUES (?, ?, ?, ?, ?)",
                     (request_id, requester, spec, reason, now))
    doc = get_request(conn, request_id)
    assert doc is not None
    return doc, created


def list_requests(conn: sqlite3.Connection, *, status: str | None = None, requester: str | None = None,
                  workspace_id: str | None = None) -> list[dict[str, Any]]:
    """Requests, oldest first; ``requester`` keeps those this user asked for."""
    sql = "SELECT * FROM package_requests WHERE 1=1"
    params: list[Any] = []
    if status is not None:
        sql += " AND status = ?"
        params.append(status)
    if workspace_id is not None:
        sql += " AND workspace_id = ?"
        params.append(workspace_id)
    if requester is not None:
        sql += " AND id IN (SELECT request_id FROM package_request_reasons WHERE requester = ?)"
        params.append(requester)
    sql += " ORDER BY created_at, id"
    return _request_dicts(conn, conn.execute(sql, params).fetchall())


def decide_request(conn: sqlite3.Connection, request_id: str, status: str, by: str,
                   reason: str) -> tuple[dict[str, Any] | None, bool]:
    """Approves or denies a pending request; returns (request after the call, whether it changed).

    ``(None, False)``: no such request; ``(doc, False)``: it was already decided (``doc`` says how).
    """
    with transaction(conn):
        cur = conn.execute(
            "UPDATE package_requests SET status = ?, decided_by = ?, decided_at = ?, decision_reason = ? "
            "WHERE id = ? AND status = 'pending'", (status, by, time.time(), reason, request_id))
    return get_request(conn, request_id), cur.rowcount == 1


def approved_requests(conn: sqlite3.Connection) -> list[tuple[str, str, str, bool]]:
    """Every approval as ``(workspace_id, package, specifier, conda)``."""
    return [(r[0], r[1], r[2], bool(r[3])) for r in conn.execute(
        "SELECT workspace_id, package, specifier, conda FROM package_requests WHERE status = 'approved'")]


def record_installs(conn: sqlite3.Connection, workspace_id: str, records: Iterable[InstallRecord]) -> None:
    """Keeps the latest install of each package (a reinstall or upgrade replaces the row)."""
    with transaction(conn):
        conn.executemany(
            "INSERT OR REPLACE INTO package_installs (workspace_id, name, display_name, version, spec, requested, "
            "installer, forced, installed_by, installed_at, sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(workspace_id, r.name, r.display_name, r.version, r.spec, int(r.requested), r.installer, int(r.forced),
              r.installed_by, r.installed_at, r.sha256) for r in records])


def list_installs(conn: sqlite3.Connection, workspace_id: str) -> list[InstallRecord]:
    return [InstallRecord(r["name"], r["display_name"], r["version"], r["spec"], bool(r["requested"]), r["installer"],
                          bool(r["forced"]), r["installed_by"], r["installed_at"], r["sha256"])
            for r in conn.execute("SELECT * FROM package_installs WHERE workspace_id = ? ORDER BY name",
                                  (workspace_id,))]


def clear_installs(conn: sqlite3.Connection, workspace_id: str) -> None:
    """Forgets a workspace's install records (its environment was discarded)."""
    conn.execute("DELETE FROM package_installs WHERE workspace_id = ?", (workspace_id,))


def record_removals(conn: sqlite3.Connection, workspace_id: str, removed: Iterable[tuple[str, str, str]], by: str,
                    at: float) -> None:
    """``ml jupyter uninstall``: ``(normalized, display name, version)`` rows; their install records go."""
    with transaction(conn):
        for name, display, version in removed:
            conn.execute("INSERT INTO package_removals (workspace_id, name, display_name, version, removed_by, "
                         "removed_at) VALUES (?, ?, ?, ?, ?, ?)", (workspace_id, name, display, version, by, at))
            conn.execute("DELETE FROM package_installs WHERE workspace_id = ? AND name = ?", (workspace_id, name))


def list_removals(conn: sqlite3.Connection, workspace_id: str, limit: int = 200) -> list[dict[str, Any]]:
    """What was removed from a workspace, newest first."""
    return [{"name": r[0], "normalized": r[1], "version": r[2], "removed_by": r[3], "removed_at": r[4]}
            for r in conn.execute("SELECT display_name, name, version, removed_by, removed_at FROM package_removals "
                                  "WHERE workspace_id = ? ORDER BY removed_at DESC, id DESC LIMIT ?",
                                  (workspace_id, limit))]
