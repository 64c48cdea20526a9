"""``ml status``'s GPU section: the backend's nodes' GPUs per node and type, with how many are free,
from a runtime that reports them (:class:`~fetchml_agent.runtimes.base.DeviceInventory`: Nomad)."""

from __future__ import annotations

from typing import Any

from ..errors import FetchmlError
from ..runtimes.base import DeviceInventory, find_capability
from .calls import Call
from .context import AgentContext

__all__ = ["status_section"]


async def status_section(agent: AgentContext, call: Call) -> dict[str, Any]:
    """``{"devices": {"gpus": [...], "note": ...}}``, or nothing when the runtime has no such view."""
    inventory = find_capability(agent.runtime, DeviceInventory)
    if inventory is None:
        return {}
    try:
        return {"devices": await inventory.device_inventory()}
    except FetchmlError as exc:
        return {"devices": {"gpus": [], "note": f"could not read the GPUs: {exc.message}"}}
