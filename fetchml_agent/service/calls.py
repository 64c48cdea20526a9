"""What an operation receives and answers: :class:`Call` (who asks, and where progress goes) and
:class:`Result` (a message, and optionally a typed JSON document)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..settings import User

__all__ = ["Call", "Result"]


async def _ignore(_: Any) -> None:
    return None


@dataclass
class Call:
    """One authenticated request as the service layer sees it."""

    user: User
    transport: str  # "ws" | "http"
    progress: Callable[[str], Awaitable[None]] = _ignore
    log: Callable[[bytes], Awaitable[None]] = _ignore

    @property
    def streams_log(self) -> bool:
        """Whether what is sent to :attr:`log` reaches the caller (a tool's output it already saw
        need not be repeated in an error)."""
        return self.log is not _ignore


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
            self.payload = json.dumps(self.data, separators=(",", ":"), default=str).encode("utf-8")
        return self.payload
