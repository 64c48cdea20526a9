"""PeerGuard: connections per address, the failure budget, and one audit row per peer and minute."""

from __future__ import annotations

import asyncio
from typing import Any

from fetchml_agent.server.guard import PeerGuard


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(**kw: Any) -> tuple[PeerGuard, list[tuple[str, dict[str, Any]]], Clock]:
    rows: list[tuple[str, dict[str, Any]]] = []

    async def audit(peer: str, details: dict[str, Any]) -> None:
        rows.append((peer, details))

    clock = Clock()
    return PeerGuard(audit, clock=clock, **kw), rows, clock


def test_connections_per_peer_are_capped_and_released() -> None:
    guard, _, _ = make(max_connections=2)
    assert guard.open_connection("10.0.0.1") and guard.open_connection("10.0.0.1")
    assert not guard.open_connection("10.0.0.1")
    assert guard.open_connection("10.0.0.2")  # another address has its own count
    guard.close_connection("10.0.0.1")
    assert guard.open_connection("10.0.0.1")
    assert guard.connections("10.0.0.1") == 2


def test_sustained_failures_write_one_row_per_peer_and_minute() -> None:
    guard, rows, clock = make(failures_per_window=5)

    async def scenario() -> list[bool]:
        over = []
        for second in range(180):  # three minutes, ten failures a second, from one address
            clock.now = 1000.0 + second
            await guard.sweep()  # as the guard's own task does, every few seconds
            for _ in range(10):
                over.append(await guard.failure("10.0.0.9", "ws", "wrong_key"))
        return over

    over = asyncio.run(scenario())
    assert rows[0] == ("10.0.0.9", {"transport": "ws", "failures": 1, "wrong_key": 1})  # at once
    # The opening row at once, then one summary per completed minute (the third is still open).
    assert len(rows) == 3
    summaries = [details for _, details in rows[1:]]
    assert all(d["failures"] == 600 for d in summaries[1:])
    assert summaries[0]["failures"] == 599 and summaries[0]["wrong_key"] == 599
    assert over[:5] == [False] * 5 and all(over[5:600])  # the budget is per window

    async def quiet() -> None:
        clock.now += 60
        await guard.sweep()  # the last minute's summary
        clock.now += 61
        await guard.sweep()  # nothing new: the peer is forgotten
        await guard.failure("10.0.0.9", "http", "wrong_key")

    before = len(rows)
    asyncio.run(quiet())
    assert len(rows) == before + 2 and rows[-1][1] == {"transport": "http", "failures": 1, "wrong_key": 1}


def test_kinds_and_transports_are_summed_and_flushed_at_shutdown() -> None:
    guard, rows, _ = make()

    async def scenario() -> None:
        await guard.failure("p", "ws", "oversized_frame")
        await guard.failure("p", "ws", "oversized_frame")
        await guard.failure("p", "http", "wrong_key")
        await guard.failure("q", "ws", "refused_connection")
        await guard.close()

    asyncio.run(scenario())
    by_peer: dict[str, list[dict[str, Any]]] = {}
    for peer, details in rows:
        by_peer.setdefault(peer, []).append(details)
    assert by_peer["q"] == [{"transport": "ws", "failures": 1, "refused_connection": 1}]
    assert by_peer["p"][0] == {"transport": "ws", "failures": 1, "oversized_frame": 1}
    assert by_peer["p"][1] == {"transport": "http,ws", "failures": 2, "window_seconds": 60,
                               "oversized_frame": 1, "wrong_key": 1}


def test_a_failing_audit_does_not_break_the_guard() -> None:
    async def broken(peer: str, details: dict[str, Any]) -> None:
        raise RuntimeError("store closed")

    guard = PeerGuard(broken, failures_per_window=1)

    async def scenario() -> list[bool]:
        return [await guard.failure("p", "ws", "wrong_key") for _ in range(3)]

    assert asyncio.run(scenario()) == [False, True, True]


def test_very_many_addresses_share_one_bucket(monkeypatch: Any) -> None:
    import fetchml_agent.server.guard as guard_module

    monkeypatch.setattr(guard_module, "MAX_TRACKED_PEERS", 3)
    guard, rows, _ = make(failures_per_window=2)

    async def scenario() -> list[bool]:
        return [await guard.failure(f"2001:db8::{i}", "ws", "wrong_key") for i in range(10)]

    over = asyncio.run(scenario())
    assert [peer for peer, _ in rows] == ["2001:db8::0", "2001:db8::1", "2001:db8::2", guard_module.OTHER_PEERS]
    assert over[:4] == [False] * 4 and over[5:] == [True] * 5  # the shared bucket has one budget


def test_over_budget_is_per_address_and_ends_with_the_window() -> None:
    guard, _, clock = make(failures_per_window=2)

    async def scenario() -> None:
        for _ in range(3):
            await guard.failure("p", "ws", "wrong_key")

    asyncio.run(scenario())
    assert guard.over_budget("p") and not guard.over_budget("q")
    clock.now += 60
    asyncio.run(guard.sweep())
    assert not guard.over_budget("p")
