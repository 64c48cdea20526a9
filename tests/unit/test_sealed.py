"""Workspace secrets are sealed in the database with a key kept outside it."""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from pathlib import Path

import pytest

from fetchml_agent.store import Store, open_connection
from fetchml_agent.store.sealed import PREFIX, Sealer, SealError, key_path, load_or_create_key
from fetchml_agent.store.workspaces import SEALED, Workspace, insert_workspace, load_workspaces


def _ws(wid: str = "ws-1") -> Workspace:
    return Workspace(id=wid, name="one", owner="bob", path="/tmp/one", runtime="local", token="jupyter-token-123",
                     index_key="index-key-456", password_hash="argon2:$argon2id$v=19$abc", created_at=time.time(),
                     updated_at=time.time())


def test_seal_and_open_bind_the_value_to_its_place() -> None:
    s = Sealer(os.urandom(32))
    sealed = s.seal("secret", "workspaces.token.ws-1")
    assert sealed is not None and sealed.startswith(PREFIX) and "secret" not in sealed
    assert sealed != s.seal("secret", "workspaces.token.ws-1")  # a fresh nonce each time
    assert s.open(sealed, "workspaces.token.ws-1") == "secret"
    with pytest.raises(SealError):
        s.open(sealed, "workspaces.token.ws-2")  # copied into another row
    with pytest.raises(SealError):
        Sealer(os.urandom(32)).open(sealed, "workspaces.token.ws-1")  # another key
    assert s.open("written-in-clear", "x") == "written-in-clear"  # an older agent's row
    assert s.seal(None, "x") is None and s.open(None, "x") is None


def test_the_key_file_is_private_and_checked(tmp_path: Path) -> None:
    path = key_path(tmp_path)
    key = load_or_create_key(path)
    assert len(key) == 32 and load_or_create_key(path) == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    os.chmod(path, 0o644)
    with pytest.raises(SealError, match="readable by others"):
        load_or_create_key(path)
    os.chmod(path, 0o600)
    path.write_text("nonsense\n")
    with pytest.raises(SealError, match="not a secrets key"):
        load_or_create_key(path)


def test_rows_hold_no_secret_in_clear_and_old_rows_are_sealed_on_load(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db")
    store.open()
    try:
        store.run_sync(insert_workspace, _ws(), store.sealer)
        # An older agent's row, secrets in clear.
        legacy = _ws("ws-2")
        legacy.name = "two"
        row = legacy.to_row(Sealer(bytes(32)))
        row.update(token="legacy-token", index_key="legacy-key", password_hash=None)
        cols = ", ".join(row)
        store.conn.execute(f"INSERT INTO workspaces ({cols}) VALUES ({', '.join(':' + c for c in row)})", row)
        loaded = {w.id: w for w in store.run_sync(load_workspaces, store.sealer)}
        assert (loaded["ws-1"].token, loaded["ws-1"].index_key) == ("jupyter-token-123", "index-key-456")
        assert loaded["ws-2"].token == "legacy-token"
        raw = store.conn.execute(f"SELECT {', '.join(SEALED)} FROM workspaces").fetchall()
        assert all(v is None or v.startswith(PREFIX) for r in raw for v in r)
    finally:
        store.close()
    blob = b"".join(p.read_bytes() for p in tmp_path.glob("agent.db*"))
    for secret in (b"jupyter-token-123", b"index-key-456", b"argon2id", b"legacy-token"):
        assert secret not in blob


def test_a_database_without_its_key_opens_no_secret(tmp_path: Path) -> None:
    store = Store(tmp_path / "agent.db")
    store.open()
    store.run_sync(insert_workspace, _ws(), store.sealer)
    store.close()
    key_path(tmp_path).unlink()
    conn = open_connection(tmp_path / "agent.db")
    conn.row_factory = sqlite3.Row
    with pytest.raises(SealError):
        load_workspaces(conn, Sealer(load_or_create_key(key_path(tmp_path))))
    conn.close()
