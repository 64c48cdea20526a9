"""The table of operations: each registered once under its opcode and its HTTP routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from cerberus import Validator

from ..errors import InvalidArgument
from ..protocol.opcodes import STREAMING, Opcode
from .calls import Call, Result
from .context import AgentContext

__all__ = ["OPERATIONS", "ROUTES", "Handler", "Operation", "operation"]

Handler = Callable[[AgentContext, Call, dict[str, Any]], Awaitable[Result]]


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
