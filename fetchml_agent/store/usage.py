"""Usage history rows: samples in three tiers, their rollups, and workspace events.

A sample is written once, as taken (tier ``0``). :func:`rollup` averages complete 5-minute buckets
of tier 0 into tier ``300`` and complete hours of tier 300 into tier ``3600`` (weighted by how
many samples each holds; peaks keep their maximum), then drops tier-0 rows older than
``keep_raw`` and tier-300 rows older than ``keep_5m`` that are already rolled up. Hourly rows
stay until retention (``retention.metrics``) purges them. :func:`history` reads a window from the
finest tier that still covers each part of it.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from . import transaction

__all__ = [
    "AVERAGED",
    "FIELDS",
    "PEAKS",
    "TIERS",
    "Sample",
    "count_before",
    "events_of",
    "forget_workspace_usage",
    "history",
    "insert_events",
    "insert_samples",
    "last_event",
    "purge_before",
    "rollup",
]

#: Bucket widths in seconds: as sampled, 5 minutes, 1 hour.
TIERS = (0, 300, 3600)
#: Averaged over a bucket (weighted by sample count).
AVERAGED = ("cpu_cores", "cpu_limit_cores", "memory_bytes", "gpu_utilization", "gpu_memory_bytes",
            "disk_bytes", "processes", "kernels", "busy_kernels")
#: Kept at their maximum over a bucket.
PEAKS = ("memory_peak_bytes", "memory_limit_bytes")
FIELDS = AVERAGED + PEAKS


@dataclass
class Sample:
    """One workspace's use at ``ts``; ``None`` where the runtime did not say."""

    workspace_id: str
    ts: float
    cpu_cores: float | None = None
    cpu_limit_cores: float | None = None
    memory_bytes: float | None = None
    memory_peak_bytes: float | None = None
    memory_limit_bytes: float | None = None
    gpu_utilization: float | None = None
    gpu_memory_bytes: float | None = None
    disk_bytes: float | None = None
    processes: float | None = None
    kernels: float | None = None
    busy_kernels: float | None = None

    def values(self) -> dict[str, float | None]:
        return {f: getattr(self, f) for f in FIELDS}


_COLS = ", ".join(FIELDS)


def insert_samples(conn: sqlite3.Connection, samples: Iterable[Sample]) -> int:
    rows = [(s.workspace_id, s.ts, *(getattr(s, f) for f in FIELDS)) for s in samples]
    if rows:
        with transaction(conn):
            conn.executemany(
                f"INSERT OR REPLACE INTO usage_samples (workspace_id, tier, ts, n, {_COLS}) "
                f"VALUES (?, 0, ?, 1, {', '.join('?' * len(FIELDS))})", rows)
    return len(rows)


def _watermark(conn: sqlite3.Connection, tier: int) -> float | None:
    row = conn.execute("SELECT done_until FROM usage_rollups WHERE tier = ?", (tier,)).fetchone()
    return float(row[0]) if row else None


def _rollup_one(conn: sqlite3.Connection, source: int, width: int, now: float) -> None:
    done = _watermark(conn, width)
    if done is None:
        row = conn.execute("SELECT min(ts) FROM usage_samples WHERE tier = ?", (source,)).fetchone()
        if row[0] is None:
            return
        done = math.floor(row[0] / width) * width
    upto = math.floor(now / width) * width
    if upto <= done:
        return
    averages = ", ".join(f"sum({f} * n) / sum(CASE WHEN {f} IS NULL THEN 0 ELSE n END)" for f in AVERAGED)
    peaks = ", ".join(f"max({f})" for f in PEAKS)
    conn.execute(
        f"INSERT OR REPLACE INTO usage_samples (workspace_id, tier, ts, n, {_COLS}) "
        f"SELECT workspace_id, ?, CAST(ts / ? AS INTEGER) * ? AS bucket, sum(n), {averages}, {peaks} "
        "FROM usage_samples WHERE tier = ? AND ts >= ? AND ts < ? GROUP BY workspace_id, bucket",
        (width, width, width, source, done, upto))
    conn.execute("INSERT OR REPLACE INTO usage_rollups (tier, done_until) VALUES (?, ?)", (width, upto))


def rollup(conn: sqlite3.Connection, now: float, keep_raw: float, keep_5m: float) -> dict[str, int]:
    """Average complete buckets into the coarser tiers, then drop what the finer tiers no longer
    keep (only what is already rolled up). Returns the rows dropped per tier."""
    with transaction(conn):
        _rollup_one(conn, 0, 300, now)
        _rollup_one(conn, 300, 3600, now)
        w300 = _watermark(conn, 300) or 0.0
        w3600 = _watermark(conn, 3600) or 0.0
        raw = conn.execute("DELETE FROM usage_samples WHERE tier = 0 AND ts < ?",
                           (min(now - keep_raw, w300),)).rowcount
        five = conn.execute("DELETE FROM usage_samples WHERE tier = 300 AND ts < ?",
                            (min(now - keep_5m, w3600),)).rowcount
    return {"raw": raw, "5m": five}


def _rows(conn: sqlite3.Connection, workspace_id: str, tier: int, lo: float, hi: float) -> list[dict[str, Any]]:
    if hi <= lo:
        return []
    cur = conn.execute(
        f"SELECT ts, n, {_COLS} FROM usage_samples WHERE workspace_id = ? AND tier = ? AND ts >= ? AND ts < ? "
        "ORDER BY ts", (workspace_id, tier, lo, hi))
    return [{"t": r[0], "n": r[1], **dict(zip(FIELDS, r[2:], strict=True))} for r in cur]


def history(conn: sqlite3.Connection, workspace_id: str, since: float, until: float, *, now: float,
            keep_raw: float, keep_5m: float, max_points: int = 500) -> tuple[list[dict[str, Any]], int]:
    """Points of ``[since, until)`` (each ``{"t", "n", field: value}``), at most ``max_points``,
    from the finest tier that still covers each part; returns them and the step in seconds (0: as
    sampled)."""
    w300 = _watermark(conn, 300)
    w3600 = _watermark(conn, 3600)
    rows: list[dict[str, Any]] = []
    if since >= now - keep_raw or w300 is None:
        rows = _rows(conn, workspace_id, 0, since, until)
        width = 0
    elif since >= now - keep_5m or w3600 is None:
        rows = _rows(conn, workspace_id, 300, since, min(until, w300)) + _rows(conn, workspace_id, 0, max(since, w300), until)
        width = 300
    else:
        rows = (_rows(conn, workspace_id, 3600, since, min(until, w3600))
                + _rows(conn, workspace_id, 300, max(since, w3600), min(until, w300))
                + _rows(conn, workspace_id, 0, max(since, w300), until))
        width = 3600
    if len(rows) <= max_points:
        return rows, width
    step = max(width, 1)
    while (until - since) / step > max_points:
        step *= 2
    step = int(step)
    return _rebucket(rows, step), step


def _rebucket(rows: list[dict[str, Any]], step: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    acc: dict[str, Any] | None = None
    for r in rows:
        bucket = math.floor(r["t"] / step) * step
        if acc is None or acc["t"] != bucket:
            if acc is not None:
                out.append(_finish(acc))
            acc = {"t": bucket, "n": 0, **{f: [0.0, 0] for f in AVERAGED}, **{f: None for f in PEAKS}}
        n = r["n"] or 1
        acc["n"] += n
        for f in AVERAGED:
            if r[f] is not None:
                acc[f][0] += r[f] * n
                acc[f][1] += n
        for f in PEAKS:
            if r[f] is not None:
                acc[f] = r[f] if acc[f] is None else max(acc[f], r[f])
    if acc is not None:
        out.append(_finish(acc))
    return out


def _finish(acc: dict[str, Any]) -> dict[str, Any]:
    for f in AVERAGED:
        total, n = acc[f]
        acc[f] = total / n if n else None
    return acc


def insert_events(conn: sqlite3.Connection, events: Iterable[tuple[str, str, float, str, dict[str, Any]]]) -> None:
    """``(workspace_id, workspace, ts, kind, details)`` rows."""
    rows = [(wid, name, ts, kind, json.dumps(details, sort_keys=True, default=str))
            for wid, name, ts, kind, details in events]
    if rows:
        with transaction(conn):
            conn.executemany("INSERT INTO usage_events (workspace_id, workspace, ts, kind, details) "
                             "VALUES (?, ?, ?, ?, ?)", rows)


def events_of(conn: sqlite3.Connection, workspace_id: str, since: float, until: float,
              limit: int = 1000) -> list[dict[str, Any]]:
    cur = conn.execute("SELECT ts, kind, details FROM usage_events WHERE workspace_id = ? AND ts >= ? AND ts < ? "
                       "ORDER BY ts DESC LIMIT ?", (workspace_id, since, until, limit))
    return [{"ts": r[0], "kind": r[1], "details": json.loads(r[2])} for r in reversed(cur.fetchall())]


def last_event(conn: sqlite3.Connection, workspace_id: str, kind: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT ts, kind, details FROM usage_events WHERE workspace_id = ? AND kind = ? "
                       "ORDER BY id DESC LIMIT 1", (workspace_id, kind)).fetchone()
    return {"ts": row[0], "kind": row[1], "details": json.loads(row[2])} if row else None


def forget_workspace_usage(conn: sqlite3.Connection, workspace_id: str) -> None:
    with transaction(conn):
        conn.execute("DELETE FROM usage_samples WHERE workspace_id = ?", (workspace_id,))
        conn.execute("DELETE FROM usage_events WHERE workspace_id = ?", (workspace_id,))


def count_before(conn: sqlite3.Connection, cutoff: float) -> dict[str, int]:
    """What :func:`purge_before` would remove."""
    samples = conn.execute("SELECT count(*) FROM usage_samples WHERE ts < ?", (cutoff,)).fetchone()[0]
    events = conn.execute("SELECT count(*) FROM usage_events WHERE ts < ?", (cutoff,)).fetchone()[0]
    return {"usage_samples": samples, "usage_events": events}


def purge_before(conn: sqlite3.Connection, cutoff: float) -> dict[str, int]:
    """Remove every sample (any tier) and event older than ``cutoff``."""
    with transaction(conn):
        samples = conn.execute("DELETE FROM usage_samples WHERE ts < ?", (cutoff,)).rowcount
        events = conn.execute("DELETE FROM usage_events WHERE ts < ?", (cutoff,)).rowcount
    return {"usage_samples": samples, "usage_events": events}
