"""The agent's publish/subscribe hub (fetchml_agent/live.py)."""

from __future__ import annotations

import asyncio
import json

from fetchml_agent.live import REPLAY, LiveHub


def lines(events: list) -> list[dict]:
    return [json.loads(e.line) for e in events]


async def drain(sub, n: int) -> list:
    return [await sub.next(1.0) for _ in range(n)]


def test_one_encoding_for_every_subscriber_in_order() -> None:
    async def scenario() -> None:
        hub = LiveHub()
        a, b = hub.subscribe(), hub.subscribe()
        first = hub.publish("workspace", "ws-1", {"name": "lab", "status": "running"}, workspace_id="ws-1")
        hub.publish("run", "run-1", {"id": "run-1", "status": "queued"}, workspace_id="ws-1", user="bob")
        got_a, got_b = await drain(a, 2), await drain(b, 2)
        assert got_a == got_b and got_a[0] is first  # the same event object, encoded once
        assert [(d["seq"], d["type"]) for d in lines(got_a)] == [(1, "workspace"), (2, "run")]
        assert lines(got_a)[0]["status"] == "running" and got_a[1].user == "bob"
        assert await a.next(0.05) is None  # nothing more: a timeout, not an error
        a.close()
        hub.publish("workspace", "ws-1", {"status": "stopped"})
        assert hub.subscribers == 1 and (await b.next(1.0)).seq == 3

    asyncio.run(scenario())


def test_a_slow_subscriber_loses_its_oldest_events_and_nobody_waits() -> None:
    async def scenario() -> None:
        hub = LiveHub()
        slow = hub.subscribe(maxsize=3)
        for i in range(10):
            hub.publish("run", f"r{i}", {"i": i})
        assert slow.lagged == 7
        assert [json.loads((await slow.next(1.0)).line)["i"] for _ in range(3)] == [7, 8, 9]

    asyncio.run(scenario())


def test_subscribing_after_a_sequence_number_misses_nothing_or_says_so() -> None:
    async def scenario() -> None:
        hub = LiveHub()
        for i in range(5):
            hub.publish("workspace", "w", {"i": i})
        with hub.subscribe(after=3) as sub:  # read the state at seq 3: 4 and 5 come first
            assert [e.seq for e in await drain(sub, 2)] == [4, 5]
        with hub.subscribe(after=5) as sub:
            assert await sub.next(0.05) is None
        for i in range(REPLAY + 10):
            hub.publish("workspace", "w", {"i": i})
        with hub.subscribe(after=2) as sub:  # too old: told to read the state again, then what is kept
            gap = await sub.next(1.0)
            assert gap.kind == "gap" and json.loads(gap.line)["type"] == "gap"
            assert (await sub.next(1.0)).seq == hub.seq - REPLAY + 1

    asyncio.run(scenario())


def test_closing_the_hub_wakes_every_reader_at_once() -> None:
    async def scenario() -> None:
        hub = LiveHub()
        waiting = hub.subscribe()
        reader = asyncio.create_task(waiting.next(3600))  # an idle `ml status --watch`
        await asyncio.sleep(0)
        hub.close()
        assert await asyncio.wait_for(reader, 5) is None and waiting.closed
        late = hub.subscribe()  # one that comes after the close ends at once too
        assert late.closed and await late.next(3600) is None

    asyncio.run(scenario())
