"""The binary protocol against a real agent: bad frames, keys and roles."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from websockets.sync.client import connect

from fetchml_agent.errors import ErrorCode
from fetchml_agent.protocol import (
    DataPacket,
    ErrorPacket,
    JsonRequest,
    ListRequest,
    Opcode,
    StopRequest,
    api_key_hash,
    parse_response,
)
from tests.conftest import KEYS, AgentProcess, free_port


def _roundtrip(ws: Any, frame: bytes | str) -> Any:
    ws.send(frame)
    return parse_response(ws.recv(timeout=10))


def test_malformed_frames_get_0x01_and_the_connection_keeps_working(agent: AgentProcess) -> None:
    good = ListRequest(api_key_hash(KEYS["admin"])).serialize()
    bad_frames: list[bytes | str] = [
        b"",
        b"\x0f",
        good[:10],
        b"\x0d" + api_key_hash(KEYS["admin"]) + b"\x40short",
        good + b"\x00",
        b"\xee" + api_key_hash(KEYS["admin"]),
        b"\x20" + api_key_hash(KEYS["admin"]) + b"\x00\x00\x00\x05[1,2]",
        "a text frame",
    ]
    with connect(agent.ws_url) as ws:
        for frame in bad_frames:
            pkt = _roundtrip(ws, frame)
            assert isinstance(pkt, ErrorPacket), frame
            assert pkt.code == ErrorCode.INVALID_REQUEST, (frame, pkt)
            assert "Traceback" not in pkt.message + pkt.details
        pkt = _roundtrip(ws, good)
        assert isinstance(pkt, DataPacket) and pkt.type == "jupyter_services"
        assert "services" in pkt.decode_json()


def test_wrong_key_gets_0x02_over_ws_and_401_over_http(agent: AgentProcess) -> None:
    with connect(agent.ws_url) as ws:
        pkt = _roundtrip(ws, ListRequest(api_key_hash("not-a-key")).serialize())
        assert isinstance(pkt, ErrorPacket) and pkt.code == ErrorCode.AUTH_FAILED
        pkt = _roundtrip(ws, ListRequest(api_key_hash(KEYS["bob"])).serialize())
        assert isinstance(pkt, DataPacket)
    req = urllib.request.Request(agent.http_url + "/api/v1/jupyter/workspaces", headers={"Authorization": "Bearer nope"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=5)
    assert info.value.code == 401 and json.loads(info.value.read())["code"] == 2


def test_ml_wrong_or_missing_key(agent: AgentProcess) -> None:
    cp = agent.ml("jupyter", "list", check=False, env={"FETCHML_API_KEY": "nope"})
    assert cp.returncode == 3 and "authentication failed" in cp.stderr and "Traceback" not in cp.stderr
    cp = agent.ml("jupyter", "list", "--json", check=False, env={"FETCHML_API_KEY": ""})
    assert cp.returncode == 3 and "no API key" in cp.stderr


def test_unknown_workspace_and_bad_name_codes(agent: AgentProcess) -> None:
    with connect(agent.ws_url) as ws:
        pkt = _roundtrip(ws, StopRequest(api_key_hash(KEYS["admin"]), "no-such-service").serialize())
        assert isinstance(pkt, ErrorPacket) and pkt.code == ErrorCode.NOT_FOUND
        pkt = _roundtrip(ws, JsonRequest(Opcode.CREATE_WORKSPACE, api_key_hash(KEYS["admin"]), {"name": "Bad Name!"}).serialize())
        assert isinstance(pkt, ErrorPacket) and pkt.code == ErrorCode.INVALID_ARGUMENT
        pkt = _roundtrip(ws, JsonRequest(Opcode.CREATE_WORKSPACE, api_key_hash(KEYS["admin"]), {"nome": "x"}).serialize())
        assert isinstance(pkt, ErrorPacket) and pkt.code == ErrorCode.INVALID_ARGUMENT and "name" in pkt.message
    for bad in ("Bad_Name", "-lead", "trail-", "x" * 64, "1abc"):
        cp = agent.ml("jupyter", "create", "--", bad, check=False)
        assert cp.returncode == 2 and "invalid workspace name" in cp.stderr, bad


def test_duplicate_create_is_a_conflict(agent: AgentProcess, unique_name: str) -> None:
    agent.ml_json("jupyter", "create", unique_name)
    try:
        cp = agent.ml("jupyter", "create", unique_name, check=False)
        assert cp.returncode == 4 and "already exists" in cp.stderr
    finally:
        agent.ml("jupyter", "delete", unique_name, "--yes")


def test_users_cannot_touch_each_others_workspaces(agent: AgentProcess, unique_name: str) -> None:
    ws = agent.ml_json("jupyter", "create", unique_name, user="bob")
    try:
        assert ws["owner"] == "bob"
        assert unique_name not in [s["name"] for s in agent.ml_json("jupyter", "list", user="carol")["services"]]
        # One she may not see answers as if it did not exist, without naming its owner.
        for verb in (("info", unique_name), ("stop", unique_name), ("delete", unique_name, "--yes")):
            cp = agent.ml("jupyter", *verb, user="carol", check=False)
            assert cp.returncode == 4 and "no workspace or service named" in cp.stderr, verb
            assert "bob" not in cp.stderr
        with connect(agent.ws_url) as conn:
            pkt = _roundtrip(conn, StopRequest(api_key_hash(KEYS["carol"]), ws["id"]).serialize())
            assert isinstance(pkt, ErrorPacket) and pkt.code == ErrorCode.NOT_FOUND
        # Sharing with carol's team lets her see and use it, but not delete it.
        agent.ml("jupyter", "share", unique_name, "--team", "data-science-team", "--role", "collaborator", user="bob")
        assert agent.ml_json("jupyter", "info", unique_name, user="carol")["name"] == unique_name
        assert agent.ml("jupyter", "delete", unique_name, "--yes", user="carol", check=False).returncode == 3
        agent.ml("jupyter", "revoke", unique_name, "team:data-science-team", user="bob")
        assert agent.ml("jupyter", "info", unique_name, user="carol", check=False).returncode == 4
        # Admins see everything.
        assert unique_name in [s["name"] for s in agent.ml_json("jupyter", "list")["services"]]
    finally:
        agent.ml("jupyter", "delete", unique_name, "--yes", user="bob", check=False)


def test_gpu_request_beyond_host_is_a_clear_error(agent: AgentProcess, unique_name: str) -> None:
    cp = agent.ml("jupyter", "create", unique_name, "--gpu", "1", check=False)
    assert cp.returncode == 8
    assert "GPU" in cp.stderr and "free on this host" in cp.stderr
    assert unique_name not in [s["name"] for s in agent.ml_json("jupyter", "list")["services"]]


def test_http_api_uses_the_same_operations(agent: AgentProcess, unique_name: str) -> None:
    def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        req = urllib.request.Request(
            agent.http_url + path, method=method, data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {KEYS['admin']}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    status, doc = call("POST", "/api/v1/jupyter/workspaces", {"name": unique_name, "resources": {"cpu": 1, "memory": "1g"}})
    assert status == 201 and doc["status"] == "running" and doc["resources"]["memory"] == "1g"
    status, doc = call("GET", f"/api/v1/jupyter/workspaces/{unique_name}")
    assert status == 200 and doc["name"] == unique_name
    status, doc = call("GET", "/api/v1/jupyter/workspaces")
    assert status == 200 and unique_name in [s["name"] for s in doc["services"]]
    status, doc = call("POST", "/api/v1/jupyter/workspaces", {"name": unique_name})
    assert status == 409 and doc["error"] == "already_exists"
    status, doc = call("DELETE", f"/api/v1/jupyter/workspaces/{unique_name}")
    assert status == 200
    status, doc = call("GET", f"/api/v1/jupyter/workspaces/{unique_name}")
    assert status == 404 and doc["code"] == ErrorCode.NOT_FOUND


def test_agent_status(agent: AgentProcess) -> None:
    doc = agent.ml_json("status")
    assert doc["agent"]["user"] == "admin" and doc["runtime"]["name"] == "local"
    text = agent.ml("status").stdout
    assert "runtime" in text and "workspaces" in text


def test_unreachable_agent_has_its_own_exit_code(agent: AgentProcess) -> None:
    address = f"ws://127.0.0.1:{free_port()}/ws"
    cp = agent.ml("jupyter", "list", check=False, env={"FETCHML_SERVER": address})
    assert cp.returncode == 7
    assert address in cp.stderr and "make dev-up" in cp.stderr and "Traceback" not in cp.stderr


def test_help_everywhere(agent: AgentProcess) -> None:
    assert "jupyter" in agent.ml("--help").stdout
    for verb in ("create", "list", "info", "status", "stop", "restart", "delete", "start"):
        assert "usage: ml jupyter " + verb in agent.ml("jupyter", verb, "--help").stdout
    cp = agent.ml("jupyter", "frobnicate", check=False)
    assert cp.returncode == 2 and "invalid choice" in cp.stderr


def test_audit_trail_records_actions_and_denials(agent: AgentProcess, unique_name: str) -> None:
    agent.ml_json("jupyter", "create", unique_name, user="bob")
    agent.ml("jupyter", "stop", unique_name, user="carol", check=False)  # denied, not audited as a stop
    agent.ml("jupyter", "stop", unique_name, user="bob")
    events = agent.ml_json("jupyter", "audit", unique_name, user="bob")["events"]
    actions = [e["action"] for e in events]
    assert "workspace.create" in actions and "workspace.stop" in actions
    assert all(e["user"] == "bob" for e in events if e["action"].startswith("workspace."))
    csv_text = agent.ml("jupyter", "audit", unique_name, "--export=csv", user="bob").stdout
    assert csv_text.splitlines()[0] == "id,time,ts,user,action,workspace,workspace_id,outcome,details,digest"
    assert "workspace.create" in csv_text
    assert agent.ml("jupyter", "audit", unique_name, user="carol", check=False).returncode == 4  # not hers to see
    assert agent.ml("jupyter", "audit", user="bob", check=False).returncode == 3
    agent.ml("jupyter", "list", check=False, env={"FETCHML_API_KEY": "wrong"})
    whole = agent.ml_json("jupyter", "audit", "--action", "auth.")["events"]
    assert any(e["action"] == "auth.failed" and e["outcome"] == "denied" for e in whole)
    agent.ml("jupyter", "delete", unique_name, "--yes", user="bob")
    assert any(e["action"] == "workspace.delete" for e in agent.ml_json("jupyter", "audit", unique_name)["events"])
