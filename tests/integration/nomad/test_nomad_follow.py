"""Following Nomad (NomadRuntime.follow_status): the event stream from a stored position, no frame
processed twice after a reconnect or a restart, nothing lost across a gap, and the fallbacks to
blocking queries where the stream is refused or missing (facts in fetchml_agent/nomad/events.py,
modelled by the double: tests/nomad_double/server.py ``h_event_stream``).

Workspaces here are jobs of the double's idle image registered directly (as bench_nomad.py does),
so nothing but the follower is measured; the tests need the double's knobs (its version, ACLs,
injected failures, a change made while it is down) and are skipped against a real Nomad, where
tests/integration/nomad/test_nomad_ml.py follows a real workspace through the agent.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from fetchml_agent.nomad.render import (
    JobRenderer,
    WorkspaceJobRequest,
    jupyter_secret_items,
    secret_variable_path,
)
from fetchml_agent.nomad.schema import NomadSettings
from fetchml_agent.runtimes.base import Resources, StatusChange
from fetchml_agent.runtimes.nomad import NomadRuntime
from tests.nomad_double import DoubleNode, NomadDouble
from tests.nomad_double.fixtures import IDLE_IMAGE

MANAGEMENT = "management-" + secrets.token_hex(4)
# What a workspace agent's token may do without node:read (docs/nomad.md's policy minus `node`).
NO_NODE_READ = "no-node-" + secrets.token_hex(4)
_CAPS = {"read-job", "submit-job", "read-fs", "alloc-exec", "alloc-lifecycle", "variables-read", "variables-write"}


def _double(tmp: Path, **kw: Any) -> NomadDouble:
    if __import__("os").environ.get("FETCHML_TEST_NOMAD_ADDR"):
        pytest.skip("needs the Nomad double's knobs (version, ACLs, failures, changes while down)")
    return NomadDouble(nodes=[DoubleNode("n1", cores=64)], images=[IDLE_IMAGE],
                       acl={MANAGEMENT: {"*"}, NO_NODE_READ: _CAPS}, root=tmp, **kw)


@pytest.fixture
def double(tmp_path: Path) -> Iterator[NomadDouble]:
    with _double(tmp_path) as d:
        yield d
    assert d.contract is not None and d.contract.violations == []


class Feed:
    """A runtime following the double, and what it delivered."""

    def __init__(self, double: NomadDouble, token: str = MANAGEMENT, **extra: Any) -> None:
        self.double = double
        self.settings = {"address": double.address, "token": token, "allowed_images": ["fetchml/*"],
                         "default_image": IDLE_IMAGE.name, "job_prefix": "f-", **extra}
        self.changes: list[tuple[str, str, str]] = []
        self.positions: list[int] = []
        self.rt: NomadRuntime | None = None
        self.task: asyncio.Task[None] | None = None

    async def deliver(self, changes: list[StatusChange], position: int) -> None:
        assert not self.positions or position >= self.positions[-1], "positions only move forward"
        self.changes += [(c.workspace_id, c.status.state, c.status.message) for c in changes]
        self.positions.append(position)

    async def start(self, since: int = 0) -> NomadRuntime:
        self.rt = NomadRuntime(self.settings)
        await self.rt.open()
        self.task = asyncio.create_task(self.rt.follow_status(since, self.deliver))
        return self.rt

    async def stop(self) -> None:
        assert self.task is not None and self.rt is not None
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task
        await self.rt.close()

    async def until(self, what: Callable[[], bool], limit: float = 20.0) -> None:
        deadline = time.monotonic() + limit
        while not what():
            assert time.monotonic() < deadline, (self.changes, self.rt.feed_info() if self.rt else None)
            await asyncio.sleep(0.02)


async def _register(double: NomadDouble, names: list[str], prefix: str = "f-") -> dict[str, str]:
    """Idle workspace jobs, running; their job IDs by workspace id."""
    settings = NomadSettings.from_config({"address": double.address, "allowed_images": ["fetchml/*"],
                                          "job_prefix": prefix})
    renderer = JobRenderer(settings)
    ids = {}
    for name in names:
        job = renderer.workspace(WorkspaceJobRequest(name=name, workspace_id=f"ws-{name}", image=IDLE_IMAGE.name,
                                                     resources=Resources(cpu=0.1, memory_mb=64)))
        _nomad(double, "PUT", f"/v1/var/{secret_variable_path(job['Job']['ID'])}",
               {"Path": secret_variable_path(job["Job"]["ID"]), "Items": jupyter_secret_items("t" * 32)})
        _nomad(double, "POST", "/v1/jobs", job)
        ids[f"ws-{name}"] = job["Job"]["ID"]
    deadline = time.monotonic() + 20
    while not all(any(a["JobID"] == j and a["ClientStatus"] == "running" for a in double.allocations())
                  for j in ids.values()):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    return ids


def _nomad(double: NomadDouble, method: str, path: str, body: Any = None, **params: Any) -> Any:
    r = requests.request(method, double.address + path, json=body, params=params,
                         headers={"X-Nomad-Token": MANAGEMENT}, timeout=10)
    r.raise_for_status()
    return r.json() if r.content else None


def _running_alloc(double: NomadDouble, job_id: str) -> str:
    return next(a["ID"] for a in double.allocations() if a["JobID"] == job_id and a["ClientStatus"] == "running")


def run(coro: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(coro())


def test_changes_made_behind_the_agents_back_arrive_from_the_stream(double: NomadDouble) -> None:
    async def scenario() -> Feed:
        jobs = await _register(double, ["a", "b", "c"])
        feed = Feed(double)
        rt = await feed.start()
        await feed.until(lambda: {w for w, s, _ in feed.changes if s == "running"} == set(jobs))
        assert rt.feed_info()["mode"] == "event stream"
        _nomad(double, "DELETE", f"/v1/job/{jobs['ws-a']}")  # stopped
        _nomad(double, "DELETE", f"/v1/job/{jobs['ws-b']}", purge="true")  # gone
        _nomad(double, "POST", f"/v1/allocation/{_running_alloc(double, jobs['ws-c'])}/stop")
        await feed.until(lambda: {("ws-a", "stopped"), ("ws-b", "missing")} <= {(w, s) for w, s, _ in feed.changes}
                         and any(w == "ws-c" and s != "running" for w, s, _ in feed.changes))
        info = rt.feed_info()
        await feed.stop()
        assert info["frames"] > 0 and info["resyncs"] == 1 and info["position"] == feed.positions[-1]
        return feed

    feed = run(scenario)
    # each status is delivered once, when it changes: never the same one twice in a row
    for ws in ("ws-a", "ws-b", "ws-c"):
        mine = [(s, m) for w, s, m in feed.changes if w == ws]
        assert all(a != b for a, b in itertools.pairwise(mine)), mine
    # (Nomad replaces an allocation stopped this way; the double does not, so ws-c ends stopped)


def test_a_restart_resumes_from_the_stored_position_and_processes_no_frame_twice(double: NomadDouble) -> None:
    async def scenario() -> tuple[int, dict[str, Any], Feed]:
        jobs = await _register(double, ["r1", "r2"])
        first = Feed(double)
        await first.start()
        await first.until(lambda: len({w for w, s, _ in first.changes if s == "running"}) == 2)
        _nomad(double, "DELETE", f"/v1/job/{jobs['ws-r1']}")
        await first.until(lambda: ("ws-r1", "stopped") in {(w, s) for w, s, _ in first.changes})
        await asyncio.sleep(0.2)  # let the stop's later frames arrive too
        stored = first.positions[-1]
        await first.stop()
        # the agent is down; Nomad moves on
        _nomad(double, "DELETE", f"/v1/job/{jobs['ws-r2']}")
        second = Feed(double)
        rt = await second.start(since=stored)
        await second.until(lambda: ("ws-r2", "stopped") in {(w, s) for w, s, _ in second.changes})
        await asyncio.sleep(0.3)
        info = rt.feed_info()
        await second.stop()
        return stored, info, second

    stored, info, second = run(scenario)
    # Nomad sent the frame at the stored index again (and what the resync had already read): dropped
    assert info["dropped"] >= 1
    assert all(p >= stored for p in second.positions)


def test_a_gap_while_nomad_is_down_is_read_from_the_lists_when_it_is_back(double: NomadDouble) -> None:
    async def scenario() -> dict[str, Any]:
        jobs = await _register(double, ["g1"])
        feed = Feed(double)
        rt = await feed.start()
        await feed.until(lambda: ("ws-g1", "running") in {(w, s) for w, s, _ in feed.changes})
        double.go_down()
        await feed.until(lambda: rt.feed_info()["mode"] == "reconnecting")
        # meanwhile the workspace's allocation ends, and its job is stopped: no event reaches the agent
        alloc = _running_alloc(double, jobs["ws-g1"])
        double.call(double.cluster.deregister, "default", jobs["ws-g1"], False)
        del alloc
        double.come_back()
        await feed.until(lambda: ("ws-g1", "stopped") in {(w, s) for w, s, _ in feed.changes}, limit=40)
        info = rt.feed_info()
        await feed.stop()
        return info

    info = run(scenario)
    assert info["reconnects"] >= 1 and info["resyncs"] >= 2 and info["mode"] == "event stream"


@pytest.mark.parametrize("version", ["1.10.0", "2.0.0"])
def test_a_token_without_node_read_follows_the_other_topics(tmp_path: Path, version: str) -> None:
    # Nomad up to 1.11 denies with 403; 2.0 answers 200 and ends the body before its first line.
    with _double(tmp_path, version=version) as double:
        async def scenario() -> dict[str, Any]:
            jobs = await _register(double, ["n1"])
            feed = Feed(double, token=NO_NODE_READ)
            rt = await feed.start()
            await feed.until(lambda: ("ws-n1", "running") in {(w, s) for w, s, _ in feed.changes})
            _nomad(double, "DELETE", f"/v1/job/{jobs['ws-n1']}")
            await feed.until(lambda: ("ws-n1", "stopped") in {(w, s) for w, s, _ in feed.changes})
            info = rt.feed_info()
            await feed.stop()
            return info

        info = run(scenario)
    assert info["mode"] == "event stream (without Node)"


@pytest.mark.parametrize("how", ["old nomad", "denied"])
def test_without_the_stream_it_follows_with_blocking_queries(tmp_path: Path, how: str) -> None:
    with _double(tmp_path, version="0.12.0" if how == "old nomad" else "1.10.0") as double:
        if how == "denied":  # a policy that grants the rest but not the stream (both subscriptions)
            double.fail_next("GET", r"^/v1/event/stream$", 403, "Permission denied", times=2)

        async def scenario() -> tuple[dict[str, Any], int]:
            jobs = await _register(double, ["b1", "b2"])
            feed = Feed(double)
            rt = await feed.start()
            await feed.until(lambda: len({w for w, s, _ in feed.changes if s == "running"}) == 2)
            _nomad(double, "DELETE", f"/v1/job/{jobs['ws-b1']}")
            await feed.until(lambda: ("ws-b1", "stopped") in {(w, s) for w, s, _ in feed.changes})
            info = rt.feed_info()
            # a run waits on its job through the same blocking queries (no query of its own)
            before = len(double.requests)
            index = await rt.wait_run({"job_id": jobs["ws-b2"]}, 0, 1.0)
            changed = asyncio.create_task(rt.wait_run({"job_id": jobs["ws-b2"]}, index, 10.0))
            await asyncio.sleep(0.1)
            _nomad(double, "DELETE", f"/v1/job/{jobs['ws-b2']}")
            woke = await changed
            assert woke > index
            own = [r for r in double.requests[before:] if r[1].endswith(f"{jobs['ws-b2']}/allocations")]
            await feed.stop()
            return info, len(own)

        info, own_queries = run(scenario)
    assert info["mode"] == "blocking queries" and "event stream" in info["last_error"]
    assert own_queries == 0
