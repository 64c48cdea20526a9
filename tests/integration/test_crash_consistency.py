"""Crash consistency: ``kill -9`` of the agent at each step of create, restart and delete.

A test-only pause point (:mod:`fetchml_agent.testpoints`) stops the agent dead at the step; the
test kills it there, starts it again, and checks that no workspace stays ``starting`` or
``stopping``, that at most one JupyterLab serves the workspace (the recorded one, if any), that a
restart yields exactly one server and that ``delete`` leaves none.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from fetchml_agent.testpoints import PAUSE_AT, PAUSE_FILE, STEPS
from tests.conftest import KEYS, ML, AgentProcess
from tests.integration.jupyter import api_status

WS = "crashy"

CASES = [
    ("create", "create.recorded"),
    ("create", "start.spawned"),
    ("create", "start.ready"),
    ("restart", "stop.stopping"),
    ("restart", "restart.stopped"),
    ("restart", "start.spawned"),
    ("restart", "start.ready"),
    ("delete", "stop.stopping"),
    ("delete", "delete.stopped"),
    ("delete", "delete.removed"),
]
assert {step for _, step in CASES} == set(STEPS)

_COMMANDS = {
    "create": ("jupyter", "create", WS),
    "restart": ("jupyter", "restart", WS),
    "delete": ("jupyter", "delete", WS, "--yes"),
}


def _wait_for(path: Path, proc: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the command ended (exit {proc.returncode}) before the pause point")
        if time.monotonic() > deadline:
            raise AssertionError("the agent never reached the pause point")
        time.sleep(0.05)


def _workspace(a: AgentProcess) -> dict | None:
    cp = a.ml("jupyter", "status", WS, "--json", check=False)  # exit 4: not running, or not found
    assert cp.returncode in (0, 4), cp.stderr
    doc = json.loads(cp.stdout)
    return None if doc.get("error") == "not_found" else doc  # type: ignore[no-any-return]


@pytest.mark.parametrize(("op", "step"), CASES, ids=[f"{op}-{step}" for op, step in CASES])
def test_kill9_at_each_step(fresh_agent: AgentProcess, op: str, step: str) -> None:
    a = fresh_agent
    if op != "create":  # the workspace exists and runs before the crash
        a.start()
        a.ml_json("jupyter", "create", WS)
        a.stop()
    marker = a.root / "paused"
    a.start(env={PAUSE_AT: step, PAUSE_FILE: str(marker)})
    env = {**os.environ, "FETCHML_SERVER": a.ws_url, "FETCHML_API_KEY": KEYS["admin"],
           "FETCHML_CONFIG": str(a.root / "no-ml-config.yaml")}
    client = subprocess.Popen([*ML, *_COMMANDS[op]], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(marker, client)
        assert marker.read_text() == step
        a.kill9()
    finally:
        client.kill()
        client.wait()

    a.start()
    ws = _workspace(a)
    assert ws is not None  # every step here comes before the row's removal
    assert ws["status"] not in ("starting", "stopping"), ws
    servers = a.servers()
    if ws["status"] == "running":
        assert len(servers) == 1
        assert "started" in api_status(ws["url"])
    else:
        assert servers == [], f"{ws['status']} workspace still has servers {servers}"

    restarted = a.ml_json("jupyter", "restart", WS)
    assert restarted["status"] == "running"
    assert len(a.servers()) == 1  # never two servers for one workspace

    a.ml("jupyter", "delete", WS, "--yes")
    assert _workspace(a) is None
    deadline = time.monotonic() + 10
    while a.servers() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert a.servers() == []
