"""Live updates through the real agent (the local runtime): the subscribe opcode (0x2F) hands each
client the changes its user may see, as they are written, and ends when asked to."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from fetchml_agent.client import Client
from fetchml_agent.errors import AgentUnreachable
from fetchml_agent.protocol.opcodes import Opcode
from tests.conftest import KEYS, AgentProcess, free_port


class Subscriber(threading.Thread):
    """One client subscribed in a thread; ``lines`` holds what arrived."""

    def __init__(self, agent: AgentProcess, user: str, **args: Any) -> None:
        super().__init__(daemon=True)
        self.client = Client(agent.ws_url, KEYS[user], timeout=30)
        self.args = args
        self.lines: list[dict[str, Any]] = []
        self.message = ""
        self.ready = threading.Event()

    def run(self) -> None:
        def got(chunk: bytes) -> None:
            self.lines += [json.loads(line) for line in chunk.decode().splitlines()]

        self.client.on_log = got
        seq = self.client.call(Opcode.AGENT_STATUS).data["live_seq"]
        self.ready.set()
        try:
            self.message = self.client.call(Opcode.SUBSCRIBE, {"after": seq, **self.args}, timeout=120).message
        except AgentUnreachable as exc:  # the agent stopped: what `ml status --watch` reports then
            self.message = exc.message
        finally:
            self.client.close()


def test_subscribers_see_what_they_may_see_as_it_happens(agent: AgentProcess, unique_name: str) -> None:
    owner = Subscriber(agent, "admin", topics=["workspaces"], max_events=2, timeout=60)
    other = Subscriber(agent, "bob", timeout=8)  # not shared with bob: nothing of it reaches him
    for s in (owner, other):
        s.start()
        assert s.ready.wait(30)
    agent.ml("jupyter", "create", unique_name)
    try:
        owner.join(60)
        other.join(60)
        changes = [c for c in owner.lines if c["type"] == "workspace"]
        assert [(c["name"], c["status"]) for c in changes] == [(unique_name, "starting"), (unique_name, "running")]
        assert changes[0]["seq"] < changes[1]["seq"] and owner.message == "2 changes"
        assert [c for c in other.lines if c["type"] != "heartbeat"] == [] and other.message == "0 changes"
        # shared with bob, he sees the next change (its stop)
        agent.ml("jupyter", "share", unique_name, "--team", "data-science-team", "--role", "viewer", check=False)
        agent.ml("jupyter", "access", unique_name, "--user", "bob", "--role", "viewer")
        bob = Subscriber(agent, "bob", workspace=unique_name, max_events=2, timeout=60)  # stopping, stopped
        bob.start()
        assert bob.ready.wait(30)
        agent.ml("jupyter", "stop", unique_name)
        bob.join(60)
        assert [(c["name"], c["status"]) for c in bob.lines if c["type"] == "workspace"] == [
            (unique_name, "stopping"), (unique_name, "stopped")]
    finally:
        agent.ml("jupyter", "delete", unique_name, "--yes", check=False)


def test_a_workspace_one_cannot_see_cannot_be_subscribed_to(agent: AgentProcess, unique_name: str) -> None:
    agent.ml("jupyter", "create", unique_name)
    try:
        cp = agent.ml("status", "--watch", "--json", "--workspace", unique_name, "--count", "1", user="carol",
                      check=False)
        assert cp.returncode != 0 and "Traceback" not in cp.stderr
    finally:
        agent.ml("jupyter", "delete", unique_name, "--yes", check=False)


def test_stopping_the_agent_ends_a_waiting_subscriber_and_the_shutdown_is_clean(tmp_path: Path) -> None:
    """An idle subscriber waits up to a heartbeat for its next change: the agent's shutdown ends it
    first, so uvicorn's graceful shutdown does not wait for it and cancels nothing."""
    agent = AgentProcess(tmp_path / "agent", free_port())
    with agent.running():
        sub = Subscriber(agent, "bob")  # no limit, no timeout: as `ml status --watch`
        sub.start()
        assert sub.ready.wait(30)
        agent.stop()  # SIGTERM: uvicorn's graceful shutdown
    sub.join(30)
    assert not sub.is_alive()
    log = (agent.root / "agent.log").read_text()
    assert "graceful shutdown exceeded" not in log and "Cancel" not in log, log[-2000:]
