"""The WebSocket adapter: a mechanical loop of bytes in, service calls, bytes out.

:func:`handle_frame` turns one binary frame into the packets that answer it, whatever the frame
holds, in this order:

1. the 17-byte header (opcode and key hash): a text frame, a frame shorter than 17 bytes or an
   unknown opcode gets ``0x01``;
2. the key, before any byte of the body is looked at: an unknown key gets ``0x02`` and counts
   against the peer's budget (:class:`~fetchml_agent.server.guard.PeerGuard`);
3. the body, parsed with the operation's size limit and the JSON depth limit: ``0x01``;
4. the operation: its own error code, or ``0x00`` with no internal text for an unexpected
   exception. The connection stays usable after every one of these.

Answers follow the seed for the seed's opcodes (one packet: ``0x0D`` and ``0x0E`` success or
error, ``0x0F`` data or error) unless the client announced the ``stream`` capability with
``HELLO``; the project's own opcodes answer as :data:`~fetchml_agent.protocol.STREAMING` says.
Frames of one connection are answered one after the other, in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import (
    AuthenticationFailed,
    ErrorCode,
    FetchmlError,
    InvalidArgument,
    NotSupported,
    TooManyAuthFailures,
)
from ..protocol import (
    CAP_STREAM,
    CAPABILITIES,
    HEADER_LEN,
    MAX_SEED_REQUEST,
    SEED_OPCODES,
    DataPacket,
    ErrorPacket,
    LogPacket,
    Opcode,
    ProgressPacket,
    SuccessPacket,
    parse_header,
    parse_request,
)
from ..service import OPERATIONS, Call, Result
from ..service.calls import bad_input
from .guard import PENALTY_SECONDS, PeerGuard

if TYPE_CHECKING:
    from ..agent import Agent
    from ..settings import User

__all__ = ["PROTOCOL_VERSION", "Connection", "error_frame", "handle_frame", "max_frame_after_auth"]

log = logging.getLogger("fetchml.ws")

Send = Callable[[bytes], Awaitable[None]]

PROTOCOL_VERSION = 1
_JSON_FRAMING = HEADER_LEN + 4  # [opcode:1][api_key_hash:16][body_len:4]
# The seed answers start and stop with one success packet, even where the project has a document.
_SEED_SUCCESS_ONLY = frozenset({Opcode.START_JUPYTER, Opcode.STOP_JUPYTER})


def max_frame_after_auth(default_body: int) -> int:
    """The frame limit of an authenticated connection: the largest body any operation takes."""
    largest = max([default_body, *(op.max_body or 0 for op in OPERATIONS.values())])
    return max(MAX_SEED_REQUEST, _JSON_FRAMING + largest)


@dataclass
class Connection:
    """What the transport remembers about one WebSocket connection."""

    peer: str
    guard: PeerGuard
    max_body: int  # limits.max_request_body
    frame_limit_after_auth: int
    set_frame_limit: Callable[[int], None] | None = None
    authenticated: bool = False
    capabilities: frozenset[str] = field(default_factory=frozenset)

    def authenticated_once(self) -> None:
        if not self.authenticated:
            self.authenticated = True
            if self.set_frame_limit is not None:
                self.set_frame_limit(self.frame_limit_after_auth)

    def streams(self, opcode: Opcode, declared: bool) -> bool:
        """Whether this answer may be a stream (progress, log, data, then success)."""
        if opcode in SEED_OPCODES:
            return declared and CAP_STREAM in self.capabilities
        return declared


def error_frame(err: FetchmlError) -> bytes:
    return ErrorPacket.from_error(err).serialize()


async def handle_frame(agent: Agent, conn: Connection, frame: bytes | str, send: Send) -> bool:
    """Answer one frame. Returns False when the connection should be closed (a peer over its budget
    of authentication failures)."""
    try:
        opcode, key = parse_header(frame)  # type: ignore[arg-type]
    except FetchmlError as exc:
        await send(error_frame(exc))
        return True
    try:
        user = agent.authenticate(key)
    except AuthenticationFailed as exc:
        if await conn.guard.failure(conn.peer, "ws", "wrong_key"):
            await asyncio.sleep(PENALTY_SECONDS)
            await send(error_frame(_too_many()))
            return False
        await send(error_frame(exc))
        return True
    conn.authenticated_once()
    assert isinstance(frame, (bytes, bytearray, memoryview))
    try:
        for check in agent.services.hooks.call_checks:  # access: allowlists, admin MFA (docs/access.md)
            check(user, key, opcode.name.lower())
        if opcode == Opcode.HELLO:
            await send(_hello(agent, conn, user, parse_request(frame, max_body=conn.max_body).args()))
            return True
        op = OPERATIONS.get(opcode)
        if op is None:
            raise NotSupported(f"opcode 0x{int(opcode):02X} ({opcode.name}) is not served by this agent")
        req = parse_request(frame, max_body=max(conn.max_body, op.max_body or 0))
        args = op.validate(req.args())
        streaming = conn.streams(opcode, op.streaming)

        async def progress(message: str) -> None:
            if streaming:
                await send(ProgressPacket(message).serialize())

        async def output(chunk: bytes) -> None:
            if streaming:
                await send(LogPacket(chunk).serialize())

        result = await op.run(agent, Call(user, "ws", progress, output), args)
    except FetchmlError as exc:
        await send(error_frame(exc))
        return True
    except Exception as exc:
        translated = bad_input(exc)
        if translated is not None:
            log.warning("operation %s: %s", opcode.name.lower(), exc)
            await send(error_frame(translated))
            return True
        log.exception("operation failed")
        await send(
            ErrorPacket(int(ErrorCode.UNKNOWN), "internal error in the agent", "the agent's log has the details").serialize()
        )
        return True
    await _send_result(send, opcode, streaming, result)
    return True


async def _send_result(send: Send, opcode: Opcode, streaming: bool, result: Result) -> None:
    """A stream ends with data (if any) and success; otherwise one packet, as the seed says for its opcodes."""
    if streaming:
        if result.data_type is not None:
            await send(DataPacket(result.data_type, result.json_bytes()).serialize())
        await send(SuccessPacket(result.message).serialize())
    elif result.data_type is not None and opcode not in _SEED_SUCCESS_ONLY:
        await send(DataPacket(result.data_type, result.json_bytes()).serialize())
    else:
        await send(SuccessPacket(result.message).serialize())


def _too_many() -> TooManyAuthFailures:
    return TooManyAuthFailures(
        "authentication failed: too many failed attempts from this address; the connection is closed",
        "check --api-key / FETCHML_API_KEY; attempts are accepted again within a minute",
    )


def _hello(agent: Agent, conn: Connection, user: User, body: dict[str, Any]) -> bytes:
    """``HELLO``: remember what the client understands; answer what the agent accepted."""
    asked = body.get("capabilities", [])
    if not isinstance(asked, list) or not all(isinstance(c, str) for c in asked):
        raise InvalidArgument("invalid request for hello: capabilities must be a list of strings")
    conn.capabilities = frozenset(asked) & CAPABILITIES
    return DataPacket.json(
        "hello",
        {
            "agent": agent.version,
            "protocol": PROTOCOL_VERSION,
            "capabilities": sorted(conn.capabilities),
            "user": user.name,
            "role": user.role,
            "max_frame": conn.frame_limit_after_auth,
        },
    ).serialize()

