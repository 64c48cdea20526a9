"""SQLite (WAL), the agent's only state. Queries are plain functions of a connection.

All access goes through :meth:`Store.run`, which executes a function on the store's own thread,
so the event loop never blocks and writes are serialized on one connection. :attr:`Store.sealer`
seals the secrets that rows hold (:mod:`.sealed`), with the key file beside the database.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .migrations import MIGRATIONS
from .sealed import Sealer, key_path, load_or_create_key

__all__ = ["DB_FILE_MODE", "Store", "open_connection", "transaction"]

T = TypeVar("T")


def open_connection(path: Path | str) -> sqlite3.Connection:
    """Open (and migrate) the database; usable from one thread at a time."""
    conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    _migrate(conn)
    return conn


DB_FILE_MODE = 0o600


def _private_db_files(path: Path) -> None:
    """Create the database file 0600 (SQLite gives its -wal/-shm files the same mode) and tighten
    files an older agent left readable: they hold every workspace's records and secrets."""
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, DB_FILE_MODE))
    for suffix in ("", "-wal", "-shm", "-journal"):
        f = Path(f"{path}{suffix}")
        try:
            if f.stat().st_mode & 0o077:
                os.chmod(f, DB_FILE_MODE)
        except FileNotFoundError:
            pass


def _migrate(conn: sqlite3.Connection) -> None:
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    for step, sql in enumerate(MIGRATIONS[version:], start=version + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {step}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _statements(sql: str) -> list[str]:
    out, buf = [], ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out


class Store:
    """The database file plus the one thread that talks to it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._conn: sqlite3.Connection | None = None
        self._sealer: Sealer | None = None

    def open(self) -> None:
        """Open (and migrate) the database; load (or create) the secrets key beside it.

        Raises :class:`~.sealed.SealError` when that key file is unusable."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._sealer = Sealer(load_or_create_key(key_path(self.path.parent)))
        _private_db_files(self.path)
        self._conn = self._pool.submit(open_connection, self.path).result()

    def close(self) -> None:
        if self._conn is not None:
            self._pool.submit(self._conn.close).result()
            self._conn = None
        self._pool.shutdown(wait=True)

    @property
    def sealer(self) -> Sealer:
        """Seals and opens the secrets of rows (:mod:`.sealed`); set by :meth:`open`."""
        if self._sealer is None:
            raise RuntimeError("store is not open")
        return self._sealer

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("store is not open")
        return self._conn

    async def run(self, fn: Callable[..., T], /, *args: Any) -> T:
        """Run ``fn(conn, *args)`` on the store's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn, self.conn, *args)

    def run_sync(self, fn: Callable[..., T], /, *args: Any) -> T:
        return self._pool.submit(fn, self.conn, *args).result()


def transaction(conn: sqlite3.Connection) -> Any:
    """``with transaction(conn): ...`` — BEGIN IMMEDIATE / COMMIT, ROLLBACK on error."""
    return _Tx(conn)


class _Tx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
