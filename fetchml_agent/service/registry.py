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
        """``args`` checked against the schema (unknown keys dropped); raises InvalidArgument
        (0x06) naming each bad field, and for any text holding a NUL byte, which no name, path
        or package spec may contain."""
        where = _nul_field(args)
        if where is not None:
            raise InvalidArgument(f"invalid request for {self.name}: {where}: contains a NUL byte",
                                  "no name, path or value of a request may contain NUL (\\0)")
        if self.schema is None:
            return args
        v = Validator(self.schema, purge_unknown=True)
        if not v.validate(args):
            problems = "; ".join(f"{k}: {', '.join(map(str, e))}" for k, e in sorted(v.errors.items()))
            raise InvalidArgument(f"invalid request for {self.name}: {problems}")
        return dict(v.document)


def _nul_field(value: Any, where: str = "") -> str | None:
    """The first field (``a.b[2]``) whose text or key holds a NUL byte, else ``None``."""
    if isinstance(value, str):
        return (where or "value") if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{where}.{key}" if where else str(key)
            if isinstance(key, str) and "\x00" in key:
                return here.replace("\x00", "\\0")
            found = _nul_field(item, here)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _nul_field(item, f"{where}[{i}]")
            if found is not None:
                return found
    return None


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
