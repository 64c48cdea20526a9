"""The service layer: every operation written once, called by both transports.

An operation is an async function ``handler(agent, call, args) -> Result`` registered with
:func:`operation` under its opcode and its HTTP routes. The WebSocket transport finds it by
opcode, the HTTP transport by route; both authenticate first and hand over a :class:`Call` whose
``progress``/``log`` go to the client as progress and log packets (or are dropped over HTTP).
``args`` are validated against the operation's cerberus schema before the handler runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cerberus import Validator

from ..errors import InvalidArgument
from ..protocol.opcodes import STREAMING, Opcode

if TYPE_CHECKING:
    from ..agent import Agent
    from ..config import User

__all__ = ["OPERATIONS", "ROUTES", "Call", "Operation", "Result", "load_modules", "load_operations", "operation", "setup_agent"]

# Modules that register operations; each concern appends its own.
MODULES = [
    "fetchml_agent.service.workspaces",
    "fetchml_agent.service.access",
    "fetchml_agent.service.audit",
    "fetchml_agent.service.operations",
    "fetchml_agent.service.packages",
    "fetchml_agent.service.vulnerabilities",
    "fetchml_agent.service.package_removals",
    "fetchml_agent.service.images",
    "fetchml_agent.webhooks",
    "fetchml_agent.service.experiments",
    "fetchml_agent.access.ops",
    "fetchml_agent.governance.service",
]


async def _ignore(_: Any) -> None:
    return None


@dataclass
class Call:
    """One authenticated request as the service layer sees it."""

    user: User
    transport: str  # "ws" | "http"
    progress: Callable[[str], Awaitable[None]] = _ignore
    log: Callable[[bytes], Awaitable[None]] = _ignore


@dataclass
class Result:
    """What an operation answers: a message, and optionally a typed JSON document."""

    message: str = "ok"
    data_type: str | None = None
    data: Any = None
    http_status: int = 200
    payload: bytes | None = None  # ``data`` already serialized as JSON (hot paths cache it)

    def json_bytes(self) -> bytes:
        if self.payload is None:
            import json

            self.payload = json.dumps(self.data, separators=(",", ":"), default=str).encode("utf-8")
        return self.payload


Handler = Callable[["Agent", Call, dict[str, Any]], Awaitable[Result]]


@dataclass
class Operation:
    opcode: Opcode
    handler: Handler
    routes: list[tuple[str, str]] = field(default_factory=list)
    schema: dict[str, Any] | None = None
    max_body: int | None = None  # bytes of request body it may need beyond limits.max_request_body

    @property
    def name(self) -> str:
        return self.opcode.name.lower()

    @property
    def streaming(self) -> bool:
        return self.opcode in STREAMING

    def validate(self, args: dict[str, Any]) -> dict[str, Any]:
        if self.schema is None:
            return args
        v = Validator(self.schema, purge_unknown=True)
        if not v.validate(args):
            problems = "; ".join(f"{k}: {', '.join(map(str, e))}" for k, e in sorted(v.errors.items()))
            raise InvalidArgument(f"invalid request for {self.name}: {problems}")
        return dict(v.document)


OPERATIONS: dict[Opcode, Operation] = {}
ROUTES: list[tuple[str, str, Operation]] = []


def operation(
    opcode: Opcode,
    *,
    routes: list[tuple[str, str]] | None = None,
    schema: dict[str, Any] | None = None,
    max_body: int | None = None,
) -> Callable[[Handler], Handler]:
    """Register ``handler`` for ``opcode`` and for each ``(METHOD, "/api/v1/...")`` route.

    ``max_body``: the request body this operation needs, when more than the agent's
    ``limits.max_request_body`` (both transports refuse larger bodies with ``0x01``/HTTP 413).
    """

    def register(handler: Handler) -> Handler:
        if opcode in OPERATIONS:
            raise RuntimeError(f"opcode {opcode.name} registered twice")
        op = Operation(opcode, handler, list(routes or []), schema, max_body)
        OPERATIONS[opcode] = op
        for method, path in op.routes:
            ROUTES.append((method, path, op))
        return handler

    return register


def load_operations() -> dict[Opcode, Operation]:
    load_modules()
    return OPERATIONS


def load_modules() -> list[Any]:
    """Import every service module (registering its operations) and return them."""
    return [importlib.import_module(m) for m in MODULES]


def setup_agent(agent: Agent) -> None:
    """Let each service module attach what it needs to a new agent (``setup(agent)``)."""
    for module in load_modules():
        setup = getattr(module, "setup", None)
        if setup is not None:
            setup(agent)
