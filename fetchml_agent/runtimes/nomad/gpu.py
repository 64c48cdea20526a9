"""How busy Nomad workspaces' GPUs are: the allocation's device stats (nomad-device-nvidia).

Nomad's NVIDIA device plugin reports, per device instance the allocation holds, a ``GPU
utilization`` attribute (percent) in ``GET /v1/client/allocation/:id/stats``
(``ResourceUsage.DeviceStats[].InstanceStats[<device id>].Stats.Attributes``). A device is the
allocation's alone, so its utilization is the workspace's processes'.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from ..base import GpuActivity, State

__all__ = ["NomadGpuActivity", "device_utilization"]


def device_utilization(stats: dict[str, Any]) -> float | None:
    """The busiest GPU's utilization in an allocation stats document; ``None`` when it reports
    none (no devices, or a plugin that measures none, such as MIG instances)."""
    best: float | None = None
    for group in (stats.get("ResourceUsage") or {}).get("DeviceStats") or []:
        for inst in (group.get("InstanceStats") or {}).values():
            attr = (((inst or {}).get("Stats") or {}).get("Attributes") or {}).get("GPU utilization") or {}
            value = attr.get("IntNumeratorVal", attr.get("FloatNumeratorVal"))
            if isinstance(value, (int, float)):
                best = float(value) if best is None else max(best, float(value))
    return best


class NomadGpuActivity(GpuActivity):
    """Per workspace, the device stats of its allocation."""

    client: Any

    async def gpu_utilization(self, states: Mapping[str, State]) -> dict[str, float]:
        ids = [(wid, s["alloc_id"]) for wid, s in states.items() if s.get("alloc_id")]
        docs = await asyncio.gather(*(self.client.allocation_stats(alloc) for _, alloc in ids))
        out: dict[str, float] = {}
        for (wid, _), doc in zip(ids, docs, strict=True):
            util = device_utilization(doc)
            if util is not None:
                out[wid] = util
        return out
