"""The service layer: every operation written once, called by both transports.

An operation is an async function ``handler(agent, call, args) -> Result`` registered with
:func:`~.registry.operation` under its opcode and its HTTP routes. The WebSocket transport finds
it by opcode, the HTTP transport by route; both authenticate first and hand over a :class:`Call`
whose ``progress``/``log`` go to the client as progress and log packets (or are dropped over
HTTP). ``args`` are validated against the operation's cerberus schema before the handler runs.
The agent reaches operations as :class:`~.context.AgentContext`, with its
:class:`~.context.Services`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..protocol.opcodes import Opcode
from .calls import Call, Result
from .registry import OPERATIONS, ROUTES, Operation, operation

__all__ = ["MODULES", "OPERATIONS", "ROUTES", "Call", "Operation", "Result", "load_modules", "load_operations", "operation"]

#: The modules that register operations (importing one registers its operations).
MODULES = [
    "fetchml_agent.service.workspaces",
    "fetchml_agent.service.access",
    "fetchml_agent.service.audit",
    "fetchml_agent.service.operations",
    "fetchml_agent.service.packages.install",
    "fetchml_agent.service.packages.ops",
    "fetchml_agent.service.packages.requests",
    "fetchml_agent.service.packages.removals",
    "fetchml_agent.service.images",
    "fetchml_agent.service.experiments",
    "fetchml_agent.service.live",
    "fetchml_agent.access.ops",
    "fetchml_agent.governance.service",
    "fetchml_agent.usage.ops",
]


def load_modules() -> list[ModuleType]:
    """Import every operations module (registering its operations) and return them."""
    return [importlib.import_module(m) for m in MODULES]


def load_operations() -> dict[Opcode, Operation]:
    load_modules()
    return OPERATIONS
