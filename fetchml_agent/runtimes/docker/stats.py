"""A container's resource use, read from its cgroup (or the engine's stats API)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from ...aio import run_blocking
from ...errors import (
    InvalidState,
    NotFound,
)
from ..base import (
    State,
)
from .common import DockerBase, _docker_errors


class StatsMixin(DockerBase):
    """Resource use of a workspace's container."""

    async def stats(self, state: State) -> dict[str, Any]:
        """CPU (percent of one core, over 0.25 s), memory, processes of the container now.

        Read from the container's cgroup files when the agent shares the host's /proc (the
        usual single-host case, and the only one that works where dockerd reports empty stats),
        else from the engine's stats API.
        """
        container = await run_blocking(self._container, state)
        if container is None:
            raise NotFound("the workspace's container is gone")
        if container.status != "running":
            raise InvalidState(f"container {container.name} is not running")
        cstate = container.attrs.get("State", {})
        pid = int(cstate.get("Pid") or 0)
        # The usage history's restarts and OOM kills (issue 17): the engine's restart count, and
        # the cgroup's OOM-kill counter (or, where it is not readable, the container's OOMKilled).
        extra: dict[str, Any] = {"restarts": int(container.attrs.get("RestartCount") or 0)}
        if cstate.get("OOMKilled"):
            extra["oom_killed"] = True
        first = await run_blocking(_cgroup_sample, pid)
        if first is not None:
            t0 = time.monotonic()
            await asyncio.sleep(0.25)
            second = await run_blocking(_cgroup_sample, pid)
            if second is not None:
                elapsed_ns = (time.monotonic() - t0) * 1e9
                cpu = max(0, second["cpu_ns"] - first["cpu_ns"]) / elapsed_ns * 100.0
                out = {
                    "cpu_percent": round(cpu, 2),
                    "memory_mb": second["memory_mb"],
                    "memory_limit_mb": second["memory_limit_mb"],
                    "pids": second["pids"],
                    **extra,
                }
                if second.get("oom_kills") is not None:
                    out["oom_kills"] = second["oom_kills"]
                return out

        def sample() -> dict[str, Any]:
            with _docker_errors(f"reading stats of {container.name}"):
                return self.client.api.stats(container.id, stream=False)

        s = await run_blocking(sample)
        cpu, pre = s.get("cpu_stats") or {}, s.get("precpu_stats") or {}
        cpu_delta = cpu.get("cpu_usage", {}).get("total_usage", 0) - pre.get("cpu_usage", {}).get(
            "total_usage", 0
        )
        sys_delta = (cpu.get("system_cpu_usage") or 0) - (pre.get("system_cpu_usage") or 0)
        ncpu = cpu.get("online_cpus") or 1
        mem = s.get("memory_stats") or {}
        cache = (mem.get("stats") or {}).get("total_inactive_file", 0)
        return {
            "cpu_percent": round(cpu_delta / sys_delta * ncpu * 100.0, 2) if sys_delta > 0 else None,
            "memory_mb": round(max(0, mem.get("usage", 0) - cache) / 2**20, 1) if mem else None,
            "memory_limit_mb": round(mem["limit"] / 2**20, 1) if mem.get("limit") else None,
            "pids": (s.get("pids_stats") or {}).get("current"),
            **extra,
        }



def _cgroup_sample(pid: int) -> dict[str, Any] | None:
    """CPU time, memory and pids of the cgroup of process ``pid`` (cgroup v1 or v2), or None."""
    try:
        lines = open(f"/proc/{pid}/cgroup").read().splitlines() if pid else []
    except OSError:
        return None
    paths: dict[str, str] = {}
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for ctrl in controllers.split(",") if controllers else ["unified"]:
            paths[ctrl] = path

    def read(*candidates: str) -> str | None:
        for c in candidates:
            with contextlib.suppress(OSError):
                return open(c).read()
        return None

    root = "/sys/fs/cgroup"
    if "memory" in paths:  # v1 (or hybrid)
        usage = read(f"{root}/memory{paths['memory']}/memory.usage_in_bytes")
        limit = read(f"{root}/memory{paths['memory']}/memory.limit_in_bytes")
        stat = read(f"{root}/memory{paths['memory']}/memory.stat") or ""
        cpu = read(f"{root}/cpuacct{paths.get('cpuacct', '')}/cpuacct.usage")
        pids = read(f"{root}/pids{paths.get('pids', '')}/pids.current")
        inactive = next(
            (int(x.split()[1]) for x in stat.splitlines() if x.startswith("total_inactive_file ")), 0
        )
        if usage is None or cpu is None:
            return None
        cpu_ns = int(cpu)
        oom = _counter(read(f"{root}/memory{paths['memory']}/memory.oom_control"), "oom_kill")
        mem = max(0, int(usage) - inactive)
        lim = int(limit) if limit else 0
        lim_mb = round(lim / 2**20, 1) if 0 < lim < 2**60 else None
    else:
        base = f"{root}{paths.get('unified', '')}"
        usage = read(f"{base}/memory.current")
        limit = read(f"{base}/memory.max")
        cpu_stat = read(f"{base}/cpu.stat")
        pids = read(f"{base}/pids.current")
        if usage is None or cpu_stat is None:
            return None
        usec = next((int(x.split()[1]) for x in cpu_stat.splitlines() if x.startswith("usage_usec ")), 0)
        cpu_ns = usec * 1000
        oom = _counter(read(f"{base}/memory.events"), "oom_kill")
        mem = int(usage)
        lim_mb = round(int(limit) / 2**20, 1) if limit and limit.strip() != "max" else None
    return {
        "cpu_ns": cpu_ns,
        "memory_mb": round(mem / 2**20, 1),
        "memory_limit_mb": lim_mb,
        "pids": int(pids) if pids else None,
        "oom_kills": oom,
    }


def _counter(text: str | None, key: str) -> int | None:
    """``key N`` from a cgroup file of such lines (memory.events, memory.oom_control)."""
    for line in (text or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return None


