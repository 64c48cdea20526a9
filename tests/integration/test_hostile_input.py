"""A real agent under hostile input from clients without a key, and oversized input from clients with one.

- frames from someone without a key cost the agent 17 bytes of attention: the key is checked
  before any body is read, and until a connection has presented a valid key no frame may exceed
  the largest seed request (the connection is closed at the frame's header, before its payload);
- eight connections sending 15 MiB frames with a wrong key leave the agent's resident memory
  within 100 MB of where it was, while a legitimate ``ml jupyter list`` is answered;
- arbitrary frames on one connection get one error packet each, in order, and the connection
  stays usable; the audit gets one ``auth.failed`` row per peer and minute, not one per frame;
- one address may hold ``limits.max_connections_per_peer`` connections and make
  ``limits.auth_failures_per_minute`` failures before it is slowed down and disconnected;
- request bodies are capped (``limits.max_request_body``, 413 over HTTP; ``ml`` refuses locally),
  and deeply nested JSON is ``0x01``/HTTP 400, never ``0x00``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import sqlite3
import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from fetchml_agent.errors import ErrorCode
from fetchml_agent.protocol import (
    PREAUTH_MAX_FRAME,
    DataPacket,
    ErrorPacket,
    JsonRequest,
    ListRequest,
    Opcode,
    api_key_hash,
    parse_response,
)
from tests.conftest import KEYS, AgentProcess, free_port

ADMIN = api_key_hash(KEYS["admin"])
WRONG = api_key_hash("not-a-key-of-this-agent")
OPCODES = sorted(int(op) for op in Opcode)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def auth_rows(agent: AgentProcess) -> list[dict[str, Any]]:
    conn = sqlite3.connect(agent.data_dir / "agent.db")
    try:
        rows = conn.execute("SELECT details FROM audit WHERE action = 'auth.failed' ORDER BY id").fetchall()
    finally:
        conn.close()
    return [json.loads(r[0]) for r in rows]


@pytest.fixture
def started(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[AgentProcess]:
    a = AgentProcess(tmp_path / "agent", free_port(), getattr(request, "param", {}))
    a.start()
    yield a
    a.stop()


@pytest.mark.slow
def test_wrong_key_floods_of_15_mib_frames_leave_memory_flat_and_list_answered(
    started: AgentProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="websockets")  # the clients' own noise about the reset
    assert started.proc is not None
    pid = started.proc.pid
    for _ in range(2):  # warm: imports, the list cache, the store
        started.ml_json("jupyter", "list")
    time.sleep(0.5)
    baseline = rss_kib(pid)
    peak = baseline
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, rss_kib(pid))
            time.sleep(0.01)

    body = b"{" + b" " * (15 * 1024 * 1024) + b"}"
    frame = bytes([Opcode.CREATE_WORKSPACE]) + WRONG + struct.pack(">I", len(body)) + body
    closed_codes: list[int | None] = []

    def flood() -> None:
        for _ in range(3):
            try:
                with connect(started.ws_url, compression=None, max_size=None, open_timeout=30) as ws:
                    ws.send(frame)
                    ws.recv(timeout=30)
            except ConnectionClosed as exc:
                closed_codes.append(exc.rcvd.code if exc.rcvd else None)
            except OSError:
                closed_codes.append(None)

    sampler = threading.Thread(target=sample)
    sampler.start()
    floods = [threading.Thread(target=flood) for _ in range(8)]
    for t in floods:
        t.start()
    try:
        listed = []
        while any(t.is_alive() for t in floods) or not listed:
            listed.append(started.ml_json("jupyter", "list"))  # answered during the flood
        for t in floods:
            t.join()
    finally:
        stop.set()
        sampler.join()
    assert all("services" in doc for doc in listed)
    assert len(closed_codes) == 24  # every flood connection was closed by the agent
    growth_mb = (peak - baseline) / 1024
    assert growth_mb < 100, f"resident memory grew by {growth_mb:.0f} MB (from {baseline / 1024:.0f} MB)"
    # Each frame was refused at its header (1009, message too big), audited in aggregate: the
    # opening row at once, the rest as one summary (written at shutdown here, before its minute ends).
    rows = auth_rows(started)
    assert len(rows) == 1 and rows[0]["oversized_frame"] == 1
    started.stop()
    rows = auth_rows(started)
    assert len(rows) == 2 and sum(r.get("oversized_frame", 0) for r in rows) == 24


@pytest.fixture(scope="module")
def tolerant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    """An agent whose failure budget fuzzing cannot exhaust, so every frame gets its answer."""
    a = AgentProcess(tmp_path_factory.mktemp("tolerant"), free_port(), {"limits": {"auth_failures_per_minute": 10**6}})
    a.start()
    yield a
    a.stop()


@pytest.fixture(scope="module")
def fuzz_ws(tolerant: AgentProcess) -> Iterator[Any]:
    with connect(tolerant.ws_url, compression=None) as ws:
        yield ws


_FRAMES = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda op, key, body: bytes([op]) + key + body,
              st.sampled_from(OPCODES), st.binary(min_size=16, max_size=16), st.binary(max_size=3000)),
    st.builds(lambda op, body: bytes([op]) + WRONG + struct.pack(">I", len(body)) + body,
              st.sampled_from(OPCODES), st.binary(max_size=500)),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(_FRAMES, min_size=1, max_size=5))
def test_fuzzed_pre_authentication_frames_one_error_each_in_order(tolerant: AgentProcess, fuzz_ws: Any,
                                                                    frames: list[bytes]) -> None:
    frames = [f[:1] + WRONG + f[17:] if f[1:17] == ADMIN else f for f in frames]  # never a valid key
    for f in frames:  # back to back
        fuzz_ws.send(f)
    for f in frames:
        pkt = parse_response(fuzz_ws.recv(timeout=30))
        assert isinstance(pkt, ErrorPacket), f
        expected = ErrorCode.AUTH_FAILED if len(f) >= 17 and f[0] in OPCODES else ErrorCode.INVALID_REQUEST
        assert pkt.code == expected, (f, pkt)


def test_after_the_fuzz_the_connection_works_and_the_audit_is_aggregated(tolerant: AgentProcess, fuzz_ws: Any) -> None:
    fuzz_ws.send(ListRequest(ADMIN).serialize())
    assert isinstance(parse_response(fuzz_ws.recv(timeout=30)), DataPacket)
    rows = auth_rows(tolerant)
    assert 1 <= len(rows) <= 3, rows  # one at the first failure, then at most one per minute
    tolerant.stop()  # the pending minute is written at shutdown, as one row
    rows = auth_rows(tolerant)
    assert sum(r["failures"] for r in rows) > 400 and len(rows) <= 4
    tolerant.start()


@pytest.mark.parametrize("started", [{"limits": {"auth_failures_per_minute": 3}}], indirect=True)
def test_failure_budget_disconnects_the_address_but_not_a_valid_key(started: AgentProcess) -> None:
    with connect(started.ws_url, compression=None) as good:
        good.send(ListRequest(ADMIN).serialize())
        assert isinstance(parse_response(good.recv(timeout=10)), DataPacket)
        with connect(started.ws_url, compression=None) as bad:
            for _ in range(3):
                bad.send(ListRequest(WRONG).serialize())
                pkt = parse_response(bad.recv(timeout=10))
                assert isinstance(pkt, ErrorPacket) and pkt.code == ErrorCode.AUTH_FAILED
            bad.send(ListRequest(WRONG).serialize())
            pkt = parse_response(bad.recv(timeout=10))
            assert isinstance(pkt, ErrorPacket) and "too many failed attempts" in pkt.message
            with pytest.raises(ConnectionClosed) as closed:
                bad.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        # The same address with a valid key is not slowed down, on an open or a new connection.
        good.send(ListRequest(ADMIN).serialize())
        assert isinstance(parse_response(good.recv(timeout=10)), DataPacket)
    assert started.ml_json("jupyter", "list")["services"] == []
    req = urllib.request.Request(started.http_url + "/api/v1/jupyter/workspaces", headers={"Authorization": "Bearer nope"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    assert info.value.code == 429 and json.loads(info.value.read())["code"] == ErrorCode.AUTH_FAILED
    assert len(auth_rows(started)) == 1
    started.stop()
    rows = auth_rows(started)
    assert len(rows) == 2 and rows[1]["failures"] == 4 and rows[1]["transport"] == "http,ws"


@pytest.mark.parametrize("started", [{"limits": {"max_connections_per_peer": 3}}], indirect=True)
def test_connections_per_peer_are_limited(started: AgentProcess) -> None:
    with contextlib.ExitStack() as stack:
        held = [stack.enter_context(connect(started.ws_url, compression=None)) for _ in range(3)]
        with pytest.raises(InvalidStatus) as info:
            connect(started.ws_url, compression=None, open_timeout=10)
        assert info.value.response.status_code == 429
        assert b"max_connections_per_peer" in info.value.response.body
        held[0].close()
        deadline = time.monotonic() + 10
        while True:  # the agent counts the close once it has seen it
            try:
                with connect(started.ws_url, compression=None) as ws:
                    ws.send(ListRequest(ADMIN).serialize())
                    assert isinstance(parse_response(ws.recv(timeout=10)), DataPacket)
                break
            except InvalidStatus:
                assert time.monotonic() < deadline
                time.sleep(0.1)


def test_pre_authentication_frame_limit_then_raised_by_a_valid_key(tolerant: AgentProcess) -> None:
    big = JsonRequest(Opcode.WORKSPACE_INFO, WRONG, {"name": "x" * PREAUTH_MAX_FRAME}).serialize()
    with connect(tolerant.ws_url, compression=None) as ws:
        ws.send(big)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    with connect(tolerant.ws_url, compression=None) as ws:
        ws.send(ListRequest(ADMIN).serialize())
        parse_response(ws.recv(timeout=10))
        ws.send(JsonRequest(Opcode.WORKSPACE_INFO, ADMIN, {"name": "x" * PREAUTH_MAX_FRAME}).serialize())
        pkt = parse_response(ws.recv(timeout=10))  # read and answered: the name is not a workspace
        assert isinstance(pkt, ErrorPacket) and pkt.code in (ErrorCode.NOT_FOUND, ErrorCode.INVALID_ARGUMENT)
        deep = {"name": "x", "config": json.loads("[" * 40 + "]" * 40)}
        ws.send(JsonRequest(Opcode.CREATE_WORKSPACE, ADMIN, deep).serialize())
        pkt = parse_response(ws.recv(timeout=10))
        assert isinstance(pkt, ErrorPacket) and pkt.code == ErrorCode.INVALID_REQUEST and "nested" in pkt.message
        ws.send(JsonRequest(Opcode.CREATE_WORKSPACE, ADMIN, {"name": "y" * (2 * 1024 * 1024)}).serialize())
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


def _http(agent: AgentProcess, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(
        agent.http_url + "/api/v1/jupyter/workspaces", data=body, method="POST",
        headers={"Authorization": f"Bearer {KEYS['admin']}", "Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _raw_post(agent: AgentProcess, headers: str, chunks: list[bytes]) -> str:
    """POST through a plain socket: the agent may answer and close before the body is sent."""
    with socket.create_connection(("127.0.0.1", agent.port), timeout=30) as s:
        s.sendall(
            b"POST /api/v1/jupyter/workspaces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {KEYS['admin']}\r\n{headers}\r\n".encode()
        )
        try:
            for chunk in chunks:
                s.sendall(chunk)
        except OSError:
            pass  # answered and closed before the end
        answer = b""
        try:
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                data = s.recv(65536)
                if not data:
                    break
                answer += data
        except OSError:
            pass
    return answer.decode(errors="replace")


def test_http_bodies_are_capped_and_deep_json_is_400(tolerant: AgentProcess) -> None:
    body = json.dumps({"name": "z" * (2 * 1024 * 1024)}).encode()
    answer = _raw_post(tolerant, f"Content-Length: {len(body)}\r\n", [body[i : i + 65536] for i in range(0, len(body), 65536)])
    assert answer.startswith("HTTP/1.1 413"), answer[:300]
    doc = json.loads(answer.split("\r\n\r\n", 1)[1])
    assert doc["code"] == ErrorCode.INVALID_REQUEST and "too large" in doc["message"]
    status, doc = _http(tolerant, b'{"name": "x", "config": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    assert status == 400 and doc["code"] == ErrorCode.INVALID_REQUEST and "nested too deeply" in doc["message"]
    status, doc = _http(tolerant, b"[1, 2]")
    assert status == 400 and doc["code"] == ErrorCode.INVALID_REQUEST


def test_http_chunked_body_is_counted_while_read(tolerant: AgentProcess) -> None:
    chunk = b" " * 65536
    chunks = [b"%x\r\n" % len(chunk) + chunk + b"\r\n"] * 40 + [b"0\r\n\r\n"]  # 2.5 MiB, no Content-Length
    answer = _raw_post(tolerant, "Transfer-Encoding: chunked\r\n", chunks)
    assert answer.startswith("HTTP/1.1 413"), answer[:300]


def test_ml_refuses_a_request_larger_than_the_agent_takes(tolerant: AgentProcess, tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("".join(f"package-number-{i}==1.0\n" for i in range(60_000)))
    cp = tolerant.ml("jupyter", "check-package", "--requirements", str(requirements), check=False)
    assert cp.returncode != 0 and "Traceback" not in cp.stderr
    assert "takes at most" in cp.stderr and "max_request_body" in cp.stderr


def test_the_agent_process_survives_all_of_it(tolerant: AgentProcess) -> None:
    assert tolerant.proc is not None and tolerant.proc.poll() is None
    assert "services" in tolerant.ml_json("jupyter", "list")
