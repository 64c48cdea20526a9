"""The audit log: one chained event per mutating action and per security decision.

The chain itself (encoding, digests, the verifier) is :mod:`fetchml_agent.store.chain`;
this module is its SQL. ``audit.event`` holds the canonical event document; ``ts``, ``action``,
``workspace``, ``workspace_id``, ``outcome`` and ``details`` are columns generated from it, and
``user`` is generated from the ``personal`` document, so neither can be edited apart from what
the chain covers. ``audit_head`` (one row) is the signed head, ``audit_checkpoints`` the signed
checkpoints that retention purges leave. Events are keyed by ``workspace_id``; ``workspace`` is the
name at the time, for display.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

from .chain import (
    INSERTED,
    ChainKey,
    Head,
    Problem,
    VerifyResult,
    canonical,
    check_end,
    personal_commit,
    split_details,
    verify_rows,
)

__all__ = [
    "adopt_legacy",
    "ChainWriter",
    "append_event",
    "chain_state",
    "checkpoints",
    "count_chained",
    "event_name_mentions",
    "last_workspace_id",
    "purge_plan",
    "purge_through",
    "query_events",
    "read_head",
    "rewrite_personal",
    "verify_chain",
]

_SALT_BYTES = 16


def read_head(conn: sqlite3.Connection) -> Head | None:
    row = conn.execute("SELECT last_id, digest, mac, key_id FROM audit_head WHERE k = 1").fetchone()
    return Head(int(row[0]), bytes(row[1]), bytes(row[2]), str(row[3])) if row else None


def _latest_checkpoint(conn: sqlite3.Connection, key: ChainKey) -> tuple[int, bytes] | None:
    """The newest checkpoint whose signature holds: ``(through_id, digest)``."""
    for through, digest, summary, mac in conn.execute(
            "SELECT through_id, digest, summary, mac FROM audit_checkpoints ORDER BY through_id DESC"):
        if key.checkpoint_mac(int(through), bytes(digest), summary) == bytes(mac):
            return int(through), bytes(digest)
    return None


def _write_head(conn: sqlite3.Connection, key: ChainKey, last_id: int, digest: bytes) -> None:
    conn.execute("INSERT INTO audit_head (k, last_id, digest, mac, key_id) VALUES (1, ?, ?, ?, ?) "
                 "ON CONFLICT (k) DO UPDATE SET last_id = excluded.last_id, digest = excluded.digest, "
                 "mac = excluded.mac, key_id = excluded.key_id",
                 (last_id, digest, key.head_mac(last_id, digest), key.key_id))


def _append(conn: sqlite3.Connection, key: ChainKey, names: re.Pattern[str] | None, user: str, action: str,
            workspace: str | None, workspace_id: str | None, outcome: str, details: dict[str, Any] | None,
            ts: float, extra: dict[str, Any] | None = None,
            head: tuple[int, bytes] | None = None) -> tuple[int, bytes]:
    if head is None:
        row = conn.execute("SELECT last_id, digest FROM audit_head WHERE k = 1").fetchone()
        head = (int(row[0]), bytes(row[1])) if row else (0, key.genesis)
    last_id, prev = head
    chained, personal_details = split_details(details or {}, names)
    personal = canonical({"user": user, "details": personal_details})
    salt = os.urandom(_SALT_BYTES)
    event_id = last_id + 1
    document: dict[str, Any] = {"id": event_id, "ts": ts, "action": action, "workspace": workspace or None,
                                "workspace_id": workspace_id or None, "outcome": outcome, "details": chained,
                                "personal": personal_commit(salt, personal)}
    if extra:
        document.update(extra)
    event = canonical(document)
    digest = key.link(prev, event)
    conn.execute("INSERT INTO audit (id, event, digest, personal, salt) VALUES (?, ?, ?, ?, ?)",
                 (event_id, event, digest, personal, salt))
    _write_head(conn, key, event_id, digest)
    return event_id, digest


class ChainWriter:
    """Appends events on the one connection that writes them, keeping the head it committed last.

    Only this writer moves the head, so it need not read it back for each event; after a failed
    append it reads it again. (A head changed behind its back is overwritten with the true one at
    the next event; ``--verify`` reports the events it no longer covers.)
    """

    def __init__(self, key: ChainKey, names: re.Pattern[str] | None) -> None:
        self.key = key
        self.names = names
        self._head: tuple[int, bytes] | None = None

    def append(self, conn: sqlite3.Connection, user: str, action: str, workspace: str | None,
               workspace_id: str | None, outcome: str, details: dict[str, Any] | None = None) -> int:
        """Chains one event after the head, in one transaction with the head's update; returns its id."""
        ts = time.time()
        nested = conn.in_transaction
        conn.execute("SAVEPOINT audit_append" if nested else "BEGIN IMMEDIATE")
        try:
            head = self._head if not nested else None
            event_id, digest = _append(conn, self.key, self.names, user, action, workspace, workspace_id, outcome,
                                       details, ts, head=head)
        except BaseException:
            conn.execute("ROLLBACK TO audit_append" if nested else "ROLLBACK")
            if nested:
                conn.execute("RELEASE audit_append")
            self._head = None
            raise
        if nested:
            conn.execute("RELEASE audit_append")
            self._head = None  # the outer transaction may still roll back
        else:
            conn.execute("COMMIT")
            self._head = (event_id, digest)
        return event_id


def append_event(conn: sqlite3.Connection, key: ChainKey, names: re.Pattern[str] | None, user: str, action: str,
                 workspace: str | None, workspace_id: str | None, outcome: str,
                 details: dict[str, Any] | None = None) -> int:
    """Chains one event (reading the head first); returns its id. The agent uses a :class:`ChainWriter`."""
    return ChainWriter(key, names).append(conn, user, action, workspace, workspace_id, outcome, details)


def last_workspace_id(conn: sqlite3.Connection, name: str | None) -> str | None:
    """The id of the workspace that last had ``name``, unless its last event was its deletion."""
    if not name:
        return None
    row = conn.execute("SELECT workspace_id, action FROM audit WHERE workspace = ? AND workspace_id IS NOT NULL "
                       "ORDER BY id DESC LIMIT 1", (name,)).fetchone()
    if row is None or row[1] == "workspace.delete":
        return None
    return str(row[0])


def _event_dict(row: sqlite3.Row | tuple[Any, ...], with_chain: bool) -> dict[str, Any]:
    (event_id, ts, user, action, workspace, workspace_id, outcome, details, personal, digest, sealed) = tuple(row)
    merged = json.loads(details or "{}")
    merged.update(json.loads(personal).get("details") or {})
    out = {"id": event_id, "ts": ts, "user": user, "action": action, "workspace": workspace,
           "workspace_id": workspace_id, "outcome": outcome, "details": merged}
    if with_chain:
        out["digest"] = bytes(digest).hex()
        out["pseudonymized"] = bool(sealed)
    return out


_SELECT = ("SELECT id, ts, user, action, workspace, workspace_id, outcome, details, personal, digest, "
           "seal IS NOT NULL FROM audit")


def query_events(conn: sqlite3.Connection, workspace: str | None = None, limit: int = 1000,
                 action_prefix: str | None = None, *, workspace_id: str | None = None, user: str | None = None,
                 ids: list[int] | None = None, with_chain: bool = False, oldest_first: bool = False) -> list[dict[str, Any]]:
    """Events, newest first: of a workspace (by id, or by name for deleted ones), a user, or ids."""
    sql = _SELECT + " WHERE 1=1"
    params: list[Any] = []
    if workspace_id is not None:
        sql += " AND workspace_id = ?"
        params.append(workspace_id)
    elif workspace is not None:
        sql += " AND workspace = ?"
        params.append(workspace)
    if user is not None:
        sql += " AND user = ?"
        params.append(user)
    if ids is not None:
        sql += f" AND id IN ({','.join('?' * len(ids))})"
        params.extend(ids)
    if action_prefix:
        sql += " AND action LIKE ?"
        params.append(action_prefix.replace("%", r"\%").replace("_", r"\_") + "%")
        sql = sql.replace("LIKE ?", r"LIKE ? ESCAPE '\'")
    sql += f" ORDER BY id {'ASC' if oldest_first else 'DESC'} LIMIT ?"
    params.append(limit)
    return [_event_dict(r, with_chain) for r in conn.execute(sql, params)]


def event_name_mentions(conn: sqlite3.Connection, pattern: re.Pattern[str], limit: int = 100000) -> list[dict[str, Any]]:
    """Events whose personal document mentions a name (a GDPR export: events about the person)."""
    conn.create_function("fml_mentions", 1, lambda text: 1 if text and pattern.search(text) else 0,
                         deterministic=True)
    rows = conn.execute(_SELECT + " WHERE fml_mentions(personal) ORDER BY id LIMIT ?", (limit,))
    return [_event_dict(r, True) for r in rows]


def count_chained(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM audit").fetchone()[0])


def _rows(conn: sqlite3.Connection, after: int) -> Iterator[tuple[Any, ...]]:
    """The verifier's rows, as tuples in :class:`~fetchml_agent.store.chain.Row` order."""
    return conn.execute("SELECT id, seq, digest, event, salt, personal, commitment, seal, workspace_id FROM audit "
                        "WHERE id > ? ORDER BY id", (after,))


#: Chains shorter than this are verified in one pass; longer ones in parts, one process each.
PARALLEL_MIN_EVENTS = 200_000


def _verify_part(db: str, raw_key: bytes, lo: int, hi: int, prev: bytes | None,
                 workspace_id: str | None) -> tuple[bool, int, bytes | None]:
    """One part of a parallel verification (in a worker process): ``(ok, workspace events, last digest)``."""
    from . import open_connection

    key = ChainKey(raw_key)
    conn = open_connection(db)
    try:
        if prev is None:
            row = conn.execute("SELECT digest FROM audit WHERE id = ?", (lo - 1,)).fetchone()
            if row is None:
                return False, 0, None
            prev = bytes(row[0])
        rows = conn.execute("SELECT id, seq, digest, event, salt, personal, commitment, seal, workspace_id FROM audit "
                            "WHERE id BETWEEN ? AND ? ORDER BY id", (lo, hi))
        result = verify_rows(key, rows, start_id=lo, start_digest=prev, head=None, workspace_id=workspace_id,
                             check_head=False)
        last = conn.execute("SELECT digest FROM audit WHERE id = ?", (hi,)).fetchone()
        ok = result.first_bad is None and result.checked == hi - lo + 1 and last is not None
        return ok, result.workspace_events, bytes(last[0]) if last else None
    finally:
        conn.close()


def _verify_parallel(db: str, raw_key: bytes, key: ChainKey, start_id: int, start_digest: bytes | None,
                     last_id: int, head: Head | None, workspace_id: str | None, workers: int) -> VerifyResult | None:
    """The whole chain in ``workers`` parts at once; ``None`` when a part fails (the caller then walks it
    in one pass, which names and classifies the first bad event)."""
    import concurrent.futures
    import multiprocessing

    total = last_id - start_id + 1
    size = -(-total // workers)
    parts = [(lo, min(lo + size - 1, last_id)) for lo in range(start_id, last_id + 1, size)]
    ctx = multiprocessing.get_context("spawn")  # the agent has threads: never fork it
    with concurrent.futures.ProcessPoolExecutor(max_workers=len(parts), mp_context=ctx) as pool:
        futures = [pool.submit(_verify_part, db, raw_key, lo, hi, (start_digest or key.genesis) if lo == start_id
                               else None, workspace_id) for lo, hi in parts]
        answers = [f.result() for f in futures]
    if not all(ok for ok, _, _ in answers):
        return None
    result = VerifyResult(True, total, None, start_id, last_id, sum(n for _, n, _ in answers))
    result.notes.append(f"verified in {len(parts)} parts in parallel")
    last_digest = answers[-1][2]
    assert last_digest is not None
    check_end(key, result, head, start_id, last_digest)
    return result


def verify_chain(conn: sqlite3.Connection, key: ChainKey, workspace_id: str | None = None, *,
                 db: str | None = None, raw_key: bytes | None = None, workers: int = 1) -> VerifyResult:
    """Checks every event after the latest checkpoint, the checkpoint and the head (see chain.py).

    With ``db`` and ``raw_key`` and ``workers`` > 1, a long chain is checked in parts by worker
    processes first; any failure is then walked again in one pass to name it.
    """
    checkpoint = _latest_checkpoint(conn, key)
    start_id, start_digest = (checkpoint[0] + 1, checkpoint[1]) if checkpoint else (1, None)
    head = read_head(conn)
    result: VerifyResult | None = None
    if workers > 1 and db is not None and raw_key is not None:
        row = conn.execute("SELECT min(id), max(id), count(*) FROM audit WHERE id >= ?", (start_id,)).fetchone()
        if row[2] >= PARALLEL_MIN_EVENTS and row[0] == start_id and row[1] - start_id + 1 == row[2]:
            result = _verify_parallel(db, raw_key, key, start_id, start_digest, int(row[1]), head, workspace_id,
                                      workers)
    if result is None:
        result = verify_rows(key, _rows(conn, start_id - 1), start_id=start_id, start_digest=start_digest,
                             head=head, workspace_id=workspace_id)
    if checkpoint is None and conn.execute("SELECT 1 FROM audit_checkpoints LIMIT 1").fetchone():
        result.notes.append("a retention checkpoint's signature does not hold; the chain was checked from event 1")
    if checkpoint is not None:
        result.notes.append(f"events up to {checkpoint[0]} were purged by retention (signed checkpoint)")
        stray = conn.execute("SELECT min(id) FROM audit WHERE id <= ?", (checkpoint[0],)).fetchone()[0]
        if stray is not None and result.ok:
            result.ok = False
            result.first_bad = Problem(INSERTED, int(stray), f"event {stray} sits below the retention checkpoint "
                                                             f"({checkpoint[0]}): it was added outside the agent")
    legacy = conn.execute("SELECT count(*) FROM audit WHERE json_extract(event, '$.legacy') = 1").fetchone()[0]
    if legacy:
        result.notes.append(f"{legacy} events were written before the chain existed; they were chained when the "
                            "agent was upgraded, so nothing proves them before that")
    return result


def chain_state(conn: sqlite3.Connection) -> dict[str, Any]:
    head = read_head(conn)
    row = conn.execute("SELECT count(*), min(id), min(ts) FROM audit").fetchone()
    cps = conn.execute("SELECT count(*), max(through_id) FROM audit_checkpoints").fetchone()
    return {"events": row[0], "first_id": row[1], "oldest_ts": row[2], "last_id": head.last_id if head else 0,
            "key_id": head.key_id if head else None, "checkpoints": cps[0], "purged_through": cps[1]}


def checkpoints(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return [{"through_id": r[0], "digest": bytes(r[1]).hex(), "created_at": r[2], "removed": r[3],
             "summary": json.loads(r[4])}
            for r in conn.execute("SELECT through_id, digest, created_at, removed, summary FROM audit_checkpoints "
                                  "ORDER BY through_id")]


# -- retention -------------------------------------------------------------------------------------


def purge_plan(conn: sqlite3.Connection, cutoff_ts: float) -> dict[str, Any]:
    """What a purge at ``cutoff_ts`` removes: the oldest events up to the first one that is newer.

    The chain is cut at one id, so an event older than the cutoff that follows a newer one (a
    clock step) is kept with it.
    """
    first_kept = conn.execute("SELECT min(id) FROM audit WHERE ts >= ?", (cutoff_ts,)).fetchone()[0]
    if first_kept is None:
        last = conn.execute("SELECT max(id) FROM audit").fetchone()[0]
        through = int(last) if last is not None else None
    else:
        through = int(first_kept) - 1
    if through is None:
        return {"through_id": None, "events": 0, "by_action": {}, "oldest_ts": None, "newest_ts": None}
    rows = conn.execute("SELECT action, count(*), min(ts), max(ts) FROM audit WHERE id <= ? GROUP BY action",
                        (through,)).fetchall()
    count = sum(r[1] for r in rows)
    return {"through_id": through if count else None, "events": count, "by_action": {r[0]: r[1] for r in rows},
            "oldest_ts": min((r[2] for r in rows), default=None), "newest_ts": max((r[3] for r in rows), default=None)}


def purge_through(conn: sqlite3.Connection, key: ChainKey, through_id: int, cutoff_ts: float) -> dict[str, Any]:
    """Deletes events up to ``through_id`` and leaves a signed checkpoint at its digest (one transaction)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute("SELECT digest FROM audit WHERE id = ?", (through_id,)).fetchone()
        if row is None:
            raise LookupError(f"event {through_id} is not in the audit log")
        plan = conn.execute("SELECT action, count(*) FROM audit WHERE id <= ? GROUP BY action", (through_id,)).fetchall()
        by_action = {r[0]: r[1] for r in plan}
        removed = sum(by_action.values())
        summary = canonical({"through_id": through_id, "cutoff_ts": cutoff_ts, "removed": removed,
                             "by_action": by_action})
        digest = bytes(row[0])
        now = time.time()
        conn.execute("INSERT INTO audit_checkpoints (through_id, digest, created_at, removed, summary, mac) "
                     "VALUES (?, ?, ?, ?, ?, ?)",
                     (through_id, digest, now, removed, summary, key.checkpoint_mac(through_id, digest, summary)))
        conn.execute("DELETE FROM audit WHERE id <= ?", (through_id,))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return {"through_id": through_id, "removed": removed, "by_action": by_action, "checkpoint_at": now}


# -- GDPR --------------------------------------------------------------------------------------------


def rewrite_personal(conn: sqlite3.Connection, key: ChainKey, pattern: re.Pattern[str], pseudonym: str) -> int:
    """Replaces a name with ``pseudonym`` in every personal document that mentions it, and seals each.

    The old salt is dropped, so the original commitment can no longer be tested against a guess.
    Call inside a transaction. Returns the number of events rewritten.
    """
    changed = 0
    rows = conn.execute("SELECT id, personal, commitment FROM audit").fetchall()
    for event_id, personal, commitment in rows:
        if not pattern.search(personal):
            continue
        text = canonical(json.loads(pattern.sub(pseudonym, personal)))
        conn.execute("UPDATE audit SET personal = ?, salt = NULL, seal = ? WHERE id = ?",
                     (text, key.seal(int(event_id), commitment, text), event_id))
        changed += 1
    return changed


# -- the audit log before the chain ------------------------------------------------------------------


def adopt_legacy(conn: sqlite3.Connection, key: ChainKey, names: re.Pattern[str] | None) -> int:
    """Chains the events of the pre-chain table (``audit_legacy``) in their order, then drops it.

    Each keeps its time and is marked ``legacy``: nothing proves them before the upgrade.
    """
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit_legacy'").fetchone()
    if not exists:
        return 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        count = 0
        known = {str(r[0]): (str(r[1]), float(r[2])) for r in conn.execute("SELECT name, id, created_at FROM workspaces")}
        for _, ts, user, action, workspace, outcome, details in conn.execute(
                "SELECT id, ts, user, action, workspace, outcome, details FROM audit_legacy ORDER BY id").fetchall():
            ws_id = None
            if workspace in known and ts >= known[workspace][1] - 1:
                ws_id = known[workspace][0]
            try:
                parsed = json.loads(details or "{}")
            except ValueError:
                parsed = {"raw": details}
            _append(conn, key, names, user, action, workspace, ws_id, outcome,
                    parsed if isinstance(parsed, dict) else {"value": parsed}, float(ts), {"legacy": True})
            count += 1
        conn.execute("DROP TABLE audit_legacy")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return count
