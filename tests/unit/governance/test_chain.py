"""The audit chain on a real SQLite database: each kind of tampering is found and named."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from fetchml_agent.governance.keys import load_key, load_or_create_key
from fetchml_agent.store import open_connection
from fetchml_agent.store.audit import (
    append_event,
    purge_plan,
    purge_through,
    query_events,
    rewrite_personal,
    verify_chain,
)
from fetchml_agent.store.chain import ChainKey, names_pattern

NAMES = names_pattern(["bob", "carol", "admin"])


@pytest.fixture
def db(tmp_path: Path) -> tuple[sqlite3.Connection, ChainKey, Path]:
    conn = open_connection(tmp_path / "agent.db")
    raw, created = load_or_create_key(tmp_path / "keys" / "audit.key")
    assert created and (tmp_path / "keys" / "audit.key").stat().st_mode & 0o777 == 0o600
    key = ChainKey(raw)
    for i in range(1, 21):
        append_event(conn, key, NAMES, "bob" if i % 2 else "carol", "package.decision", "ws-a", "id-a",
                     "allow" if i % 3 else "deny", {"spec": f"pkg{i}", "reason": f"bob asked {i}", "rule": "default_allow"})
    return conn, key, tmp_path / "agent.db"


def _raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)  # what an attacker with the sqlite3 shell has


def test_intact_chain_verifies_and_keeps_people_apart(db) -> None:
    conn, key, _ = db
    result = verify_chain(conn, key)
    assert result.ok and result.checked == 20 and result.first_bad is None
    event = json.loads(conn.execute("SELECT event FROM audit WHERE id = 1").fetchone()[0])
    assert "bob" not in json.dumps(event) and event["details"] == {"rule": "default_allow", "spec": "pkg1"}
    shown = query_events(conn, workspace_id="id-a", limit=1)[0]
    assert shown["user"] == "carol" and shown["details"]["reason"] == "bob asked 20"


@pytest.mark.parametrize("sql, kind, first", [
    ("UPDATE audit SET event = replace(event, '\"outcome\":\"deny\"', '\"outcome\":\"allow\"') WHERE id = 6", "edited", 6),
    ("UPDATE audit SET personal = json_set(personal, '$.user', 'admin') WHERE id = 7", "edited", 7),
    ("DELETE FROM audit WHERE id = 9", "deleted", 9),
    ("DELETE FROM audit WHERE id IN (9, 10, 11)", "deleted", 9),
    ("UPDATE audit SET id = -10 WHERE id = 10; UPDATE audit SET id = 10 WHERE id = 11;"
     " UPDATE audit SET id = 11 WHERE id = -10", "reordered", 10),
    ("DELETE FROM audit WHERE id > 17", "truncated", 18),
    ("INSERT INTO audit (id, event, digest, personal, salt) SELECT 21, replace(event, '\"id\":20', '\"id\":21'),"
     " digest, personal, salt FROM audit WHERE id = 20", "inserted", 21),
    ("UPDATE audit SET id = -id WHERE id >= 5; UPDATE audit SET id = 1 - id WHERE id < 0;"
     " INSERT INTO audit (id, event, digest, personal, salt) SELECT 5, event, digest, personal, salt FROM audit WHERE id = 4",
     "inserted", 5),
    ("DELETE FROM audit_head", "truncated", 20),
])
def test_tampering_is_found(db, sql: str, kind: str, first: int) -> None:
    conn, key, path = db
    _raw(path).executescript(sql)
    result = verify_chain(conn, key)
    assert not result.ok, result
    assert result.first_bad is not None
    assert (result.first_bad.kind, result.first_bad.id) == (kind, first), result.first_bad


def test_purge_leaves_a_checkpoint_and_the_rest_verifies(db) -> None:
    conn, key, path = db
    cutoff = conn.execute("SELECT ts FROM audit WHERE id = 8").fetchone()[0]
    plan = purge_plan(conn, cutoff)
    assert plan["through_id"] == 7 and plan["events"] == 7
    purge_through(conn, key, 7, cutoff)
    result = verify_chain(conn, key)
    assert result.ok and result.checked == 13 and result.first_id == 8
    append_event(conn, key, NAMES, "admin", "retention.purge", None, None, "ok", {"removed": 7})
    assert verify_chain(conn, key).ok
    _raw(path).execute("DELETE FROM audit WHERE id = 8")  # removing what the checkpoint did not cover
    assert verify_chain(conn, key).first_bad.kind == "deleted"


def test_pseudonymizing_keeps_the_chain(db) -> None:
    conn, key, path = db
    conn.execute("BEGIN")
    changed = rewrite_personal(conn, key, names_pattern(["bob"]), "erased-1a2b3c")
    conn.execute("COMMIT")
    assert changed == 20  # every reason mentions bob
    assert verify_chain(conn, key).ok
    assert b"bob" not in b"".join(r[0].encode() for r in conn.execute("SELECT personal || event FROM audit"))
    _raw(path).execute("UPDATE audit SET personal = replace(personal, 'erased-1a2b3c', 'bob') WHERE id = 3")
    bad = verify_chain(conn, key).first_bad
    assert bad is not None and (bad.kind, bad.id) == ("edited", 3)


def test_another_key_is_told_apart(db, tmp_path: Path) -> None:
    conn, _, _ = db
    other = ChainKey(b"\x01" * 32)
    result = verify_chain(conn, other)
    assert not result.ok and result.first_bad.kind in ("edited", "key_mismatch")


def test_a_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "audit.key"
    load_or_create_key(path)
    path.chmod(0o644)
    with pytest.raises(Exception, match="readable by others"):
        load_key(path)


def test_a_long_chain_is_checked_in_parts_and_a_failure_walked_again(db, monkeypatch: pytest.MonkeyPatch) -> None:
    import fetchml_agent.store.audit as store_audit

    conn, key, path = db
    monkeypatch.setattr(store_audit, "PARALLEL_MIN_EVENTS", 10)
    result = verify_chain(conn, key, "id-a", db=str(path), raw_key=key.raw, workers=3)
    assert result.ok and result.checked == 20 and result.workspace_events == 20
    assert "verified in 3 parts in parallel" in result.notes
    _raw(path).execute("UPDATE audit SET event = replace(event, 'pkg14', 'pkg41') WHERE id = 14")
    bad = verify_chain(conn, key, db=str(path), raw_key=key.raw, workers=3)
    assert bad.first_bad is not None and (bad.first_bad.kind, bad.first_bad.id) == ("edited", 14)
    assert not any("parallel" in n for n in bad.notes)
