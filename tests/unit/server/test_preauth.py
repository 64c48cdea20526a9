"""The WebSocket transport before authentication: only the 17-byte header is read.

Arbitrary frames with a key that no user has get exactly one error packet (``0x01`` when the
header itself is bad, ``0x02`` otherwise), the body is never parsed, nothing else is called, and
the failure is accounted for by the peer guard.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fetchml_agent.server.transport as transport
from fetchml_agent.agent import Agent
from fetchml_agent.auth import api_key_verifier
from fetchml_agent.config import parse_config
from fetchml_agent.errors import ErrorCode
from fetchml_agent.protocol import HEADER_LEN, ErrorPacket, Opcode, api_key_hash, parse_response
from fetchml_agent.server.guard import PeerGuard
from fetchml_agent.server.transport import Connection, handle_frame

KNOWN = api_key_hash("the-only-key-0123456789")
OPCODES = sorted(int(op) for op in Opcode)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Agent:
    root = tmp_path_factory.mktemp("preauth")
    doc = {"data_dir": str(root / "data"),
           "users": [{"name": "admin", "role": "admin", "api_key_verifier": api_key_verifier("the-only-key-0123456789")}]}
    return Agent(parse_config(doc, path=root / "agent.yaml"))  # never started: no store, no runtime


def _answer(agent: Agent, frame: bytes | str) -> tuple[list[Any], bool, list[dict[str, Any]], list[int]]:
    sent: list[bytes] = []
    audited: list[dict[str, Any]] = []
    limits: list[int] = []

    async def audit(peer: str, details: dict[str, Any]) -> None:
        audited.append(details)

    async def send(data: bytes) -> None:
        sent.append(data)

    guard = PeerGuard(audit, failures_per_window=10**9)
    conn = Connection("192.0.2.1", guard, 1024 * 1024, 1024 * 1024 + 21, set_frame_limit=limits.append)

    def must_not_parse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a body was parsed before the key was checked")

    original = transport.parse_request
    transport.parse_request = must_not_parse  # type: ignore[assignment]
    try:
        keep = asyncio.run(handle_frame(agent, conn, frame, send))
    finally:
        transport.parse_request = original  # type: ignore[assignment]
    return [parse_response(p) for p in sent], keep, audited, limits


def _unknown_key(key: bytes) -> bytes:
    return key if key != KNOWN else bytes(16)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400))
def test_arbitrary_bytes_get_one_error_and_no_parse(agent: Agent, frame: bytes) -> None:
    if frame[1:HEADER_LEN] == KNOWN:
        frame = frame[:1] + bytes(16) + frame[HEADER_LEN:]
    packets, keep, audited, limits = _answer(agent, frame)
    assert keep and len(packets) == 1 and isinstance(packets[0], ErrorPacket)
    header_ok = len(frame) >= HEADER_LEN and frame[0] in OPCODES
    assert packets[0].code == (ErrorCode.AUTH_FAILED if header_ok else ErrorCode.INVALID_REQUEST)
    assert len(audited) == (1 if header_ok else 0)
    assert limits == []  # the frame limit is raised only for a valid key


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(OPCODES), st.binary(min_size=16, max_size=16), st.binary(max_size=2000))
def test_known_opcode_with_unknown_key_is_0x02_whatever_the_body(agent: Agent, opcode: int, key: bytes, body: bytes) -> None:
    packets, keep, audited, _ = _answer(agent, bytes([opcode]) + _unknown_key(key) + body)
    assert keep and [type(p) for p in packets] == [ErrorPacket]
    assert packets[0].code == ErrorCode.AUTH_FAILED and "Traceback" not in packets[0].message
    assert audited == [{"transport": "ws", "failures": 1, "wrong_key": 1}]


@given(st.text(max_size=200))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_text_frames_are_0x01(agent: Agent, text: str) -> None:
    packets, keep, audited, _ = _answer(agent, text)
    assert keep and len(packets) == 1 and packets[0].code == ErrorCode.INVALID_REQUEST and audited == []


def test_a_huge_declared_body_with_an_unknown_key_is_not_read(agent: Agent) -> None:
    frame = bytes([Opcode.CREATE_WORKSPACE]) + bytes(16) + (0xFFFFFFFF).to_bytes(4, "big") + b"{" * 10_000
    packets, keep, _, _ = _answer(agent, frame)
    assert keep and packets[0].code == ErrorCode.AUTH_FAILED


def test_the_budget_closes_the_connection_after_a_penalty(agent: Agent, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport, "PENALTY_SECONDS", 0)
    sent: list[bytes] = []

    async def send(data: bytes) -> None:
        sent.append(data)

    async def audit(peer: str, details: dict[str, Any]) -> None:
        pass

    async def scenario() -> list[bool]:
        conn = Connection("192.0.2.2", PeerGuard(audit, failures_per_window=2), 1 << 20, (1 << 20) + 21)
        frame = bytes([Opcode.LIST_JUPYTER]) + bytes(16)
        return [await handle_frame(agent, conn, frame, send) for _ in range(3)]

    assert asyncio.run(scenario()) == [True, True, False]
    last = parse_response(sent[-1])
    assert isinstance(last, ErrorPacket) and last.code == ErrorCode.AUTH_FAILED and "too many" in last.message
