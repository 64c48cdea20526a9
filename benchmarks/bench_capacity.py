"""Capacity (issue #16): warm pool claims against cold creates, idle members' memory, one culling sweep.

    python -m benchmarks capacity

1. create -> ready on the local runtime (``local.isolation: none``) and on docker, through a real agent: the time from sending the create
   (the agent's own client, no CLI start-up) until the owner's authenticated ``GET /api/status``
   (their personal token) answers 200. A claim from ``warm_pool: {size: 2}`` against a cold create
   (``--cpu 1``, which no pool matches) in the same run. Targets: claim p95 <= 300 ms and
   <= 0.15x the cold p50.
2. Memory of an idle pool member: a local member's process tree (RSS); a docker member's
   container (cgroup, as ``docker stats``).
3. One culling sweep (:meth:`Culler.sweep`: the decision for every running workspace, one SQLite
   query for the runs) over 1,000 running workspaces with activity reports. Target <= 50 ms.

Needs root, Docker, nft and the workspace image for the docker rows (skipped, and said, otherwise);
everything made is named ``fmlbench-cap-*`` and removed. Asserts nothing.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from benchmarks.common import Row, percentile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TITLE = "capacity: warm pool claims, idle members, culling sweep"
PREFIX = f"fmlbench-cap-{os.getpid()}"
TABLE = f"fmlbench_cap_{os.getpid()}"
CLAIMS = int(os.environ.get("BENCH_CAPACITY_CLAIMS", "6"))
COLDS = int(os.environ.get("BENCH_CAPACITY_COLDS", "3"))


def _status_ok(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    token = urllib.parse.parse_qs(parts.query)["token"][0]
    req = urllib.request.Request(f"http://127.0.0.1:{parts.port}/api/status", headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _create_to_ready(client: Any, name: str, extra: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    from fetchml_agent.protocol.opcodes import Opcode

    t0 = time.perf_counter()
    doc = client.call(Opcode.CREATE_WORKSPACE, {"name": name, **extra}, timeout=600).data
    while not _status_ok(doc["url"]):
        time.sleep(0.005)
    return time.perf_counter() - t0, doc


def _wait_ready_members(client: Any, n: int, timeout: float = 600) -> None:
    from fetchml_agent.protocol.opcodes import Opcode

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pool = client.call(Opcode.AGENT_STATUS).data["capacity"]["pools"]["pools"][0]
        if pool["ready"] >= n:
            return
        time.sleep(0.25)
    raise TimeoutError(f"the pool did not refill: {pool}")


def _claim_then_cold(client: Any, claims: list[float], colds: list[float], n_cold: int) -> None:
    """CLAIMS creates that claim a member (each waits for a ready one), then ``n_cold`` that ask
    for something no profile has and start cold: create -> ready seconds appended to each list."""
    for i in range(CLAIMS):
        _wait_ready_members(client, 1)
        seconds, doc = _create_to_ready(client, f"claim-{i}", {})
        assert doc["start"]["kind"] == "claim", doc["start"]
        claims.append(seconds)
        print(f"  claim {i}: {seconds * 1000:.0f} ms (agent: {doc['start']['seconds'] * 1000:.0f} ms)", flush=True)
    for i in range(n_cold):
        seconds, doc = _create_to_ready(client, f"cold-{i}", {"cpu": 1})
        assert doc["start"]["kind"] == "cold", doc["start"]
        colds.append(seconds)


def _pool_rows(label: str, claims: list[float], colds: list[float], member_mb: list[float], memory: str) -> list[Row]:
    cold_p50 = percentile(colds, 50) * 1000
    return [
        Row(f"{label} create->ready, warm pool claim p50", percentile(claims, 50) * 1000, "ms",
            "cold create p50", cold_p50),
        Row(f"{label} create->ready, warm pool claim p95", percentile(claims, 95) * 1000, "ms",
            "cold create p50", cold_p50, "<= 300 ms and <= 0.15x cold"),
        Row(f"{label} create->ready, cold create p95", percentile(colds, 95) * 1000, "ms"),
        Row(f"memory of an idle {label} pool member ({memory})", sum(member_mb) / max(1, len(member_mb)), "MiB"),
    ]


def docker_rows() -> list[Row]:
    if os.geteuid() != 0 or subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        print("  (docker rows skipped: needs root and a Docker engine)")
        return []
    import docker

    from fetchml_agent.client import Client
    from tests.conftest import KEYS, AgentProcess, free_port

    image = "fetchml/workspace:" + __import__("fetchml_agent").__version__
    client = docker.from_env()
    tmp = Path(tempfile.mkdtemp(prefix="fmlbench-cap-"))
    agent = AgentProcess(tmp / "agent", free_port(), {
        "runtime": "docker",
        "docker": {"prefix": PREFIX, "firewall_table": TABLE, "image": image},
        "package_management": {"startup_blocked_packages": "off"},
        "warm_pool": {"size": 2},
    })
    claims: list[float] = []
    colds: list[float] = []
    member_mb: list[float] = []
    try:
        agent.start()
        c = Client(agent.ws_url, KEYS["bob"], timeout=600)
        _wait_ready_members(c, 2)
        for container in client.containers.list(filters={"label": [f"io.fetchml.instance={PREFIX}"]}):
            stats = container.stats(stream=False)
            mem = stats.get("memory_stats") or {}
            member_mb.append((mem.get("usage", 0) - (mem.get("stats") or {}).get("inactive_file", 0)) / 2**20)
        _claim_then_cold(c, claims, colds, COLDS)
        c.close()
    finally:
        agent.stop()
        label = {"label": [f"io.fetchml.instance={PREFIX}"]}
        for container in client.containers.list(all=True, filters=label):
            container.remove(force=True)
        for n in client.networks.list(filters=label):
            n.remove()
        for v in client.volumes.list(filters=label):
            v.remove(force=True)
        subprocess.run(["nft", "delete", "table", "inet", TABLE], capture_output=True)
    return _pool_rows("docker", claims, colds, member_mb, "container")


def local_rows(users: bool = False) -> list[Row]:
    """The local runtime's pool through a real agent: claim against a cold create in the same run,
    and the memory (RSS of the process tree) of an idle member. ``users``: under
    ``local.isolation: users`` (root only), where a member is a zygote (docs/warm-pool.md) and the
    claim includes the agent's users-mode steps; the owner's OS user exists already (a first
    cold create made it), as it does for anyone with a workspace before."""
    from fetchml_agent.client import Client
    from fetchml_agent.procs import start_time, tree_roots_with_env
    from fetchml_agent.runtimes.local.env import process_tree_stats
    from fetchml_agent.runtimes.local.pool import MARKER
    from fetchml_agent.runtimes.local.runtime import SERVER_ENV
    from tests.conftest import KEYS, AgentProcess, free_port
    from tests.integration.test_local_isolation import BASE_PYTHON, end_users_leftovers

    if users and os.geteuid() != 0:
        print("  (local.isolation: users rows skipped: switching users needs root)")
        return []
    tmp = Path(tempfile.mkdtemp(prefix="fmlbench-cap-local-"))
    extra: dict[str, Any] = {"package_management": {"startup_blocked_packages": "off"}, "warm_pool": {"size": 2}}
    prefix = f"fb{os.getpid() % 100000}-"
    table = f"fmlbench_{os.getpid()}_users"
    if users:
        os.chmod(tmp, 0o711)
        extra["local"] = {"isolation": "users", "workspaces_dir": str(tmp / "workspaces"),
                          "python": BASE_PYTHON,
                          "user_prefix": prefix, "uid_range": [64000, 64999], "firewall_table": table}
    agent = AgentProcess(tmp / "agent", free_port(), extra)
    label = "local (isolation: users, zygote)" if users else "local"
    claims: list[float] = []
    colds: list[float] = []
    member_mb: list[float] = []
    try:
        agent.start()
        c = Client(agent.ws_url, KEYS["bob"], timeout=600)
        _wait_ready_members(c, 2)
        run = (tmp / "workspaces" if users else agent.data_dir) / "run"
        colds.append(_create_to_ready(c, "cold-first", {"cpu": 1})[0])  # bob's OS user, with users
        for pid, env in tree_roots_with_env(SERVER_ENV, str(run) + os.sep):
            if (Path(env[SERVER_ENV]) / MARKER).exists():
                stats = process_tree_stats({"pid": pid, "start_time": start_time(pid)})
                member_mb.append(stats.get("memory_bytes", 0) / 2**20)
        _claim_then_cold(c, claims, colds, COLDS - 1)
        c.close()
    finally:
        agent.cleanup_workspaces()
        agent.stop()
        if users:
            end_users_leftovers(agent, tmp / "workspaces", prefix, table)
        shutil.rmtree(tmp, ignore_errors=True)
    return _pool_rows(label, claims, colds, member_mb, "RSS")


def sweep_rows(n: int = 1000) -> list[Row]:
    from fetchml_agent.service.capacity.activity import ActivityBook
    from fetchml_agent.service.capacity.culling import Culler
    from fetchml_agent.service.capacity.settings import CullingSettings
    from fetchml_agent.store import Store
    from fetchml_agent.store.workspaces import Workspace

    now = time.time()
    tmp = Path(tempfile.mkdtemp(prefix="fmlbench-cap-sweep-"))
    store = Store(tmp / "agent.db")
    store.open()
    book = ActivityBook()
    workspaces = {}
    for i in range(n):
        ws = Workspace(id=f"ws-{i:06x}", name=f"w{i}", owner=f"user{i % 50}", path=f"/tmp/w{i}", runtime="local",
                       token="t", index_key="k", created_at=now - 7200, updated_at=now, status="running",
                       started_at=now - 3600)
        workspaces[ws.name] = ws
        book.report(ws.id, {"request_age_s": float(i % 900), "person": ws.owner, "kind": "api", "kernels": i % 3,
                            "busy_kernels": int(i % 7 == 0)}, now=now)
    agent = SimpleNamespace(workspaces=workspaces, store=store, runtime=None)
    # A timeout nobody reaches here: the sweep decides for all and acts on none (acting is the runtime's cost).
    culler = Culler(agent, CullingSettings(idle_timeout=86400, check_interval=60), book)  # type: ignore[arg-type]

    async def sweeps() -> list[float]:
        out = []
        for _ in range(20):
            t = time.perf_counter()
            await culler.sweep(now)
            out.append(time.perf_counter() - t)
        return out

    times = asyncio.run(sweeps())
    store.close()
    return [Row(f"one culling sweep over {n} running workspaces, p50", percentile(times, 50) * 1000, "ms",
                target="<= 50 ms"),
            Row(f"one culling sweep over {n} running workspaces, p95", percentile(times, 95) * 1000, "ms")]


def main() -> list[Row]:
    return [*sweep_rows(), *local_rows(), *local_rows(users=True), *docker_rows()]


if __name__ == "__main__":
    from benchmarks.common import print_rows

    print_rows(TITLE, main())
