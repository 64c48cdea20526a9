"""A client written from the seed alone, byte by byte, against a real agent.

The seed defines one answer per request: ``0x0D`` → success or error, ``0x0E`` → success or
error, ``0x0F`` → one data packet. Requests sent back to back on one connection are answered in
order, one final packet each, so such a client never reads an answer meant for another request.
The project's ``ml`` announces the ``stream`` capability (HELLO) and keeps its progress output.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

from fetchml_agent.errors import ErrorCode
from tests.conftest import KEYS, AgentProcess

KEY = hashlib.sha256(KEYS["admin"].encode()).digest()[:16]  # the seed's api_key_hash


def start_frame(name: str, workspace: str = "", password: str = "") -> bytes:
    n, w, p = name.encode(), workspace.encode(), password.encode()
    return b"\x0d" + KEY + bytes([len(n)]) + n + struct.pack(">H", len(w)) + w + bytes([len(p)]) + p


def stop_frame(service_id: str) -> bytes:
    s = service_id.encode()
    return b"\x0e" + KEY + bytes([len(s)]) + s


LIST = b"\x0f" + KEY


def read(ws: Any) -> tuple[int, Any]:
    """One response, decoded the way a seed client would: (packet type, fields)."""
    raw = ws.recv(timeout=180)
    kind = raw[0]
    assert len(raw) >= 9
    body = raw[9:]
    if kind == 0x00:
        (n,) = struct.unpack(">H", body[:2])
        assert len(body) == 2 + n
        return kind, body[2:].decode()
    if kind == 0x01:
        code = body[0]
        (n,) = struct.unpack(">H", body[1:3])
        message = body[3 : 3 + n].decode()
        (d,) = struct.unpack(">H", body[3 + n : 5 + n])
        assert len(body) == 5 + n + d
        return kind, (code, message)
    if kind == 0x04:
        (t,) = struct.unpack(">H", body[:2])
        kind_name = body[2 : 2 + t].decode()
        (p,) = struct.unpack(">I", body[2 + t : 6 + t])
        assert len(body) == 6 + t + p
        return kind, (kind_name, json.loads(body[6 + t :]))
    raise AssertionError(f"a seed client does not know packet type 0x{kind:02X}")


def services(packet: tuple[int, Any]) -> dict[str, Any]:
    kind, (type_name, doc) = packet
    assert kind == 0x04 and type_name == "jupyter_services"
    return {s["name"]: s for s in doc["services"]}


def test_start_then_list_back_to_back_get_one_answer_each(agent: AgentProcess, tmp_path: Path, unique_name: str) -> None:
    folder = tmp_path / "notebooks"
    folder.mkdir()
    try:
        with connect(agent.ws_url, compression=None) as ws:
            ws.send(start_frame(unique_name, str(folder)))
            ws.send(LIST)
            ws.send(LIST)
            kind, message = read(ws)
            assert kind == 0x00 and "started" in message, message  # the start: one success, no progress
            first = services(read(ws))  # the first list, not a leftover of the start
            assert first[unique_name]["status"] == "running"
            assert services(read(ws)) == first
            service_id = first[unique_name]["id"]

            # Starting what runs is one success too; stop is one success; in order with lists.
            ws.send(start_frame(unique_name, str(folder)))
            ws.send(stop_frame(service_id))
            ws.send(LIST)
            assert read(ws)[0] == 0x00
            kind, message = read(ws)
            assert kind == 0x00 and service_id in message
            assert services(read(ws))[unique_name]["status"] == "stopped"

            # Malformed frames and failures between valid requests: one 0x01/error each, in order.
            ws.send(b"\x0d" + KEY + b"\x40short")
            ws.send(LIST)
            ws.send("a text frame")
            ws.send(stop_frame("no-such-service"))
            ws.send(b"\x0f")
            ws.send(LIST)
            answers = [read(ws) for _ in range(6)]
            assert [a[0] for a in answers] == [0x01, 0x04, 0x01, 0x01, 0x01, 0x04]
            assert answers[0][1][0] == answers[2][1][0] == answers[4][1][0] == ErrorCode.INVALID_REQUEST
            assert answers[3][1][0] == ErrorCode.NOT_FOUND

            # A start that fails is one error packet.
            ws.send(start_frame("Bad Name!"))
            ws.send(LIST)
            kind, (code, _) = read(ws)
            assert kind == 0x01 and code == ErrorCode.INVALID_ARGUMENT
            services(read(ws))
    finally:
        agent.ml("jupyter", "delete", unique_name, "--yes", check=False)


def test_ml_opts_in_and_keeps_its_progress(agent: AgentProcess, tmp_path: Path, unique_name: str) -> None:
    folder = tmp_path / "nb"
    folder.mkdir()
    try:
        cp = agent.ml("jupyter", "start", "--name", unique_name, "--workspace", str(folder), user="admin")
        assert "  … " in cp.stderr  # progress packets, which only a client that said hello receives
        assert "started" in cp.stderr
        doc = agent.ml_json("jupyter", "start", "--name", unique_name, "--workspace", str(folder), user="admin")
        assert doc["name"] == unique_name and doc["status"] == "running"  # the data packet too
    finally:
        agent.ml("jupyter", "delete", unique_name, "--yes", check=False)


def test_hello_answers_what_the_agent_accepted(agent: AgentProcess) -> None:
    def hello(body: bytes) -> bytes:
        return b"\x10" + KEY + struct.pack(">I", len(body)) + body

    with connect(agent.ws_url, compression=None) as ws:
        ws.send(hello(b'{"client": "seed-plus", "capabilities": ["stream", "teleport"]}'))
        kind, (type_name, doc) = read(ws)
        assert kind == 0x04 and type_name == "hello"
        assert doc["capabilities"] == ["stream"] and doc["user"] == "admin" and doc["protocol"] == 1
        assert doc["max_frame"] >= 1024 * 1024
        ws.send(hello(b'{"capabilities": "stream"}'))
        kind, (code, _) = read(ws)
        assert kind == 0x01 and code == ErrorCode.INVALID_ARGUMENT
        ws.send(LIST)
        services(read(ws))
