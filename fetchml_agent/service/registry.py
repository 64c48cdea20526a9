"""The table of operations: each registered once under its opcode and its HTTP routes."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from cerberus import Validator

from ..errors import FetchmlError, InvalidArgument
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

    async def run(self, agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
        """Call the handler, timing it into ``fetchml_request_duration_seconds`` (every transport
        calls operations through here)."""
        started = time.perf_counter()
        outcome = "internal"
        try:
            result = await self.handler(agent, call, args)
            outcome = "ok"
            return result
        except FetchmlError as exc:
            outcome = exc.code.name.lower()
            raise
        finally:
            agent.services.metrics.observe_request(self.name, call.transport, outcome, time.perf_counter() - started)

    def from_query(self, params: dict[str, str]) -> dict[str, Any]:
        """Query-string values as the schema types them (``?hard=true``, ``?limit=5``): a query
        carries only strings, and a field without a ``coerce`` of its own would refuse them."""
        out: dict[str, Any] = dict(params)
        for key, value in params.items():
            rule = (self.schema or {}).get(key) or {}
            declared = rule.get("type")
            types = declared if isinstance(declared, list) else [declared]
            if "coerce" in rule or "string" in types:
                continue
            if rule.get("nullable") and value in ("", "null"):
                out[key] = None
            elif "boolean" in types and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                out[key] = value.lower() in ("true", "1", "yes")
            elif "integer" in types and re.fullmatch(r"[+-]?\d{1,18}", value):
                out[key] = int(value)
            elif "number" in types:
                try:
                    out[key] = float(value)
                except ValueError:
                    pass
        return out

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
