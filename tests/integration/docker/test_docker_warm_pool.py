"""The docker runtime's warm pool (issue #16, docs/warm-pool.md) through the real agent and `ml`.

A create that asks for nothing special claims a pre-started member: the owner's personal token
opens it at once, another person's does not; the next owner gets another member (never the
first one again) and finds nothing of the first owner's files; a profile's claim has the
profile's CPU and memory limits; a create that asks for something else starts cold; deleting a claimed workspace removes the member's volume and network with it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AgentProcess, free_port
from tests.integration.docker.conftest import cleanup
from tests.integration.jupyter import put_contents
from tests.integration.pools import get, pool_status, token_of, wait_ready

PREFIX = f"fmltest-{os.getpid()}-wp"
TABLE = f"fmltest_{os.getpid()}_wp"


@pytest.fixture
def pool_agent(tmp_path: Path, docker_client: Any, workspace_image: str) -> Iterator[AgentProcess]:
    a = AgentProcess(tmp_path / "agent", free_port(), {
        "runtime": "docker",
        "docker": {"prefix": PREFIX, "firewall_table": TABLE, "image": workspace_image},
        "package_management": {"startup_blocked_packages": "off"},
        "warm_pool": {"size": 1, "profiles": [{"name": "small", "size": 1, "cpu": 1, "memory": "512m"}]},
    })
    try:
        a.start()
        yield a
    finally:
        a.stop()
        cleanup(docker_client, PREFIX, TABLE)


def test_claims_serve_their_owner_and_nothing_crosses(pool_agent: AgentProcess, docker_client: Any) -> None:
    a = pool_agent
    wait_ready(a)
    one = a.ml_json("jupyter", "create", "wp-one", user="bob")
    assert one["start"]["kind"] == "claim" and one["start"]["pool"] == "default", one
    member_one = one["start"]["member"]
    assert get(one["url"], "api/status", token_of(one["url"]))[0] == 200  # the owner's own token, at once
    put_contents(one["url"], "secret.txt", {"type": "file", "format": "text", "content": "bob's"})
    assert "claimed from warm pool default" in a.ml("jupyter", "info", "wp-one", user="bob").stdout
    (container,) = docker_client.containers.list(filters={"name": f"^{PREFIX}-wp-one$"})
    assert container.labels["io.fetchml.pool.member"] == member_one

    wait_ready(a)  # refilled in the background with a new member
    two = a.ml_json("jupyter", "create", "wp-two", user="carol")
    assert two["start"]["kind"] == "claim" and two["start"]["member"] != member_one
    status, listing = get(two["url"], "api/contents", token_of(two["url"]))
    assert status == 200 and [f["name"] for f in listing["content"]] == []  # nothing of bob's
    assert get(two["url"], "api/status", token_of(one["url"]))[0] in (401, 403)  # bob's token is not carol's
    assert get(one["url"], "api/contents/secret.txt", token_of(one["url"]))[0] == 200

    # A profile's member has the profile's limits, which the create asked for: as a cold start would.
    wait_ready(a, "small")
    small = a.ml_json("jupyter", "create", "wp-small", "--cpu", "1", "--memory", "512m", user="bob")
    assert small["start"]["kind"] == "claim" and small["start"]["pool"] == "small"
    assert small["limits"]["enforced"] and small["resources"]["memory"] == "512m"
    (limited,) = docker_client.containers.list(filters={"name": f"^{PREFIX}-wp-small$"})
    assert limited.attrs["HostConfig"]["NanoCpus"] == 1_000_000_000
    assert limited.attrs["HostConfig"]["Memory"] == 512 * 2**20

    cold = a.ml_json("jupyter", "create", "wp-cold", "--cpu", "2", user="bob")
    assert cold["start"]["kind"] == "cold"
    pool = pool_status(a)
    assert pool["claims"] == 2 and pool["size"] == 1
    assert "warm pool default: size 1" in a.ml("status").stdout

    a.ml("jupyter", "delete", "wp-one", "--yes", user="bob")
    assert not docker_client.volumes.list(filters={"name": f"{PREFIX}-{member_one}-work"})
    assert not docker_client.networks.list(names=[f"{PREFIX}-{member_one}"])
    audit = [e["action"] for e in a.ml_json("jupyter", "audit", "wp-two")["events"]]
    assert "access.server_bind" in audit and "workspace.create" in audit


def test_claimed_workspace_stops_starts_and_survives_an_agent_restart(pool_agent: AgentProcess,
                                                                      docker_client: Any) -> None:
    a = pool_agent
    wait_ready(a)
    ws = a.ml_json("jupyter", "create", "wp-keep", user="bob")
    assert ws["start"]["kind"] == "claim"
    member = ws["start"]["member"]
    put_contents(ws["url"], "notes.txt", {"type": "file", "format": "text", "content": "kept"})
    a.ml("jupyter", "stop", "wp-keep", user="bob")
    a.ml("jupyter", "start", "--name", "wp-keep", user="bob")
    again = a.ml_json("jupyter", "info", "wp-keep", user="bob")
    assert again["status"] == "running" and get(again["url"], "api/contents/notes.txt", token_of(again["url"]))[0] == 200

    wait_ready(a)  # a member nobody claimed: gone after the restart (its secrets were in memory)
    label = {"label": [f"io.fetchml.instance={PREFIX}", "io.fetchml.pool.member"]}
    waiting = {c.labels["io.fetchml.pool.member"] for c in docker_client.containers.list(filters=label)} - {member}
    assert waiting
    a.kill9()
    a.start()
    after = a.ml_json("jupyter", "info", "wp-keep", user="bob")
    assert after["status"] == "running" and get(after["url"], "api/status", token_of(after["url"]))[0] == 200
    left = {c.labels["io.fetchml.pool.member"] for c in docker_client.containers.list(all=True, filters=label)}
    assert member in left and not (waiting & left)

