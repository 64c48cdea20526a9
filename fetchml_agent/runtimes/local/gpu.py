"""How busy local workspaces' GPUs are: their processes in ``nvidia-smi pmon``, by ancestry."""

from __future__ import annotations

from collections.abc import Mapping

from ... import procs
from ..base import GpuActivity, State
from ..host_gpus import utilization_by_owner

__all__ = ["LocalGpuActivity"]


class LocalGpuActivity(GpuActivity):
    """A GPU process belongs to the workspace whose JupyterLab it descends from (its kernels,
    what they start, runs launched from it)."""

    #: The pmon command line (``None``: nvidia-smi on the PATH); tests replay recorded output.
    pmon_command: list[str] | None = None

    async def gpu_utilization(self, states: Mapping[str, State]) -> dict[str, float]:
        servers = {int(s["pid"]): wid for wid, s in states.items()
                   if s.get("pid") and procs.alive(s.get("pid"), s.get("start_time"))}
        if not servers:
            return {}

        def owner_of(pid: int) -> str | None:
            for p in (pid, *procs.ancestors(pid)):
                if p in servers:
                    return servers[p]
            return None

        return await utilization_by_owner(owner_of, self.pmon_command)
