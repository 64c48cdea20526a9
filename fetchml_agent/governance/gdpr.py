"""GDPR requests, on the database: everything held about a person, and erasing them.

:func:`collect` gathers one person's data per section (account, grants, workspaces owned,
package requests, installs and removals, runs, experiments, sync history, browser sessions, MFA
enrolment (not its secret), audit events). The
CLI writes it as one archive of JSON and CSV files.

:func:`erase` replaces the person's name with a pseudonym (``erased-`` and 12 random hex digits,
linked to nothing) in every table, deletes their access grants, MFA enrolment, personal token
generations and free-text request reasons, blanks their sessions' addresses, rewrites and seals the audit's personal documents (the chain still verifies), and
remembers the account by a MAC of its API key hash so the agent refuses that key from then on.
It runs with ``secure_delete`` and truncates the write-ahead log afterwards, so the old text
does not linger in free pages. Columns that name something on disk are not rewritten and are
reported instead (:data:`KEPT_COLUMNS`).
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from typing import Any

from ..store.audit import event_name_mentions, query_events, rewrite_personal
from ..store.chain import ChainKey

__all__ = ["KEPT_COLUMNS", "active_runs", "collect", "erase", "erased_key_macs", "mentions"]

#: Columns that hold paths or runtime handles: rewriting them would break the workspace or run.
KEPT_COLUMNS = frozenset({("workspaces", "path"), ("workspaces", "runtime_state"), ("runs", "run_dir"),
                          ("sync_conflicts", "copy_path")})
#: Tables the sweep leaves alone: the chain (rewritten through its personal documents only) and
#: what identifies no one.
_SKIP_TABLES = frozenset({"audit", "audit_head", "audit_checkpoints", "erased_accounts", "sqlite_sequence"})


def _rows(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
    cur = conn.execute(sql, params)
    names = [d[0] for d in cur.description]
    out = []
    for row in cur:
        item = dict(zip(names, row, strict=True))
        for k, v in item.items():
            if isinstance(v, bytes):
                item[k] = v.hex()
        out.append(item)
    return out


def collect(conn: sqlite3.Connection, name: str, teams: list[str], pattern: re.Pattern[str]) -> dict[str, list[dict[str, Any]]]:
    """Every row about ``name``, per section (a list of flat-ish dicts each)."""
    team_marks = ",".join("?" * len(teams)) or "''"
    sections: dict[str, list[dict[str, Any]]] = {
        "grants": _rows(conn, "SELECT w.name AS workspace, a.workspace_id, a.principal_type, a.principal, a.role, "
                              "a.granted_by, a.granted_at FROM access a JOIN workspaces w ON w.id = a.workspace_id "
                              f"WHERE (a.principal_type = 'user' AND a.principal = ?) OR (a.principal_type = 'team' "
                              f"AND a.principal IN ({team_marks})) ORDER BY a.granted_at", (name, *teams)),
        "workspaces_owned": _rows(conn, "SELECT id, name, owner, status, runtime, image, resources, created_at, "
                                        "updated_at, started_at FROM workspaces WHERE owner = ? ORDER BY created_at",
                                  (name,)),
        "package_requests": _rows(conn, "SELECT r.id, r.workspace, r.package, r.specifier, r.conda, r.status, "
                                        "r.created_at, r.decided_by, r.decided_at, r.decision_reason, q.spec, q.reason, "
                                        "q.requested_at FROM package_request_reasons q JOIN package_requests r "
                                        "ON r.id = q.request_id WHERE q.requester = ? ORDER BY q.requested_at",
                                  (name,)),
        "package_decisions": _rows(conn, "SELECT id, workspace, package, specifier, status, decided_at, decision_reason "
                                         "FROM package_requests WHERE decided_by = ? ORDER BY decided_at", (name,)),
        "package_installs": _rows(conn, "SELECT w.name AS workspace, i.* FROM package_installs i JOIN workspaces w "
                                        "ON w.id = i.workspace_id WHERE i.installed_by = ? ORDER BY i.installed_at",
                                  (name,)),
        "package_removals": _rows(conn, "SELECT w.name AS workspace, r.* FROM package_removals r JOIN workspaces w "
                                        "ON w.id = r.workspace_id WHERE r.removed_by = ? ORDER BY r.removed_at",
                                  (name,)),
        "runs": _rows(conn, "SELECT id, experiment_id, workspace, workspace_id, kind, target, parameters, status, "
                            "message, queued_at, started_at, finished_at, exit_code, duration_s FROM runs "
                            "WHERE user = ? ORDER BY queued_at", (name,)),
        "experiments": _rows(conn, "SELECT id, created_at FROM experiments WHERE created_by = ? ORDER BY created_at",
                             (name,)),
        "sync_history": _rows(conn, "SELECT id, ts, workspace, experiment_id, direction, run_id FROM sync_history "
                                    "WHERE user = ? ORDER BY ts", (name,)),
        "sessions": _rows(conn, "SELECT id, workspace, workspace_id, method, mfa, address, created_at, last_seen, "
                                "ended_at, end_reason FROM access_sessions WHERE user = ? ORDER BY created_at", (name,)),
        "mfa": _rows(conn, "SELECT created_at, confirmed_at FROM access_mfa WHERE user = ?", (name,)),
    }
    own = query_events(conn, user=name, limit=10_000_000, with_chain=True, oldest_first=True)
    seen = {e["id"] for e in own}
    about = [e for e in event_name_mentions(conn, pattern) if e["id"] not in seen]
    sections["audit_events"] = sorted(own + about, key=lambda e: e["id"])
    return sections


def active_runs(conn: sqlite3.Connection, name: str) -> list[str]:
    return [r[0] for r in conn.execute("SELECT id FROM runs WHERE user = ? AND status IN ('queued', 'running')",
                                       (name,))]


def _text_columns(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    out = []
    for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").fetchall():
        if table in _SKIP_TABLES or table.startswith("sqlite_"):
            continue
        for col in conn.execute(f'PRAGMA table_xinfo("{table}")').fetchall():
            name, decl, hidden = col[1], (col[2] or "").upper(), col[6]
            if hidden in (2, 3) or "INT" in decl or "REAL" in decl or "BLOB" in decl:
                continue
            out.append((table, name))
    return out


def mentions(conn: sqlite3.Connection, pattern: re.Pattern[str]) -> dict[str, int]:
    """``{"table.column": rows}`` that still mention the name (the audit's event text included)."""
    conn.create_function("fml_mentions", 1, lambda t: 1 if isinstance(t, str) and pattern.search(t) else 0,
                         deterministic=True)
    found: dict[str, int] = {}
    for table, column in [*_text_columns(conn), ("audit", "event"), ("audit", "personal")]:
        n = conn.execute(f'SELECT count(*) FROM "{table}" WHERE fml_mentions("{column}")').fetchone()[0]
        if n:
            found[f"{table}.{column}"] = int(n)
    return found


def erase(conn: sqlite3.Connection, key: ChainKey, name: str, pattern: re.Pattern[str], pseudonym: str,
          key_verifier: bytes | None, transfer_to: str | None) -> dict[str, Any]:
    """Erases ``name`` (one transaction); returns what was changed and what mentions remain.

    Workspaces they own go to ``transfer_to`` (the caller has checked there are none without it).
    """
    conn.execute("PRAGMA secure_delete = ON")
    conn.create_function("fml_mentions", 1, lambda t: 1 if isinstance(t, str) and pattern.search(t) else 0,
                         deterministic=True)
    conn.create_function("fml_scrub", 1, lambda t: pattern.sub(pseudonym, t) if isinstance(t, str) else t,
                         deterministic=True)
    changed: dict[str, int] = {}
    conn.execute("BEGIN IMMEDIATE")
    try:
        if transfer_to:
            changed["workspaces.owner"] = conn.execute("UPDATE workspaces SET owner = ? WHERE owner = ?",
                                                       (transfer_to, name)).rowcount
        changed["access (grants deleted)"] = conn.execute(
            "DELETE FROM access WHERE principal_type = 'user' AND principal = ?", (name,)).rowcount
        changed["package_request_reasons.reason (blanked)"] = conn.execute(
            "UPDATE package_request_reasons SET reason = '' WHERE requester = ? AND reason != ''", (name,)).rowcount
        changed["access_mfa (enrolment deleted)"] = conn.execute("DELETE FROM access_mfa WHERE user = ?",
                                                                 (name,)).rowcount
        changed["access_token_generations (deleted)"] = conn.execute(
            "DELETE FROM access_token_generations WHERE user = ?", (name,)).rowcount
        changed["access_sessions.address (blanked)"] = conn.execute(
            "UPDATE access_sessions SET address = '' WHERE user = ? AND address != ''", (name,)).rowcount
        for table, column in _text_columns(conn):
            if (table, column) in KEPT_COLUMNS:
                continue
            n = conn.execute(f'UPDATE "{table}" SET "{column}" = fml_scrub("{column}") '
                             f'WHERE fml_mentions("{column}")').rowcount
            if n:
                changed[f"{table}.{column}"] = n
        changed["audit (personal documents sealed)"] = rewrite_personal(conn, key, pattern, pseudonym)
        if key_verifier is not None:
            conn.execute("INSERT OR REPLACE INTO erased_accounts (key_mac, pseudonym, erased_at) VALUES (?, ?, ?)",
                         (key.account_mac(key_verifier), pseudonym, time.time()))
    except BaseException:
        conn.execute("ROLLBACK")
        conn.execute("PRAGMA secure_delete = OFF")
        raise
    conn.execute("COMMIT")
    remaining = mentions(conn, pattern)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA secure_delete = OFF")
    return {"changed": {k: v for k, v in changed.items() if v}, "remaining": remaining}


def erased_key_macs(conn: sqlite3.Connection) -> dict[bytes, str]:
    return {bytes(r[0]): str(r[1]) for r in conn.execute("SELECT key_mac, pseudonym FROM erased_accounts")}


def as_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
