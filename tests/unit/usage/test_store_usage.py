"""The usage store: samples in three tiers, rollups, windows read from the finest tier, purges."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from fetchml_agent.store import open_connection
from fetchml_agent.store.usage import (
    Sample,
    count_before,
    events_of,
    history,
    insert_events,
    insert_samples,
    purge_before,
    rollup,
)

DAY = 86400.0
T0 = 1_700_000_000.0 - (1_700_000_000.0 % 3600)  # on an hour


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    return open_connection(tmp_path / "agent.db")


def _fill(conn: sqlite3.Connection, start: float, end: float, every: float = 60.0) -> int:
    samples = []
    t = start
    while t < end:
        minute = int((t - T0) // 60)
        samples.append(Sample("ws-a", t, cpu_cores=1.0 if minute % 2 else 3.0, memory_bytes=100.0 + minute % 5,
                              memory_peak_bytes=100.0 + minute % 5, memory_limit_bytes=1000.0,
                              gpu_utilization=None))
        t += every
    return insert_samples(conn, samples)


def test_rollup_averages_complete_buckets_weighted_and_keeps_peaks(conn: sqlite3.Connection) -> None:
    _fill(conn, T0, T0 + 2 * 3600)
    rollup(conn, T0 + 2 * 3600 + 10, keep_raw=DAY, keep_5m=14 * DAY)
    five = conn.execute("SELECT n, cpu_cores, memory_peak_bytes, gpu_utilization FROM usage_samples "
                        "WHERE tier = 300 ORDER BY ts").fetchall()
    assert len(five) == 24 and all(r[0] == 5 for r in five)
    assert five[0][1] == pytest.approx((3 + 1 + 3 + 1 + 3) / 5)  # minutes 0..4
    assert five[0][2] == 104.0  # the peak, not the mean
    assert five[0][3] is None  # no GPU samples: no value, not zero
    hours = conn.execute("SELECT n, cpu_cores FROM usage_samples WHERE tier = 3600").fetchall()
    assert [h[0] for h in hours] == [60, 60] and hours[0][1] == pytest.approx(2.0)
    # A second rollup at the same time adds nothing.
    rollup(conn, T0 + 2 * 3600 + 10, keep_raw=DAY, keep_5m=14 * DAY)
    assert conn.execute("SELECT count(*) FROM usage_samples WHERE tier = 300").fetchone()[0] == 24


def test_a_window_reads_each_part_from_the_finest_tier_that_holds_it(conn: sqlite3.Connection) -> None:
    _fill(conn, T0, T0 + 30 * DAY, every=600.0)  # 30 days at 10 minutes
    now = T0 + 30 * DAY
    dropped = rollup(conn, now, keep_raw=DAY, keep_5m=7 * DAY)
    assert dropped["raw"] > 0 and dropped["5m"] > 0
    # raw keeps the last day, 5-minute rows the last week, hourly ones everything
    oldest = {tier: conn.execute("SELECT min(ts) FROM usage_samples WHERE tier = ?", (tier,)).fetchone()[0]
              for tier in (0, 300, 3600)}
    assert oldest[3600] == T0 and oldest[300] >= now - 7 * DAY - 3600 and oldest[0] >= now - DAY - 300
    rows, step = history(conn, "ws-a", now - 3600, now, now=now, keep_raw=DAY, keep_5m=7 * DAY, max_points=500)
    assert step == 0 and len(rows) == 6  # as sampled
    rows, step = history(conn, "ws-a", now - 30 * DAY, now, now=now, keep_raw=DAY, keep_5m=7 * DAY, max_points=800)
    assert step == 3600 and 700 < len(rows) <= 800
    assert rows == sorted(rows, key=lambda r: r["t"]) and rows[-1]["t"] >= now - 3600
    assert all(r["memory_limit_bytes"] == 1000.0 for r in rows)
    rows, step = history(conn, "ws-a", now - 30 * DAY, now, now=now, keep_raw=DAY, keep_5m=7 * DAY, max_points=100)
    assert len(rows) <= 100 and step >= 3600
    total = sum(r["n"] for r in rows)
    assert total == 30 * 144  # every sample counted once, whichever tier it was read from
    assert history(conn, "other", now - DAY, now, now=now, keep_raw=DAY, keep_5m=7 * DAY)[0] == []


def test_events_and_purges(conn: sqlite3.Connection) -> None:
    _fill(conn, T0, T0 + 3600)
    insert_events(conn, [("ws-a", "a", T0 + 10, "oom_kill", {"count": 2}), ("ws-a", "a", T0 + 4000, "restart", {})])
    assert [e["kind"] for e in events_of(conn, "ws-a", T0, T0 + 5000)] == ["oom_kill", "restart"]
    assert events_of(conn, "ws-a", T0 + 20, T0 + 5000)[0]["kind"] == "restart"
    assert count_before(conn, T0 + 1800) == {"usage_samples": 30, "usage_events": 1}
    assert purge_before(conn, T0 + 1800) == {"usage_samples": 30, "usage_events": 1}
    assert count_before(conn, T0 + 1800) == {"usage_samples": 0, "usage_events": 0}
