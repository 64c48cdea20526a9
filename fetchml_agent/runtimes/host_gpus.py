"""The GPU utilization of workspaces' processes on this host (the local and docker runtimes'
:class:`~fetchml_agent.runtimes.base.GpuActivity`).

One ``nvidia-smi pmon`` sample gives each GPU process's SM utilization by host pid
(:func:`fetchml_agent.gpus.process_utilization`); a runtime says which workspace a pid belongs to:
the local runtime by the process's ancestry (a kernel descends from its workspace's JupyterLab),
the docker runtime by the process's cgroup (:func:`container_of`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from ..aio import run_blocking
from ..errors import BackendUnavailable
from ..gpus import process_utilization

__all__ = ["container_of", "utilization_by_owner"]

# cgroupfs (v1 and v2): ``/docker/<id>``; the systemd driver: ``/system.slice/docker-<id>.scope``.
_CONTAINER = re.compile(r"docker[-/]([0-9a-f]{64})(?:\.scope)?\b")


def container_of(pid: int, proc: Path = Path("/proc")) -> str | None:
    """The id of the Docker container whose cgroup holds ``pid``, or ``None`` (not in one, or gone)."""
    try:
        text = (proc / str(pid) / "cgroup").read_text()
    except OSError:
        return None
    m = _CONTAINER.search(text)
    return m.group(1) if m else None


def _sample(owner_of: Callable[[int], str | None], command: list[str] | None) -> dict[str, float]:
    per: dict[str, dict[int, float]] = {}
    for pid, gpus in process_utilization(command).items():
        owner = owner_of(pid)
        if owner is None:
            continue
        mine = per.setdefault(owner, {})
        for gpu, util in gpus.items():
            mine[gpu] = mine.get(gpu, 0.0) + util
    return {owner: max(gpus.values()) for owner, gpus in per.items()}


async def utilization_by_owner(owner_of: Callable[[int], str | None], command: list[str] | None = None
                               ) -> dict[str, float]:
    """``{owner: percent}``: per owner (``owner_of(pid)``, ``None`` for a process of nobody's), the
    busiest of its GPUs, its processes' SM utilization summed per GPU. ``command``: the pmon
    command line (default ``nvidia-smi pmon -c 1 -s u``). Raises BackendUnavailable when
    nvidia-smi cannot be asked."""
    try:
        return await run_blocking(_sample, owner_of, command)
    except OSError as exc:
        raise BackendUnavailable("cannot measure GPU utilization", str(exc)) from exc
