"""Byte-level round trips of every packet, and the decoder's behaviour on arbitrary bytes."""

from __future__ import annotations

import hashlib
import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fetchml_agent.errors import ErrorCode, ProtocolError
from fetchml_agent.protocol import (
    DataPacket,
    ErrorPacket,
    JsonRequest,
    ListRequest,
    LogPacket,
    Opcode,
    ProgressPacket,
    StartRequest,
    StopRequest,
    SuccessPacket,
    api_key_hash,
    parse_request,
    parse_response,
)

KEY = api_key_hash("secret-key")


def test_key_hash_is_first_16_bytes_of_sha256() -> None:
    assert KEY == hashlib.sha256(b"secret-key").digest()[:16]
    assert len(KEY) == 16


def test_start_layout_byte_for_byte() -> None:
    req = StartRequest(KEY, "my-notebook", "/path/to/workspace", "mypass")
    expected = (
        b"\x0d" + KEY + b"\x0b" + b"my-notebook" + struct.pack(">H", 18) + b"/path/to/workspace" + b"\x06" + b"mypass"
    )
    assert req.serialize() == expected
    assert parse_request(expected) == req


def test_start_without_password() -> None:
    req = StartRequest(KEY, "nb", "/w", "")
    assert req.serialize().endswith(b"\x00")
    assert parse_request(req.serialize()) == req


def test_stop_layout() -> None:
    req = StopRequest(KEY, "service-id-12345")
    assert req.serialize() == b"\x0e" + KEY + b"\x10service-id-12345"
    assert parse_request(req.serialize()) == req


def test_list_layout() -> None:
    req = ListRequest(KEY)
    assert req.serialize() == b"\x0f" + KEY
    assert parse_request(b"\x0f" + KEY) == req


@pytest.mark.parametrize("opcode", [op for op in Opcode if op not in (Opcode.START_JUPYTER, Opcode.STOP_JUPYTER, Opcode.LIST_JUPYTER)])
def test_json_requests_round_trip(opcode: Opcode) -> None:
    req = JsonRequest(opcode, KEY, {"name": "ws-1", "n": 3, "nested": {"ü": [1, 2]}})
    raw = req.serialize()
    assert raw[0] == opcode and raw[1:17] == KEY
    (length,) = struct.unpack(">I", raw[17:21])
    assert json.loads(raw[21:]) == req.body and length == len(raw) - 21
    assert parse_request(raw) == req


def test_utf8_lengths_count_bytes() -> None:
    req = StartRequest(KEY, "ñ", "/é", "")
    raw = req.serialize()
    assert raw[17] == 2  # "ñ" is two bytes
    assert parse_request(raw) == req


def test_success_layout() -> None:
    pkt = SuccessPacket("done", timestamp=1_700_000_000)
    assert pkt.serialize() == b"\x00" + struct.pack(">Q", 1_700_000_000) + b"\x00\x04done"
    assert parse_response(pkt.serialize()) == pkt


def test_error_layout() -> None:
    pkt = ErrorPacket(0x02, "auth failed", "bad key", timestamp=5)
    raw = pkt.serialize()
    assert raw == b"\x01" + struct.pack(">Q", 5) + b"\x02" + b"\x00\x0bauth failed" + b"\x00\x07bad key"
    assert parse_response(raw) == pkt
    assert pkt.code_name == "AUTH_FAILED"


def test_data_layout() -> None:
    payload = json.dumps({"services": []}).encode()
    pkt = DataPacket("jupyter_services", payload, timestamp=7)
    raw = pkt.serialize()
    assert raw == b"\x04" + struct.pack(">Q", 7) + b"\x00\x10jupyter_services" + struct.pack(">I", len(payload)) + payload
    assert parse_response(raw) == pkt
    assert pkt.decode_json() == {"services": []}


def test_progress_and_log_round_trip() -> None:
    for pkt in (ProgressPacket("pulling image", timestamp=9), LogPacket(b"\x00\xffbytes", timestamp=9)):
        assert parse_response(pkt.serialize()) == pkt


def test_long_messages_are_clipped_on_a_character_boundary() -> None:
    pkt = ErrorPacket(0, "é" * 40000, "x")
    back = parse_response(pkt.serialize())
    assert isinstance(back, ErrorPacket)
    assert len(back.message.encode()) <= 0xFFFF and set(back.message) == {"é"}


@pytest.mark.parametrize(
    "frame, what",
    [
        (b"", "truncated"),
        (b"\x0f" + KEY[:5], "truncated"),
        (b"\x0d" + KEY + b"\x05ab", "truncated"),
        (b"\x0e" + KEY + b"\xffabc", "truncated"),
        (b"\x0f" + KEY + b"extra", "trailing"),
        (b"\x99" + KEY, "unknown opcode"),
        (b"\x20" + KEY + b"\x00\x00\x00\x02[]", "JSON object"),
        (b"\x20" + KEY + b"\x00\x00\x00\x03{x}", "not JSON"),
        (b"\x20" + KEY + b"\xff\xff\xff\xff", "too large"),
        (b"\x0e" + KEY + b"\x02\xff\xfe", "UTF-8"),
        ("text frame", "binary"),
    ],
)
def test_malformed_frames_are_protocol_errors(frame: bytes, what: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_request(frame)  # type: ignore[arg-type]
    assert info.value.code == ErrorCode.INVALID_REQUEST
    assert what.lower() in (info.value.message + info.value.details).lower()


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_protocol_errors(frame: bytes) -> None:
    try:
        parse_request(frame)
    except ProtocolError:
        pass


@settings(max_examples=1500, deadline=None)
@given(st.sampled_from([0x0D, 0x0E, 0x0F, 0x20, 0x41]), st.binary(max_size=200))
def test_valid_opcode_with_arbitrary_body(opcode: int, body: bytes) -> None:
    try:
        parse_request(bytes([opcode]) + KEY + body)
    except ProtocolError:
        pass


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_response_bytes_raise_only_protocol_errors(frame: bytes) -> None:
    try:
        parse_response(frame)
    except ProtocolError:
        pass


@given(st.text(max_size=255 // 4), st.text(max_size=1000), st.text(max_size=255 // 4))
def test_start_round_trip_property(name: str, workspace: str, password: str) -> None:
    req = StartRequest(KEY, name, workspace, password)
    assert parse_request(req.serialize()) == req


def test_codec_imports_no_io() -> None:
    import ast
    from pathlib import Path

    import fetchml_agent.protocol as proto

    forbidden = {"asyncio", "socket", "sqlite3", "subprocess", "websockets", "starlette", "uvicorn"}
    for path in Path(proto.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path.name} imports {name}"


def test_parse_header_reads_only_opcode_and_key() -> None:
    from fetchml_agent.protocol import parse_header

    assert parse_header(b"\x20" + KEY + b"\xff\xff\xff\xff{{{{") == (Opcode.CREATE_WORKSPACE, KEY)
    for frame, what in ((b"", "truncated"), (b"\x0f" + KEY[:15], "the frame has 16 bytes"), (b"\x99" + KEY, "unknown opcode")):
        with pytest.raises(ProtocolError) as info:
            parse_header(frame)
        assert what in (info.value.message + info.value.details)


def test_hello_is_a_json_request() -> None:
    req = JsonRequest(Opcode.HELLO, KEY, {"client": "ml 0.1.0", "capabilities": ["stream"]})
    raw = req.serialize()
    assert raw[0] == 0x10 and parse_request(raw) == req


def test_the_largest_seed_request_fits_the_pre_authentication_limit() -> None:
    from fetchml_agent.protocol import MAX_SEED_REQUEST, PREAUTH_MAX_FRAME

    biggest = StartRequest(KEY, "n" * 255, "w" * 0xFFFF, "p" * 255).serialize()
    assert len(biggest) == MAX_SEED_REQUEST == 66066 and PREAUTH_MAX_FRAME >= MAX_SEED_REQUEST


def test_body_limit_is_the_callers() -> None:
    from fetchml_agent.errors import RequestTooLarge

    req = JsonRequest(Opcode.CREATE_WORKSPACE, KEY, {"name": "x" * 2000})
    assert parse_request(req.serialize(), max_body=4096) == req
    with pytest.raises(RequestTooLarge) as info:
        parse_request(req.serialize(), max_body=1000)
    assert info.value.code == ErrorCode.INVALID_REQUEST and info.value.http_status == 413


@pytest.mark.parametrize("depth, ok", [(32, True), (33, False), (5000, False), (200_000, False)])
def test_json_nesting_depth_is_limited(depth: int, ok: bool) -> None:
    from fetchml_agent.protocol import MAX_JSON_DEPTH, loads_json_object

    assert MAX_JSON_DEPTH == 32
    inner = "[" * (depth - 1) + "]" * (depth - 1)
    body = ('{"a":' + inner + "}").encode()
    frame = b"\x20" + KEY + struct.pack(">I", len(body)) + body
    if ok:
        assert parse_request(frame).args()["a"] is not None
        assert loads_json_object(body)["a"] is not None
    else:
        with pytest.raises(ProtocolError, match="nested too deeply") as info:
            parse_request(frame)
        assert info.value.code == ErrorCode.INVALID_REQUEST
