"""The WebSocket adapter: a mechanical loop of bytes in, service calls, bytes out.

:func:`handle_frame` turns one binary frame into the packets that answer it, whatever the frame
holds: a malformed frame gets an ``0x01`` error packet, an unknown key ``0x02``, a failure of the
operation its own code; an unexpected exception becomes ``0x00`` with no internal text, and the
connection stays usable.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ..errors import AuthenticationFailed, ErrorCode, FetchmlError, NotSupported
from ..protocol import (
    DataPacket,
    ErrorPacket,
    LogPacket,
    ProgressPacket,
    SuccessPacket,
    parse_request,
)
from ..service import OPERATIONS, Call

if TYPE_CHECKING:
    from ..agent import Agent

__all__ = ["handle_frame", "error_frame"]

log = logging.getLogger("fetchml.ws")

Send = Callable[[bytes], Awaitable[None]]


def error_frame(err: FetchmlError) -> bytes:
    return ErrorPacket.from_error(err).serialize()


async def handle_frame(agent: Agent, frame: bytes | str, send: Send) -> None:
    try:
        req = parse_request(frame)  # type: ignore[arg-type]
        user = agent.authenticate(req.api_key_hash)
        op = OPERATIONS.get(req.opcode)
        if op is None:
            raise NotSupported(f"opcode 0x{int(req.opcode):02X} ({req.opcode.name}) is not served by this agent")
        for check in agent.extensions.get("call_checks", []):  # access: allowlists, admin MFA (docs/access.md)
            check(agent, user, req.api_key_hash, op.name)
        args = op.validate(req.args())

        async def progress(message: str) -> None:
            await send(ProgressPacket(message).serialize())

        async def output(chunk: bytes) -> None:
            await send(LogPacket(chunk).serialize())

        result = await op.handler(agent, Call(user, "ws", progress, output), args)
    except AuthenticationFailed as exc:
        await send(error_frame(exc))
        await agent.audit("-", "auth.failed", None, "denied", transport="ws")
        return
    except FetchmlError as exc:
        await send(error_frame(exc))
        return
    except Exception:
        log.exception("operation failed")
        await send(
            ErrorPacket(int(ErrorCode.UNKNOWN), "internal error in the agent", "the agent's log has the details").serialize()
        )
        return
    if result.data_type is not None:
        await send(DataPacket(result.data_type, result.json_bytes()).serialize())
    if op.streaming or result.data_type is None:
        await send(SuccessPacket(result.message).serialize())
