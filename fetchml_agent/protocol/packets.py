"""Sans-I/O codec of the binary WebSocket protocol: bytes in, dataclasses out, and back.

Layouts (every integer big-endian, every length in bytes of UTF-8, ``timestamp`` in Unix seconds)
are listed in ``docs/protocol.md`` and in :mod:`fetchml_agent.protocol.opcodes`.

Requests
    ``0x0D`` start  ``[op:1][key_hash:16][name_len:1][name][workspace_len:2][workspace][password_len:1][password]``
    ``0x0E`` stop   ``[op:1][key_hash:16][service_id_len:1][service_id]``
    ``0x0F`` list   ``[op:1][key_hash:16]``
    others          ``[op:1][key_hash:16][body_len:4][body: a JSON object]``

Responses
    ``0x00`` success  ``[0x00][timestamp:8][message_len:2][message]``
    ``0x01`` error    ``[0x01][timestamp:8][error_code:1][message_len:2][message][details_len:2][details]``
    ``0x02`` progress ``[0x02][timestamp:8][message_len:2][message]``
    ``0x03`` log      ``[0x03][timestamp:8][data_len:4][data]``
    ``0x04`` data     ``[0x04][timestamp:8][type_len:2][type][payload_len:4][payload]``

Parsing never raises anything but :class:`~fetchml_agent.errors.ProtocolError`, so a transport can
turn any bad frame into an ``0x01`` error packet.
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import ErrorCode, ProtocolError, RequestTooLarge
from .opcodes import Opcode, PacketType

__all__ = [
    "DataPacket",
    "ErrorPacket",
    "JsonRequest",
    "ListRequest",
    "LogPacket",
    "ProgressPacket",
    "Request",
    "Response",
    "StartRequest",
    "StopRequest",
    "SuccessPacket",
    "HEADER_LEN",
    "KEY_HASH_LEN",
    "MAX_JSON_BODY",
    "MAX_JSON_DEPTH",
    "MAX_SEED_REQUEST",
    "PREAUTH_MAX_FRAME",
    "api_key_hash",
    "loads_json_object",
    "parse_header",
    "parse_request",
    "parse_response",
]

KEY_HASH_LEN = 16
HEADER_LEN = 1 + KEY_HASH_LEN
# The largest body any JSON request may declare; the agent's own limit is lower (limits.max_request_body).
MAX_JSON_BODY = 16 * 1024 * 1024
# Containers nested deeper than this are refused (0x01): no document of the protocol needs more.
MAX_JSON_DEPTH = 32
# The largest request of the seed's layouts (0x0D with every length at its maximum).
MAX_SEED_REQUEST = HEADER_LEN + (1 + 0xFF) + (2 + 0xFFFF) + (1 + 0xFF)
# Until a connection has sent one request with a valid key, the agent takes no larger frame (it
# closes the connection with 1009 at the frame's header): enough for every request of the seed.
PREAUTH_MAX_FRAME = MAX_SEED_REQUEST

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_TS = struct.Struct(">Q")


def api_key_hash(api_key: str) -> bytes:
    """The 16 bytes sent with every request: the first half of SHA-256 of the key."""
    import hashlib

    return hashlib.sha256(api_key.encode("utf-8")).digest()[:KEY_HASH_LEN]


def _now() -> int:
    return int(time.time())


class _Reader:
    """Cursor over a frame; every read checks bounds and raises ProtocolError past the end."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        end = self.pos + n
        if end > len(self.buf):
            raise ProtocolError(
                "truncated frame",
                f"{what} needs {n} bytes at offset {self.pos}, frame has {len(self.buf)}",
            )
        out = self.buf[self.pos : end]
        self.pos = end
        return out

    def int(self, st: struct.Struct, what: str) -> int:
        value: int = st.unpack(self.take(st.size, what))[0]
        return value

    def text(self, length_st: struct.Struct, what: str) -> str:
        raw = self.take(self.int(length_st, f"{what} length"), what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("invalid UTF-8", f"{what} is not valid UTF-8") from exc

    def blob(self, length_st: struct.Struct, what: str) -> bytes:
        return self.take(self.int(length_st, f"{what} length"), what)

    def end(self) -> None:
        if self.pos != len(self.buf):
            raise ProtocolError(
                "trailing bytes", f"{len(self.buf) - self.pos} bytes after the end of the message"
            )


def _enc(text: str, length_st: struct.Struct, what: str) -> bytes:
    raw = text.encode("utf-8")
    limit = (1 << (8 * length_st.size)) - 1
    if len(raw) > limit:
        raise ProtocolError(f"{what} too long", f"{len(raw)} bytes, at most {limit}")
    return length_st.pack(len(raw)) + raw


def _clip(text: str, limit: int = 0xFFFF) -> str:
    """Cut a response text to fit its 2-byte length without splitting a UTF-8 character."""
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", errors="ignore")


def _key_hash(r: _Reader) -> bytes:
    return r.take(KEY_HASH_LEN, "api_key_hash")


# ---------------------------------------------------------------------------------------------
# Requests


@dataclass(frozen=True)
class StartRequest:
    """``0x0D``: start a Jupyter service named ``name`` on the directory ``workspace``."""

    api_key_hash: bytes
    name: str
    workspace: str
    password: str = ""

    opcode: ClassVar[Opcode] = Opcode.START_JUPYTER

    @classmethod
    def parse_body(cls, key: bytes, r: _Reader) -> StartRequest:
        name = r.text(_U8, "name")
        workspace = r.text(_U16, "workspace")
        password = r.text(_U8, "password")
        return cls(key, name, workspace, password)

    def serialize(self) -> bytes:
        return b"".join(
            (
                _U8.pack(self.opcode),
                self.api_key_hash,
                _enc(self.name, _U8, "name"),
                _enc(self.workspace, _U16, "workspace"),
                _enc(self.password, _U8, "password"),
            )
        )

    def args(self) -> dict[str, Any]:
        return {"name": self.name, "workspace": self.workspace, "password": self.password}


@dataclass(frozen=True)
class StopRequest:
    """``0x0E``: stop the service with this id (or workspace name)."""

    api_key_hash: bytes
    service_id: str

    opcode: ClassVar[Opcode] = Opcode.STOP_JUPYTER

    @classmethod
    def parse_body(cls, key: bytes, r: _Reader) -> StopRequest:
        return cls(key, r.text(_U8, "service_id"))

    def serialize(self) -> bytes:
        return _U8.pack(self.opcode) + self.api_key_hash + _enc(self.service_id, _U8, "service_id")

    def args(self) -> dict[str, Any]:
        return {"service_id": self.service_id}


@dataclass(frozen=True)
class ListRequest:
    """``0x0F``: list Jupyter services."""

    api_key_hash: bytes

    opcode: ClassVar[Opcode] = Opcode.LIST_JUPYTER

    @classmethod
    def parse_body(cls, key: bytes, r: _Reader) -> ListRequest:
        return cls(key)

    def serialize(self) -> bytes:
        return _U8.pack(self.opcode) + self.api_key_hash

    def args(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class JsonRequest:
    """Every opcode beyond the seed's three: ``[op:1][key_hash:16][body_len:4][body]``.

    ``body`` is a JSON object whose keys each opcode documents in ``docs/protocol.md``.
    """

    opcode: Opcode
    api_key_hash: bytes
    body: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse_body(cls, opcode: Opcode, key: bytes, r: _Reader, max_body: int = MAX_JSON_BODY) -> JsonRequest:
        length = r.int(_U32, "body length")
        if length > max_body:
            raise RequestTooLarge("body too large", f"{length} bytes, at most {max_body} for this request")
        return cls(opcode, key, loads_json_object(r.take(length, "body"), "body"))

    def serialize(self) -> bytes:
        raw = json.dumps(self.body, separators=(",", ":")).encode("utf-8")
        return _U8.pack(self.opcode) + self.api_key_hash + _U32.pack(len(raw)) + raw

    def args(self) -> dict[str, Any]:
        return dict(self.body)


Request = StartRequest | StopRequest | ListRequest | JsonRequest

_SEED_REQUESTS: dict[int, Any] = {
    Opcode.START_JUPYTER: StartRequest,
    Opcode.STOP_JUPYTER: StopRequest,
    Opcode.LIST_JUPYTER: ListRequest,
}


def loads_json_object(raw: bytes, what: str = "body", max_depth: int = MAX_JSON_DEPTH) -> dict[str, Any]:
    """Decode a JSON object (empty bytes: ``{}``), refusing other types and deep nesting.

    Raises:
        ProtocolError: not UTF-8 JSON, not an object, or containers nested deeper than ``max_depth``.
    """
    if not raw:
        return {}
    try:
        doc = json.loads(raw)
    except RecursionError:
        raise ProtocolError(f"{what} is nested too deeply", f"at most {max_depth} levels of arrays and objects") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"{what} is not JSON", str(exc)[:200]) from None
    if not isinstance(doc, dict):
        raise ProtocolError(f"{what} must be a JSON object", f"got {type(doc).__name__}")
    if _depth_exceeds(doc, max_depth):
        raise ProtocolError(f"{what} is nested too deeply", f"at most {max_depth} levels of arrays and objects")
    return doc


def _depth_exceeds(doc: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def parse_header(frame: bytes | bytearray | memoryview) -> tuple[Opcode, bytes]:
    """The opcode and the 16-byte key hash of a request, without looking at its body.

    The agent checks the key before it parses (or even measures) a body, so a frame from someone
    without a key costs no more than these 17 bytes.

    Raises:
        ProtocolError: a text frame, fewer than 17 bytes, or an unknown opcode.
    """
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise ProtocolError("binary frame expected", "text frames are not part of the protocol")
    if len(frame) < HEADER_LEN:
        raise ProtocolError(
            "truncated frame", f"a request starts with [opcode:1][api_key_hash:16]; the frame has {len(frame)} bytes"
        )
    raw_op = frame[0]
    try:
        opcode = Opcode(raw_op)
    except ValueError:
        raise ProtocolError("unknown opcode", f"0x{raw_op:02X}") from None
    return opcode, bytes(frame[1:HEADER_LEN])


def parse_request(frame: bytes, *, max_body: int = MAX_JSON_BODY) -> Request:
    """Decode one request frame; a JSON body may hold at most ``max_body`` bytes.

    Raises:
        ProtocolError: the frame is truncated, has bytes past its end, an unknown opcode, bad
            UTF-8, a body over ``max_body``, or a body that is not a JSON object (or nests deeper
            than :data:`MAX_JSON_DEPTH`).
    """
    opcode, key = parse_header(frame)
    r = _Reader(bytes(frame))
    r.pos = HEADER_LEN
    seed = _SEED_REQUESTS.get(opcode)
    req: Request = seed.parse_body(key, r) if seed else JsonRequest.parse_body(opcode, key, r, max_body)
    r.end()
    return req


# ---------------------------------------------------------------------------------------------
# Responses


@dataclass(frozen=True)
class SuccessPacket:
    message: str
    timestamp: int = field(default_factory=_now)

    packet_type: ClassVar[PacketType] = PacketType.SUCCESS

    @classmethod
    def parse_body(cls, ts: int, r: _Reader) -> SuccessPacket:
        return cls(r.text(_U16, "message"), ts)

    def serialize(self) -> bytes:
        return _U8.pack(self.packet_type) + _TS.pack(self.timestamp) + _enc(_clip(self.message), _U16, "message")


@dataclass(frozen=True)
class ErrorPacket:
    code: int
    message: str
    details: str = ""
    timestamp: int = field(default_factory=_now)

    packet_type: ClassVar[PacketType] = PacketType.ERROR

    @classmethod
    def parse_body(cls, ts: int, r: _Reader) -> ErrorPacket:
        code = r.int(_U8, "error_code")
        message = r.text(_U16, "message")
        details = r.text(_U16, "details")
        return cls(code, message, details, ts)

    @classmethod
    def from_error(cls, err: Any) -> ErrorPacket:
        return cls(int(err.code), err.message, err.details)

    def serialize(self) -> bytes:
        return b"".join(
            (
                _U8.pack(self.packet_type),
                _TS.pack(self.timestamp),
                _U8.pack(self.code),
                _enc(_clip(self.message), _U16, "message"),
                _enc(_clip(self.details), _U16, "details"),
            )
        )

    @property
    def code_name(self) -> str:
        try:
            return ErrorCode(self.code).name
        except ValueError:
            return f"0x{self.code:02X}"


@dataclass(frozen=True)
class ProgressPacket:
    message: str
    timestamp: int = field(default_factory=_now)

    packet_type: ClassVar[PacketType] = PacketType.PROGRESS

    @classmethod
    def parse_body(cls, ts: int, r: _Reader) -> ProgressPacket:
        return cls(r.text(_U16, "message"), ts)

    def serialize(self) -> bytes:
        return _U8.pack(self.packet_type) + _TS.pack(self.timestamp) + _enc(_clip(self.message), _U16, "message")


@dataclass(frozen=True)
class LogPacket:
    data: bytes
    timestamp: int = field(default_factory=_now)

    packet_type: ClassVar[PacketType] = PacketType.LOG

    @classmethod
    def parse_body(cls, ts: int, r: _Reader) -> LogPacket:
        return cls(r.blob(_U32, "data"), ts)

    def serialize(self) -> bytes:
        return _U8.pack(self.packet_type) + _TS.pack(self.timestamp) + _U32.pack(len(self.data)) + self.data


@dataclass(frozen=True)
class DataPacket:
    type: str
    payload: bytes
    timestamp: int = field(default_factory=_now)

    packet_type: ClassVar[PacketType] = PacketType.DATA

    @classmethod
    def parse_body(cls, ts: int, r: _Reader) -> DataPacket:
        kind = r.text(_U16, "type")
        return cls(kind, r.blob(_U32, "payload"), ts)

    @classmethod
    def json(cls, kind: str, document: Any) -> DataPacket:
        raw = json.dumps(document, separators=(",", ":"), default=str).encode("utf-8")
        return cls(kind, raw)

    def decode_json(self) -> Any:
        try:
            return json.loads(self.payload)
        except (UnicodeDecodeError, ValueError) as exc:
            raise ProtocolError("data payload is not JSON", str(exc)[:200]) from exc

    def serialize(self) -> bytes:
        return b"".join(
            (
                _U8.pack(self.packet_type),
                _TS.pack(self.timestamp),
                _enc(self.type, _U16, "type"),
                _U32.pack(len(self.payload)),
                self.payload,
            )
        )


Response = SuccessPacket | ErrorPacket | ProgressPacket | LogPacket | DataPacket

_RESPONSES: dict[int, Any] = {
    PacketType.SUCCESS: SuccessPacket,
    PacketType.ERROR: ErrorPacket,
    PacketType.PROGRESS: ProgressPacket,
    PacketType.LOG: LogPacket,
    PacketType.DATA: DataPacket,
}


def parse_response(frame: bytes) -> Response:
    """Decode one response frame (client side). Raises only :class:`ProtocolError`."""
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise ProtocolError("binary frame expected", "the agent sent a text frame")
    r = _Reader(bytes(frame))
    raw_type = r.int(_U8, "packet_type")
    cls = _RESPONSES.get(raw_type)
    if cls is None:
        raise ProtocolError("unknown packet type", f"0x{raw_type:02X}")
    ts = r.int(_TS, "timestamp")
    packet: Response = cls.parse_body(ts, r)
    r.end()
    return packet
