"""Issue 18's figures (prints numbers; asserts nothing).

1. **Nomad change to WebSocket client, 1,000 workspaces** (``--only client``), Nomad's event
   stream against blocking queries, measured in the same run. 1,000 workspace jobs run in the
   Nomad double (its own process, instant placement, idle tasks). A real agent process
   (``fetchml-agent serve``, ``runtime: nomad``) holds them as its workspaces: its store is
   written beforehand as an agent that created them would have left it, and it adopts them at
   start. A subscriber connects to it over the project's WebSocket client
   (``fetchml_agent.client`` + ``wsclient``, the protocol codec) and calls the subscribe
   operation (0x2F) as ``ml status --watch --json`` does. A third process, the driver, stops one
   workspace's job at a time through Nomad's HTTP API (200 different workspaces). The latency
   runs from the end of Nomad's handler that made the change (the double stamps it on its answer,
   CLOCK_MONOTONIC, shared by all processes) to the subscriber reading that workspace's line off
   the socket: Nomad -> the agent's follower -> the workspace's record written (SQLite) -> its
   LiveHub -> the subscribe operation -> the WebSocket -> the client. The baseline is a second
   agent process on the same workspaces with ``nomad.events.enabled: false`` (the follower's
   blocking queries: one over the agent's allocations, then the jobs list again). The agent's
   usage sampler is off in both (its 30 s sweep reads every allocation's stats, which is neither
   mode's work). Target: p99 <= 250 ms with the stream.
2. **Agent CPU**: the agent process's CPU time (all threads, from /proc) while the changes were
   followed, per 1,000 events of the stream, and per 1,000 workspace changes in either mode.
3. The same latency to the agent's hub only (``--only hub``: the follower in this process, the
   hub read in-process; the earlier figure, kept to see what the WebSocket hop adds).
4. **The environment step of a run**, cached against uncached (``--only env``): ``env_step.py``
   (what a run's launcher executes before the notebook) installing a lock of 6 packages from a
   local index into an empty cache, against the same lock found complete in the cache.

Figures measured on the shared 2-core VM (load average 2-8 from other work meanwhile), 1,000
workspaces, 200 changes per mode, two runs:

=================================================  ===============  ================  ==========
what                                               event stream     blocking queries  target
=================================================  ===============  ================  ==========
Nomad change -> WebSocket subscriber p50           13-14 ms         394-528 ms
Nomad change -> WebSocket subscriber p99           37-48 ms         1,238-1,602 ms    <= 250 ms
Nomad change -> WebSocket subscriber max           53-59 ms         1,718-1,732 ms
agent process CPU per 1,000 stream events          679-686 ms
agent process CPU per 1,000 workspace changes      4.8 s            193-201 s (each
                                                                    change reads the
                                                                    1,000 jobs again)
(hub only, earlier run) change -> hub p50 / p99    18 / 43 ms       668 / 1,840 ms
environment step, 6 packages: cached / uncached    200 ms / 3.2 s (0.06x)
=================================================  ===============  ================  ==========

A change is 7 stream events here (the job's, its evaluation's, the allocation's updates); the
agent's CPU per change includes writing the workspace's record and sending the line. The CPU is
counted once the agent is idle after its start (adopting 1,000 workspaces).

Run: ``python -m benchmarks nomad_events`` (defaults, all sections), or ``PYTHONPATH=. python3
benchmarks/bench_nomad_events.py [--workspaces 1000] [--changes 200] [--only client|hub|env]``;
``make bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_nomad import IMAGE, SPAN_HEADER, _serve_double
from benchmarks.common import Row, percentile, print_rows
from fetchml_agent.live import LiveHub
from fetchml_agent.nomad.render import (
    JobRenderer,
    WorkspaceJobRequest,
    jupyter_secret_items,
    secret_variable_path,
)
from fetchml_agent.nomad.schema import NomadSettings
from fetchml_agent.runtimes.base import Resources, StatusChange
from fetchml_agent.runtimes.nomad import NomadRuntime

__all__ = ["TITLE", "main"]

TITLE = "nomad events, live updates and the run environment (issue 18)"
TARGET_P99_MS = 250.0
PREFIX = "ev-"


def _settings(address: str, events: bool) -> dict[str, Any]:
    return {"address": address, "allowed_images": ["fetchml/*"], "default_image": IMAGE, "job_prefix": PREFIX,
            "events": {"enabled": events}}


def _job(renderer: JobRenderer, i: int) -> dict[str, Any]:
    return renderer.workspace(WorkspaceJobRequest(name=f"w{i}", workspace_id=f"id-{i}",
                                                  resources=Resources(cpu=0.1, memory_mb=64)))


# -- the driver: makes the changes in Nomad, from its own process ----------------------------


def _drive(address: str, commands: Any, answers: Any) -> None:
    import httpx

    renderer = JobRenderer(NomadSettings.from_config(_settings(address, True)))
    with httpx.Client(base_url=address, timeout=30) as http:
        while True:
            command = commands.get()
            if command is None:
                return
            verb, i = command
            if verb == "stop":
                resp = http.delete(f"/v1/job/{PREFIX}ws-w{i}")
            else:
                resp = http.post("/v1/jobs", json=_job(renderer, i))
            resp.raise_for_status()
            answers.put(int(resp.headers[SPAN_HEADER].split()[1]))  # when Nomad's handler ended


async def _setup(address: str, n: int) -> None:
    rt = NomadRuntime(_settings(address, True))
    await rt.open()
    renderer = JobRenderer(rt.settings)
    sem = asyncio.Semaphore(16)

    async def submit(i: int) -> None:
        async with sem:
            job = _job(renderer, i)
            await rt.client.put_variable(secret_variable_path(job["Job"]["ID"]), jupyter_secret_items("t" * 32))
            await rt.client.register_job(job)

    await asyncio.gather(*(submit(i) for i in range(n)))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        allocs, _ = await rt.client.list_allocations(filter_=f'JobID matches "^{PREFIX}ws-"', task_states=False)
        if sum(1 for a in allocs if a["ClientStatus"] == "running") >= n:
            break
        await asyncio.sleep(0.5)
    await rt.close()


async def _follow(address: str, events: bool, n: int, changes: int, commands: Any, answers: Any) -> dict[str, Any]:
    rt = NomadRuntime(_settings(address, events))
    await rt.open()
    hub = LiveHub()
    sub = hub.subscribe(maxsize=100_000)
    delivered = 0

    async def deliver(batch: list[StatusChange], position: int) -> None:
        nonlocal delivered
        for change in batch:
            delivered += 1
            hub.publish("workspace", change.workspace_id, {"id": change.workspace_id, "status": change.status.state},
                        workspace_id=change.workspace_id)

    task = asyncio.create_task(rt.follow_status(0, deliver))
    # the first sync delivers every workspace; wait until it is quiet
    while await sub.next(2.0) is not None:
        pass
    follower = rt._follower
    assert follower is not None
    events0, delivered0, cpu0 = follower.counters["events"], delivered, time.process_time()
    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    for k in range(changes):
        i = (k // 2 * 7919) % n  # stop a workspace, then register it again
        commands.put(("stop" if k % 2 == 0 else "start", i))
        ended = await loop.run_in_executor(None, answers.get)
        want = f"id-{i}"
        while True:
            event = await sub.next(30.0)
            if event is None:
                raise RuntimeError(f"no change of workspace w{i} within 30 s ({'stream' if events else 'blocking'})")
            if event.key == want:
                latencies.append((time.monotonic_ns() - ended) / 1e6)
                break
        # drain what else that change caused (starting, then running) before the next one
        while await sub.next(0.3 if events else 0.6) is not None:
            pass
    cpu = time.process_time() - cpu0
    out = {"latencies": latencies, "cpu": cpu, "events": follower.counters["events"] - events0,
           "delivered": delivered - delivered0, "mode": follower.mode}
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):
        pass
    await rt.close()
    return out


@contextlib.contextmanager
def _double_and_driver(n: int) -> Iterator[tuple[str, float, Any, Any]]:
    """The double in a process of its own with ``n`` running workspace jobs, and the driver
    process that changes them on command: ``(address, setup seconds, commands, answers)``."""
    ctx = multiprocessing.get_context("spawn")
    port_queue, stop, latency = ctx.Queue(), ctx.Event(), ctx.Value("d", 0.0)
    double = ctx.Process(target=_serve_double, args=(port_queue, stop, latency), daemon=True)
    double.start()
    driver = None
    try:
        address = port_queue.get(timeout=60)
        t0 = time.perf_counter()
        asyncio.run(_setup(address, n))
        setup = time.perf_counter() - t0
        commands, answers = ctx.Queue(), ctx.Queue()
        driver = ctx.Process(target=_drive, args=(address, commands, answers), daemon=True)
        driver.start()
        yield address, setup, commands, answers
        commands.put(None)
    finally:
        if driver is not None:
            driver.join(10)
        stop.set()
        double.join(30)


def bench_events(n: int, changes: int) -> list[Row]:
    with _double_and_driver(n) as (address, setup, commands, answers):
        stream = asyncio.run(_follow(address, True, n, changes, commands, answers))
        blocking = asyncio.run(_follow(address, False, n, changes, commands, answers))
    s, b = stream["latencies"], blocking["latencies"]
    per_k_events = stream["cpu"] / max(1, stream["events"]) * 1000
    return [
        Row(f"{n} workspaces running in the double (setup, not a target)", setup, "s"),
        Row(f"event-to-subscriber latency p50, stream ({len(s)} changes)", percentile(s, 50), "ms",
            "blocking queries", percentile(b, 50)),
        Row(f"event-to-subscriber latency p99, stream ({stream['mode']})", percentile(s, 99), "ms",
            "blocking queries", percentile(b, 99), f"<= {TARGET_P99_MS:g} ms"),
        Row("event-to-subscriber latency max, stream", max(s), "ms", "blocking queries", max(b)),
        Row(f"agent CPU per 1,000 stream events ({stream['events']} events)", per_k_events * 1000, "ms"),
        Row("agent CPU per 1,000 workspace changes delivered, stream",
            stream["cpu"] / max(1, stream["delivered"]) * 1e6, "ms",
            "blocking queries", blocking["cpu"] / max(1, blocking["delivered"]) * 1e6),
    ]


# -- 1. to the client: the double -> a real agent process -> a WebSocket subscriber ---------


class _BenchAgent:
    """A real ``fetchml-agent serve`` (the tests' :class:`~tests.conftest.AgentProcess`) whose
    store holds ``n`` running workspaces, one per job already in the double: what an agent that
    created them and was restarted finds (it adopts them)."""

    def __init__(self, root: Path, address: str, events: bool, states: dict[str, dict[str, Any]]) -> None:
        from tests.conftest import AgentProcess, free_port

        # The usage sampler is off: its sweep reads each allocation's stats every 30 s, work that
        # is neither the follower's nor the subscribers' and would blur the agent's CPU figure.
        self.agent = AgentProcess(root, free_port(), extra={
            "runtime": "nomad", "nomad": _settings(address, events),
            "usage": {"interval": "off", "disk_interval": "off"},
            "limits": {"max_workspaces": len(states) + 10}})
        self.agent.write_config()
        self._seed(states)

    def _seed(self, states: dict[str, dict[str, Any]]) -> None:
        from fetchml_agent.store import Store
        from fetchml_agent.store.workspaces import Workspace, insert_workspace

        data = self.agent.data_dir
        store = Store(data / "agent.db")
        store.open()
        try:
            now = time.time()
            for wid, state in states.items():
                name = "w" + wid.split("-", 1)[1]
                ws = Workspace(id=wid, name=name, owner="admin", path=str(data / "workspaces" / name),
                               runtime="nomad", token="t" * 32, index_key="k" * 32, created_at=now,
                               updated_at=now, status="running", url=state.get("url"), image=IMAGE,
                               runtime_state=state, started_at=now)
                store.run_sync(insert_workspace, ws, store.sealer)
        finally:
            store.close()

    def start(self) -> None:
        agent = self.agent
        # adopting 1,000 workspaces (one status read each) takes longer than the tests' 90 s wait
        log = open(agent.root / "agent.log", "ab")
        from tests.conftest import AGENT

        agent.proc = subprocess.Popen([*AGENT, "serve", "--config", str(agent.config_path)], stdout=log,
                                      stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 900
        import urllib.request

        while time.monotonic() < deadline:
            if agent.proc.poll() is not None:
                raise RuntimeError("agent exited:\n" + (agent.root / "agent.log").read_text()[-3000:])
            try:
                urllib.request.urlopen(agent.http_url + "/api/v1/health", timeout=1).read()
                return
            except OSError:
                time.sleep(0.2)
        agent.stop()
        raise RuntimeError("agent did not come up:\n" + (agent.root / "agent.log").read_text()[-3000:])

    def cpu_s(self) -> float:
        """The agent process's CPU time (all its threads), from /proc."""
        assert self.agent.proc is not None
        fields = Path(f"/proc/{self.agent.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def status(self) -> dict[str, Any]:
        from fetchml_agent.client import Client
        from fetchml_agent.protocol.opcodes import Opcode
        from tests.conftest import KEYS

        with Client(self.agent.ws_url, KEYS["admin"], timeout=60) as client:
            data = client.call(Opcode.AGENT_STATUS).data
        return data if isinstance(data, dict) else {}


class _Subscriber:
    """The subscribe operation (0x2F) over the project's WebSocket client, in a thread, as
    ``ml status --watch --json`` calls it: each workspace line lands on ``lines`` with the
    CLOCK_MONOTONIC time it was read."""

    def __init__(self, ws_url: str) -> None:
        import queue
        import threading

        from fetchml_agent.client import Client
        from tests.conftest import KEYS

        self.lines: queue.Queue[tuple[int, dict[str, Any]]] = queue.Queue()
        self.client = Client(ws_url, KEYS["admin"], timeout=60, on_log=self._got)
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if not self.ready.wait(120):
            raise RuntimeError("the subscriber did not connect")

    def _got(self, chunk: bytes) -> None:
        now = time.monotonic_ns()
        for line in chunk.splitlines():
            doc = json.loads(line)
            if doc.get("type") == "workspace":
                self.lines.put((now, doc))

    def _run(self) -> None:
        from fetchml_agent.protocol.opcodes import Opcode

        try:
            self.client.connect()
            seq = self.client.call(Opcode.AGENT_STATUS).data["live_seq"]
            self.ready.set()
            self.client.call(Opcode.SUBSCRIBE, {"topics": ["workspaces"], "after": seq, "timeout": 86400},
                             timeout=None)
        except Exception:  # the agent stopped at the end of the measurement
            pass

    def next(self, timeout: float) -> tuple[int, dict[str, Any]] | None:
        import queue

        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return None


def _discover(address: str) -> dict[str, dict[str, Any]]:
    async def run() -> dict[str, dict[str, Any]]:
        rt = NomadRuntime(_settings(address, True))
        await rt.open()
        try:
            return dict(await rt.discover())
        finally:
            await rt.close()

    return asyncio.run(run())


def _wait_running(address: str, n: int) -> None:
    async def run() -> None:
        rt = NomadRuntime(_settings(address, True))
        await rt.open()
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                allocs, _ = await rt.client.list_allocations(filter_=f'JobID matches "^{PREFIX}ws-"',
                                                             task_states=False)
                if sum(1 for a in allocs if a["ClientStatus"] == "running") >= n:
                    return
                await asyncio.sleep(0.5)
            raise RuntimeError(f"fewer than {n} workspaces running in the double after 300 s")
        finally:
            await rt.close()

    asyncio.run(run())


def _client_mode(tmp: Path, address: str, events: bool, n: int, picks: list[int], commands: Any,
                 answers: Any) -> dict[str, Any]:
    """One mode end to end: a fresh agent adopts the ``n`` workspaces, a subscriber connects, and
    each pick's job is stopped in Nomad; latency = Nomad's handler ended -> the subscriber read
    that workspace's line."""
    bench = _BenchAgent(tmp / ("stream" if events else "blocking"), address, events, _discover(address))
    sub = None
    try:
        bench.start()
        deadline = time.monotonic() + 300
        while bench.status().get("runtime", {}).get("feed", {}).get("live") is not True:
            if time.monotonic() > deadline:  # the first sync: every workspace read once
                raise RuntimeError(f"the agent's feed is not live after 300 s: {bench.status().get('runtime')}")
            time.sleep(0.5)
        sub = _Subscriber(bench.agent.ws_url)
        while sub.next(1.0) is not None:  # whatever the start published
            pass
        settle = time.monotonic() + 60  # and the start's own background work, out of the CPU figure
        while time.monotonic() < settle:
            before = bench.cpu_s()
            time.sleep(1.0)
            if bench.cpu_s() - before <= 0.02:
                break
        feed0 = bench.status()["runtime"]["feed"]
        cpu0 = bench.cpu_s()
        latencies: list[float] = []
        for i in picks:
            commands.put(("stop", i))
            ended = answers.get(timeout=60)
            want = f"id-{i}"
            while True:
                got = sub.next(30.0)
                if got is None:
                    raise RuntimeError(f"no change of workspace w{i} within 30 s ({'stream' if events else 'blocking'})")
                if got[1].get("id") == want:
                    latencies.append((got[0] - ended) / 1e6)
                    break
            while sub.next(0.3 if events else 0.6) is not None:  # what else the change caused
                pass
        cpu = bench.cpu_s() - cpu0
        feed = bench.status()["runtime"]["feed"]
    finally:
        bench.agent.stop()
        if sub is not None:
            sub.thread.join(10)
    return {"latencies": latencies, "cpu": cpu, "events": feed["events"] - feed0["events"],
            "mode": feed["mode"]}


def bench_client(n: int, changes: int) -> list[Row]:
    """Section 1 (see the module docstring)."""
    tmp = Path(tempfile.mkdtemp(prefix="fetchml-bench-events-"))
    picks = [(k * 7919) % n for k in range(min(changes, n))]  # distinct workspaces, spread out
    try:
        with _double_and_driver(n) as (address, setup, commands, answers):
            stream = _client_mode(tmp, address, True, n, picks, commands, answers)
            for i in picks:  # the stopped workspaces run again for the second agent
                commands.put(("start", i))
                answers.get(timeout=60)
            _wait_running(address, n)
            blocking = _client_mode(tmp, address, False, n, picks, commands, answers)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    s, b = stream["latencies"], blocking["latencies"]
    return [
        Row(f"{n} workspaces running in the double (setup, not a target)", setup, "s"),
        Row(f"Nomad change -> WebSocket subscriber p50, stream ({len(s)} changes)", percentile(s, 50), "ms",
            "blocking queries", percentile(b, 50)),
        Row(f"Nomad change -> WebSocket subscriber p99, stream ({stream['mode']})", percentile(s, 99), "ms",
            "blocking queries", percentile(b, 99), f"<= {TARGET_P99_MS:g} ms"),
        Row("Nomad change -> WebSocket subscriber max, stream", max(s), "ms", "blocking queries", max(b)),
        Row(f"agent process CPU per 1,000 stream events ({stream['events']} events)",
            stream["cpu"] / max(1, stream["events"]) * 1e6, "ms"),
        Row("agent process CPU per 1,000 workspace changes, stream", stream["cpu"] / max(1, len(s)) * 1e6, "ms",
            "blocking queries", blocking["cpu"] / max(1, len(b)) * 1e6),
    ]


# -- 3. the environment step ------------------------------------------------------------------


def bench_environment(rounds: int) -> list[Row]:
    from tests.integration.packages.world import make_upstream, make_wheelhouse

    step = Path(__file__).resolve().parents[1] / "fetchml_agent" / "experiments" / "env_step.py"
    tmp = Path(tempfile.mkdtemp(prefix="fetchml-bench-env-"))
    try:
        wheels = make_wheelhouse(tmp / "wheels")
        latest = {}  # one version of each (the wheelhouse holds some in two)
        for wheel in sorted(Path(wheels).glob("*.whl")):
            name, version = wheel.name.split("-")[:2]
            latest[name] = version
        pins = [f"{name}=={latest[name]}" for name in sorted(latest)[:6]]
        lock = tmp / "environment.lock"
        lock.write_text("".join(p + "\n" for p in pins))
        with make_upstream(wheels) as upstream:
            env = {**os.environ, "PIP_INDEX_URL": f"{upstream.url}/simple/", "PIP_NO_CACHE_DIR": "1"}

            def once(cache: Path) -> float:
                began = time.perf_counter()
                cp = subprocess.run([sys.executable, str(step), str(lock), str(tmp / "report.json")],
                                    env={**env, "FETCHML_ENV_CACHE": str(cache)}, capture_output=True, text=True)
                if cp.returncode != 0:
                    raise RuntimeError(cp.stderr[-2000:])
                return time.perf_counter() - began

            uncached, cached = [], []
            for r in range(rounds):
                cache = tmp / f"cache-{r}"
                uncached.append(once(cache))
                cached.append(once(cache))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [Row(f"environment step, lock of {len(pins)} packages found in the cache, median",
                statistics.median(cached) * 1000, "ms", "uncached (pip installs it)",
                statistics.median(uncached) * 1000)]


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--workspaces", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--env-rounds", type=int, default=3)
    parser.add_argument("--only", choices=["client", "hub", "env"], action="append",
                        help="run only this section (repeatable; default: all three)")
    args = parser.parse_args(argv if argv is not None else [])
    only = set(args.only or ["client", "hub", "env"])
    rows: list[Row] = []
    if "client" in only:
        rows += bench_client(args.workspaces, args.changes)
    if "hub" in only:
        rows += bench_events(args.workspaces, args.changes)
    if "env" in only:
        rows += bench_environment(args.env_rounds)
    return rows


if __name__ == "__main__":
    print_rows(TITLE, main(sys.argv[1:]))
