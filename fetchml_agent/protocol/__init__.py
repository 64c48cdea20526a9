"""The binary WebSocket protocol: a sans-I/O codec (no asyncio, no sockets, no files)."""

from __future__ import annotations

from .opcodes import STREAMING, Opcode, PacketType
from .packets import (
    KEY_HASH_LEN,
    DataPacket,
    ErrorPacket,
    JsonRequest,
    ListRequest,
    LogPacket,
    ProgressPacket,
    Request,
    Response,
    StartRequest,
    StopRequest,
    SuccessPacket,
    api_key_hash,
    parse_request,
    parse_response,
)

__all__ = [
    "KEY_HASH_LEN",
    "STREAMING",
    "DataPacket",
    "ErrorPacket",
    "JsonRequest",
    "ListRequest",
    "LogPacket",
    "Opcode",
    "PacketType",
    "ProgressPacket",
    "Request",
    "Response",
    "StartRequest",
    "StopRequest",
    "SuccessPacket",
    "api_key_hash",
    "parse_request",
    "parse_response",
]
