"""What an operation receives and answers: :class:`Call` (who asks, and where progress goes) and
:class:`Result` (a message, and optionally a typed JSON document)."""

from __future__ import annotations

import errno
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidArgument
from ..settings import User

__all__ = ["Call", "Result", "bad_input"]


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


def bad_input(exc: Exception) -> InvalidArgument | None:
    """What an operation's unexpected exception means when the request's own text caused it: a
    NUL byte or an overlong name reaching the operating system. The transports answer this
    (0x06) instead of ``0x00``; operations check their paths first (``service.paths``), so this
    only catches what a check missed."""
    if isinstance(exc, ValueError) and "null byte" in str(exc):
        return InvalidArgument("invalid request: a value contains a NUL byte", "no name or path may contain NUL (\\0)")
    if isinstance(exc, OSError) and exc.errno == errno.ENAMETOOLONG:
        return InvalidArgument("invalid request: a file name or path is too long",
                               "a name has at most 255 bytes, a path at most 4095")
    return None
