"""How busy docker workspaces' GPUs are: their processes in ``nvidia-smi pmon``, by cgroup."""

from __future__ import annotations

from collections.abc import Mapping

from ..base import GpuActivity, State
from ..host_gpus import container_of, utilization_by_owner

__all__ = ["DockerGpuActivity"]


class DockerGpuActivity(GpuActivity):
    """A GPU process (pmon shows host pids) belongs to the workspace whose container's cgroup
    holds it."""

    #: The pmon command line (``None``: nvidia-smi on the PATH); tests replay recorded output.
    pmon_command: list[str] | None = None

    async def gpu_utilization(self, states: Mapping[str, State]) -> dict[str, float]:
        containers = {str(s["container_id"]): wid for wid, s in states.items() if s.get("container_id")}
        if not containers:
            return {}

        def owner_of(pid: int) -> str | None:
            cid = container_of(pid)
            return containers.get(cid) if cid else None

        return await utilization_by_owner(owner_of, self.pmon_command)
