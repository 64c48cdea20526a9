"""Capacity (issue #16) below the agent: the culling rule, GPU utilization from nvidia-smi pmon
(fixtures transcribed from NVIDIA's documented layout: tests/data/nvidia-smi/README.md) and from
Nomad's device stats, agent.yaml's culling:/quotas:/warm_pool: sections."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fetchml_agent import procs
from fetchml_agent.config import ConfigError, parse_config
from fetchml_agent.errors import BackendUnavailable
from fetchml_agent.gpus import parse_pmon, process_utilization
from fetchml_agent.runtimes.host_gpus import container_of
from fetchml_agent.runtimes.local.gpu import LocalGpuActivity
from fetchml_agent.runtimes.nomad.gpu import device_utilization
from fetchml_agent.service.capacity.activity import ActivityBook
from fetchml_agent.service.capacity.culling import Facts, decide
from fetchml_agent.service.capacity.settings import CullingSettings, parse_capacity

FIXTURES = Path(__file__).parents[1] / "data" / "nvidia-smi"
S = CullingSettings(idle_timeout=3600, gpu_idle_timeout=600, max_age=None, check_interval=60, warn_before=300)


def _fixture(name: str, tmp_path: Path, **pids: int) -> Path:
    text = (FIXTURES / name).read_text()
    for key, pid in pids.items():
        text = text.replace("{" + key + "}", str(pid))
    out = tmp_path / name
    out.write_text(text)
    return out


# -- the culling rule ---------------------------------------------------------------------------


def _seen(now: float, **kw: object) -> object:
    book = ActivityBook()
    return book.report("ws-1", {"request_age_s": None, **kw}, now=now)


def test_a_busy_kernel_is_never_idle_whatever_the_time() -> None:
    now = 1_000_000.0
    seen = _seen(now, kernels=1, busy_kernels=1)
    v = decide(Facts(now=now, started_at=now - 30 * 86400, seen=seen), S)  # type: ignore[arg-type]
    assert v.active == ("1 kernel(s) busy",) and v.idle_since is None and v.cull_at is None


def test_untouched_workspace_is_culled_idle_timeout_after_its_start_and_warned_before() -> None:
    now = 1_000_000.0
    seen = _seen(now, kernels=0)
    v = decide(Facts(now=now, started_at=now - 100, seen=seen), S)  # type: ignore[arg-type]
    assert v.active == () and v.idle_since == now - 100
    assert v.cull_at == now - 100 + 3600 and v.why == "idle" and v.warn_at == v.cull_at - 300


def test_a_person_a_run_or_a_silent_server_keeps_it_active() -> None:
    now = 1_000_000.0
    person = _seen(now, request_age_s=10, person="alice", kind="api")
    v = decide(Facts(now=now, started_at=now - 7200, seen=person), S)  # type: ignore[arg-type]
    assert v.idle_since == now - 10 and v.cull_at == now - 10 + 3600 and v.last_person == "alice"
    v = decide(Facts(now=now, started_at=now - 7200, seen=_seen(now), runs=("run-1",)), S)  # type: ignore[arg-type]
    assert v.active and "experiment run" in v.active[0] and v.cull_at is None
    quiet = _seen(now - 600)
    v = decide(Facts(now=now, started_at=now - 7200, seen=quiet), S)  # type: ignore[arg-type]
    assert "stopped reporting" in v.active[0]
    v = decide(Facts(now=now, started_at=now - 7200, watching_since=now - 7200), S)
    assert "has not reported its activity" in v.active[0]


def test_max_age_culls_even_an_active_workspace() -> None:
    now = 1_000_000.0
    s = CullingSettings(idle_timeout=3600, max_age=86400)
    v = decide(Facts(now=now, started_at=now - 86400 - 1, seen=_seen(now, busy_kernels=1)), s)  # type: ignore[arg-type]
    assert v.active and v.why == "max_age" and v.cull_at == now - 1


def test_gpu_workspaces_get_the_shorter_timeout_and_gpu_use_is_activity() -> None:
    now = 1_000_000.0
    seen = _seen(now)
    idle = decide(Facts(now=now, started_at=now - 100, holds_gpu=True, seen=seen, gpu_util=1.0), S)  # type: ignore[arg-type]
    assert idle.active == () and idle.cull_at == now - 100 + 600
    busy = decide(Facts(now=now, started_at=now - 100, holds_gpu=True, seen=seen, gpu_util=47.0), S)  # type: ignore[arg-type]
    assert busy.active == ("its processes use 47% of a GPU (idle below 5%)",)
    unknown = decide(Facts(now=now, started_at=now - 100, holds_gpu=True, seen=seen, gpu_unknown=True), S)  # type: ignore[arg-type]
    assert unknown.active == ("its GPU utilization cannot be measured now",)


def test_activity_reports_are_validated() -> None:
    book = ActivityBook()
    from fetchml_agent.errors import InvalidArgument

    for bad in ({"busy_kernels": -1}, {"request_age_s": "soon"}, {"kind": "magic"}, {"kernels": True}):
        with pytest.raises(InvalidArgument):
            book.report("ws-1", bad)
    assert book.get("ws-1") is None


# -- GPU utilization: nvidia-smi pmon ----------------------------------------------------------------


def test_parse_pmon_layouts() -> None:
    r470 = parse_pmon((FIXTURES / "pmon-r470.txt").read_text().format(BUSY=11, OTHER=12, IDLE=13))
    assert r470 == [(0, 11, 83.0), (0, 12, 60.0), (1, 13, None)]
    r535 = parse_pmon((FIXTURES / "pmon-r535.txt").read_text().format(BUSY=11, OTHER=12, IDLE=13))
    assert r535 == [(0, 11, 47.0), (1, 11, 12.0), (1, 13, 0.0), (2, 12, 99.0)]
    um = parse_pmon((FIXTURES / "pmon-r535-um.txt").read_text().format(BUSY=11, IDLE=13))
    assert um == [(0, 11, 30.0), (0, 13, None)]
    with pytest.raises(ValueError, match="header"):
        parse_pmon("0 11 C 5 5 - - python\n")


def test_process_utilization_runs_the_command_and_fails_loudly(tmp_path: Path) -> None:
    path = _fixture("pmon-r535.txt", tmp_path, BUSY=11, OTHER=12, IDLE=13)
    assert process_utilization(["cat", str(path)]) == {11: {0: 47.0, 1: 12.0}, 13: {1: 0.0}, 12: {2: 99.0}}
    with pytest.raises(OSError, match="failed"):
        process_utilization(["false"])


@pytest.fixture
def two_servers() -> Iterator[tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], list[int]]]:
    """Two 'servers', each with a child (as JupyterLab has kernels): real processes."""
    code = ("import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
            "print(c.pid, flush=True); time.sleep(60)")
    a = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    b = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        children = [int(p.stdout.readline()) for p in (a, b)]  # type: ignore[union-attr]
        yield a, b, children
    finally:
        for p, c in zip((a, b), children, strict=True):
            with contextlib.suppress(ProcessLookupError):
                os.kill(c, signal.SIGKILL)
            p.kill()
            p.wait()


def test_local_gpu_activity_by_process_ancestry(tmp_path: Path, two_servers: tuple) -> None:
    a, b, (kernel_a, kernel_b) = two_servers
    states = {"ws-a": {"pid": a.pid, "start_time": procs.start_time(a.pid)},
              "ws-b": {"pid": b.pid, "start_time": procs.start_time(b.pid)}}
    runtime = LocalGpuActivity()
    runtime.pmon_command = ["cat", str(_fixture("pmon-r535.txt", tmp_path, BUSY=kernel_a, IDLE=kernel_b, OTHER=1))]
    util = asyncio.run(runtime.gpu_utilization(states))
    assert util == {"ws-a": 47.0, "ws-b": 0.0}  # pid 1 (OTHER) is nobody's workspace
    facts = [Facts(now=1e6, started_at=1e6 - 900, holds_gpu=True, seen=_seen(1e6), gpu_util=util[w])  # type: ignore[arg-type]
             for w in ("ws-a", "ws-b")]
    assert decide(facts[0], S).active and decide(facts[1], S).active == ()
    runtime.pmon_command = ["false"]
    with pytest.raises(BackendUnavailable):
        asyncio.run(runtime.gpu_utilization(states))


def test_docker_gpu_activity_finds_the_container_by_cgroup(tmp_path: Path) -> None:
    cid = "4f1c" * 16
    for pid, text in ((100, f"0::/system.slice/docker-{cid}.scope\n"),
                      (101, f"12:memory:/docker/{cid}\n11:cpu:/docker/{cid}\n"),
                      (102, "0::/user.slice/user-1000.slice/session-2.scope\n")):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cgroup").write_text(text)
    assert container_of(100, tmp_path) == cid and container_of(101, tmp_path) == cid
    assert container_of(102, tmp_path) is None and container_of(103, tmp_path) is None


def test_nomad_device_stats() -> None:
    # The shape of GET /v1/client/allocation/:id/stats with nomad-device-nvidia (its stats.go names).
    def inst(util: int) -> dict:
        return {"Stats": {"Attributes": {"GPU utilization": {"Unit": "%", "IntNumeratorVal": util}}}}

    doc = {"ResourceUsage": {"DeviceStats": [{"Vendor": "nvidia", "Type": "gpu", "Name": "H100",
                                             "InstanceStats": {"GPU-1": inst(12), "GPU-2": inst(64)}}]}}
    assert device_utilization(doc) == 64.0
    assert device_utilization({"ResourceUsage": {"DeviceStats": None}}) is None


# -- agent.yaml --------------------------------------------------------------------------------------


@pytest.mark.parametrize("doc, key", [
    ({"culling": {"action": "delete"}}, "culling.action"),
    ({"culling": {"idle_timeout": "soon"}}, "culling.idle_timeout"),
    ({"quotas": {"default": {"memory": "lots"}}}, "quotas.default.memory"),
    ({"quotas": {"users": {"bob": {"gpu": -1}}}}, "quotas.users.bob.gpu"),
    ({"warm_pool": {"profiles": [{"name": "a"}, {"name": "a"}]}}, "warm_pool.profiles"),
    ({"warm_pool": {"size": "two"}}, "warm_pool.size"),
])
def test_bad_capacity_config_names_the_key(tmp_path: Path, doc: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(doc, path=tmp_path / "agent.yaml")
    assert key in str(info.value)


def test_capacity_config_values(tmp_path: Path) -> None:
    cfg = parse_config({
        "culling": {"idle_timeout": "2h", "gpu_idle_timeout": "30m", "check_interval": "30s", "action": "kernels"},
        "quotas": {"default": {"running": 2, "memory": "8g"}, "users": {"alice": {"running": 5}}},
        "warm_pool": {"size": 2, "profiles": [{"name": "gpu-small", "cpu": 4, "memory": "8g", "gpu": 1}]},
    }, path=tmp_path / "agent.yaml")
    cap = parse_capacity(cfg)
    assert cap.culling.idle_timeout == 7200 and cap.culling.timeout_for(True) == 1800 and cap.culling.action == "kernels"
    assert cap.quotas.for_user("alice").running == 5 and cap.quotas.for_user("alice").memory_mb == 8192
    assert cap.quotas.for_user("bob").running == 2
    assert [(p.name, p.size, p.resources.gpu) for p in cap.pools] == [("default", 2, 0), ("gpu-small", 1, 1)]
