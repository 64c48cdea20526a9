"""Issue 17: the cost of seeing things. ``python -m benchmarks observe``.

- ``/metrics`` of an agent with 1,000 workspaces (target <= 20 ms): rendered in the agent (the
  collectors, per-workspace labels off and on), and over HTTP from a real agent process whose store
  holds 1,000 workspaces; baselines: the same render with no workspaces, GET /api/v1/health.
- Sampling overhead per workspace per interval: sweeps of the real usage sampler over N running
  local workspaces (real processes, the local runtime's stats, the store write) against a sweep of
  none, as a share of the default 60 s interval; and the sweep of a real JupyterLab workspace
  (its kernels asked) as a real agent records it.
- Report generation for a workspace with 30 days of samples (target <= 500 ms): the report
  operation (html, text) over 30 days of one-minute samples rolled up into the store's tiers;
  baseline: the same report over its last 24 hours.
- The home page's time to first byte with 100 workspaces (target <= 50 ms), logged in through
  /login on a real agent process; baselines: /api/v1/health and the login page of the same server.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections import deque
from pathlib import Path
from typing import Any

from benchmarks.common import Row, median, percentile

TITLE = "observability (issue 17)"
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fetchml_agent import procs  # noqa: E402
from fetchml_agent.agent import Agent  # noqa: E402
from fetchml_agent.config import parse_config  # noqa: E402
from fetchml_agent.protocol.opcodes import Opcode  # noqa: E402
from fetchml_agent.service import OPERATIONS, load_operations  # noqa: E402
from fetchml_agent.service.calls import Call  # noqa: E402
from fetchml_agent.store import Store  # noqa: E402
from fetchml_agent.store.usage import Sample, insert_samples, rollup  # noqa: E402
from fetchml_agent.store.workspaces import Workspace, insert_workspace  # noqa: E402
from fetchml_agent.usage.ops import usage_of  # noqa: E402
from tests.conftest import KEYS, AgentProcess, free_port  # noqa: E402

N_METRICS = 1000
N_HOME = 100
N_SWEEP = int(os.environ.get("FETCHML_BENCH_SWEEP_WORKSPACES", "40"))
DAY = 86400.0


def _ws(i: int, owner: str, status: str, root: Path, state: dict[str, Any] | None = None) -> Workspace:
    now = time.time()
    path = root / f"w{i}"
    path.mkdir(parents=True, exist_ok=True)
    return Workspace(id=uuid.uuid4().hex, name=f"bench-{i:04d}", owner=owner, path=str(path), runtime="local",
                     token=uuid.uuid4().hex, index_key=uuid.uuid4().hex, created_at=now - i, updated_at=now,
                     status=status, resources={"cpu": 2.0, "memory_mb": 4096}, runtime_state=state)


def _ms(values: list[float]) -> float:
    return median(values) * 1000


# -- in the agent ----------------------------------------------------------------------------------

async def _in_agent(root: Path) -> list[Row]:
    load_operations()
    agent = Agent(parse_config({"data_dir": str(root / "data"), "usage": {"kernels": False, "interval": "60s"},
                                "users": [{"name": "bob", "role": "user", "api_key_verifier": "0" * 64}]},
                               path=root / "agent.yaml"))
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, agent.store.open)
    try:
        return [*_metrics_render(agent, root), *await _home_render(agent, root), *await _sweeps(agent, root),
                *await _report(agent, root)]
    finally:
        await loop.run_in_executor(None, agent.store.close)


def _render_times(agent: Agent, n: int) -> list[float]:
    out = []
    for _ in range(n + 3):
        t = time.perf_counter()
        agent.services.metrics.render()
        out.append(time.perf_counter() - t)
    return out[3:]


def _metrics_render(agent: Agent, root: Path) -> list[Row]:
    empty = _render_times(agent, 40)
    usage = usage_of(agent)
    statuses = ["running"] * 3 + ["stopped"] * 6 + ["failed"]
    for i in range(N_METRICS):
        ws = _ws(i, "bob", statuses[i % len(statuses)], root / "m", {"pid": 1} if i % 10 < 3 else None)
        agent.workspaces[ws.name] = ws
        if ws.status == "running":
            usage.all_latest()[ws.id] = {"ts": time.time(), "cpu_cores": 0.5, "memory_bytes": 2e9,
                                         "memory_limit_bytes": 4 * 2**30, "gpu_utilization": None,
                                         "disk_bytes": 1e8, "kernel_states": {"idle": 2, "busy": 1}}
    full = _render_times(agent, 40)
    agent.services.metrics.workspace_labels = True
    labelled = _render_times(agent, 40)
    size = len(agent.services.metrics.render())
    agent.services.metrics.workspace_labels = False
    agent.workspaces.clear()
    usage.all_latest().clear()
    return [
        Row("/metrics render, 1000 workspaces (p50)", _ms(full), "ms", "no workspaces", _ms(empty), "<= 20 ms"),
        Row("/metrics render, 1000 ws, workspace labels on (p50)", _ms(labelled), "ms", "no workspaces", _ms(empty)),
        Row("  its size (workspace labels on)", size / 1024, "KiB"),
    ]


async def _home_render(agent: Agent, root: Path) -> list[Row]:
    """The home page's HTML for 100 running workspaces, each with its last 60 samples in memory
    (the real agent process below can only hold stopped ones: 100 JupyterLabs do not fit here)."""
    from fetchml_agent.store.access import SessionRow
    from fetchml_agent.usage.service import RECENT
    from fetchml_agent.web.app import _CHARTS, _Page, render_home

    usage = usage_of(agent)
    bob = next(u for u in agent.config.users if u.name == "bob")
    now = time.time()
    for i in range(N_HOME):
        ws = _ws(i, "bob", "running", root / "h", {"pid": 1})
        ws.url = f"http://127.0.0.1:{20000 + i}/"
        agent.workspaces[ws.name] = ws
        usage.all_latest()[ws.id] = {"ts": now, "cpu_cores": 0.4, "memory_bytes": 1.5e9, "memory_limit_bytes": 4 * 2**30,
                                     "kernel_states": {"idle": 1}, "oom_kills": 0}
        usage._recent[ws.id] = deque(((now - (RECENT - k) * 60, 0.1 * (k % 7), 1e9 + k * 1e7)
                                      for k in range(RECENT)), maxlen=RECENT)
    page = _Page(bob, SessionRow("s1", "bob", "", "", "api_key", False, "127.0.0.1", now, now), "fmls.bench")

    async def no_calls(*_: Any) -> Any:
        raise AssertionError("bob is no admin: the page calls no operation")

    async def once(cold: bool) -> float:
        if cold:
            _CHARTS.clear()  # as after a sweep: every chart drawn anew
        t = time.perf_counter()
        body = await render_home(agent, page, no_calls, "")
        seconds = time.perf_counter() - t
        assert body.count('class="chart small') == 2 * N_HOME
        return seconds

    await once(True)
    cold = [await once(True) for _ in range(10)]
    warm = [await once(False) for _ in range(20)]
    agent.workspaces.clear()
    usage.all_latest().clear()
    usage._recent.clear()
    return [Row(f"home page HTML, {N_HOME} running workspaces, charts drawn (p50)", _ms(cold), "ms",
                "charts cached", _ms(warm), "<= 50 ms (TTFB)")]


async def _sweep_time(agent: Agent, n: int) -> float:
    usage = usage_of(agent)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        await usage.sweep()
        times.append(time.perf_counter() - t)
    return median(times)


async def _sweeps(agent: Agent, root: Path) -> list[Row]:
    base = await _sweep_time(agent, 15)
    kids = [subprocess.Popen(["sleep", "600"]) for _ in range(N_SWEEP)]
    try:
        for i, p in enumerate(kids):
            ws = _ws(i, "bob", "running", root / "s", {"pid": p.pid, "start_time": procs.start_time(p.pid)})
            (Path(ws.path) / "data.bin").write_bytes(b"\0" * 65536)
            agent.workspaces[ws.name] = ws
        await _sweep_time(agent, 2)  # the first sweep of each workspace reads its recorded OOM count
        full = await _sweep_time(agent, 15)
        assert usage_of(agent).last_sweep["samples"] == N_SWEEP, usage_of(agent).last_sweep
    finally:
        for p in kids:
            p.kill()
            p.wait()
        agent.workspaces.clear()
    per = (full - base) / N_SWEEP
    host = sum(1 for e in os.listdir("/proc") if e.isdigit())
    return [
        Row(f"sampling sweep, {N_SWEEP} running workspaces (p50)", full * 1000, "ms", "no workspaces", base * 1000),
        # The local runtime finds a workspace's processes by a scan of /proc: O(host processes) each.
        Row(f"  per workspace per interval ({host} processes on the host)", per * 1e6, "us"),
        Row("  workspaces one core could sample in a 60 s interval", 60 / per if per > 0 else 0.0, "ws"),
    ]


async def _report(agent: Agent, root: Path) -> list[Row]:
    now = time.time()
    ws = _ws(0, "bob", "stopped", root / "r")
    agent.workspaces[ws.name] = ws
    await agent.store.run(insert_workspace, ws)
    samples = [Sample(ws.id, now - 30 * DAY + i * 60, cpu_cores=0.2 + (i % 97) / 100, cpu_limit_cores=2.0,
                      memory_bytes=1e9 + (i % 1013) * 1e6, memory_peak_bytes=1.5e9, memory_limit_bytes=4 * 2**30,
                      disk_bytes=1e8, processes=5, kernels=2, busy_kernels=i % 2)
               for i in range(int(30 * DAY / 60))]
    await agent.store.run(insert_samples, samples)
    await agent.store.run(rollup, now, 2 * DAY, 14 * DAY)
    op = OPERATIONS[Opcode.WORKSPACE_REPORT]
    call = Call(next(u for u in agent.config.users if u.name == "bob"), "http")

    async def once(since: str, fmt: str) -> float:
        t = time.perf_counter()
        result = await op.run(agent, call, op.validate({"name": ws.name, "since": since, "format": fmt}))
        assert "memory" in result.data["content"] and len(result.data["content"]) > 300
        return time.perf_counter() - t

    async def times(since: str, fmt: str, n: int = 12) -> list[float]:
        await once(since, fmt)
        return [await once(since, fmt) for _ in range(n)]

    html30, html1 = await times("30d", "html"), await times("24h", "html")
    text30 = await times("30d", "text")
    return [
        Row("report html, 30 days of samples (p50)", _ms(html30), "ms", "last 24 h", _ms(html1), "<= 500 ms"),
        Row("report text, 30 days of samples (p50)", _ms(text30), "ms", "html, 30 days", _ms(html30)),
    ]


# -- a real agent process --------------------------------------------------------------------------

def _ttfb(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[float, int]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        t = time.perf_counter()
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()  # returns once the status line and headers are in
        first = time.perf_counter() - t
        response.read()
        return first, response.status
    finally:
        conn.close()


def _interleaved(port: int, targets: dict[str, tuple[str, dict[str, str]]], n: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in targets}
    for i in range(n + 5):
        for name, (path, headers) in targets.items():
            seconds, status = _ttfb(port, path, headers)
            assert status == 200, (name, status)
            if i >= 5:
                out[name].append(seconds)
    return out


def _login(port: int, user: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    body = urllib.parse.urlencode({"user": user, "key": KEYS[user], "next": "/"})
    conn.request("POST", "/login", body=body, headers={"content-type": "application/x-www-form-urlencoded"})
    response = conn.getresponse()
    response.read()
    cookie = response.getheader("set-cookie") or ""
    assert response.status == 303 and cookie, (response.status, cookie)
    return cookie.split(";", 1)[0]


def _seed(agent: AgentProcess, workspaces: list[Workspace]) -> None:
    store = Store(agent.data_dir / "agent.db")
    store.open()
    try:
        for ws in workspaces:
            store.run_sync(insert_workspace, ws)
    finally:
        store.close()


def _agent_process(root: Path) -> list[Row]:
    agent = AgentProcess(root / "agent", free_port(), {"usage": {"interval": "2s"}})
    agent.start()  # once, for its store's schema
    agent.stop()
    _seed(agent, [_ws(i, "bob", "stopped", root / "home") for i in range(N_HOME)])
    rows: list[Row] = []
    with agent.running():
        cookie = _login(agent.port, "bob")
        t = _interleaved(agent.port, {"home": ("/", {"cookie": cookie}), "health": ("/api/v1/health", {}),
                                      "login": ("/login", {})}, 200)
        assert b"bench-0099" in _page(agent.port, "/", cookie)
        rows += [
            Row(f"home page TTFB, {N_HOME} workspaces (p50)", _ms(t["home"]), "ms", "GET /api/v1/health",
                _ms(t["health"]), "<= 50 ms"),
            Row(f"home page TTFB, {N_HOME} workspaces (p99)", percentile(t["home"], 99) * 1000, "ms",
                "the login page (p99)", percentile(t["login"], 99) * 1000),
        ]
        # A real JupyterLab workspace: the sweep as the agent records it (kernels asked over HTTP).
        agent.ml("jupyter", "create", "bench-lab", user="bob")
        sweeps = []
        deadline = time.monotonic() + 60
        seen: set[float] = set()
        while len(sweeps) < 8 and time.monotonic() < deadline:
            last = agent.ml_json("status", user="admin").get("usage", {}).get("last_sweep", {})
            if last.get("samples") == 1 and last["at"] not in seen:
                seen.add(last["at"])
                sweeps.append(last["seconds"])
            time.sleep(1)
        if sweeps:
            rows.append(Row("sweep of 1 JupyterLab workspace, kernels asked (p50)", median(sweeps) * 1000, "ms"))
        agent.ml("jupyter", "delete", "bench-lab", "--yes", user="bob")
    agent.stop()
    _seed(agent, [_ws(i, "carol", ["stopped", "failed"][i % 2], root / "more") for i in range(N_HOME, N_METRICS)])
    with agent.running():
        headers = {"authorization": f"Bearer {KEYS['admin']}"}
        t = _interleaved(agent.port, {"metrics": ("/metrics", headers), "health": ("/api/v1/health", {})}, 200)
        rows.append(Row(f"GET /metrics over HTTP, {N_METRICS} workspaces (p50)", _ms(t["metrics"]), "ms",
                        "GET /api/v1/health", _ms(t["health"]), "<= 20 ms"))
        cookie = _login(agent.port, "bob")
        t = _interleaved(agent.port, {"home": ("/", {"cookie": cookie})}, 100)
        rows.append(Row(f"home page TTFB, {N_HOME} own among {N_METRICS} (p50)", _ms(t["home"]), "ms"))
    return rows


def _page(port: int, path: str, cookie: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path, headers={"cookie": cookie})
    body = conn.getresponse().read()
    conn.close()
    return body


def main() -> list[Row]:
    root = Path(tempfile.mkdtemp(prefix="fetchml-bench-observe-"))
    try:
        rows = asyncio.run(_in_agent(root / "in-agent"))
        rows += _agent_process(root / "process")
        return rows
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    from benchmarks.common import print_rows

    print_rows(TITLE, main())
    print(json.dumps({"ok": True}))
