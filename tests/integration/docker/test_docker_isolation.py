"""The two-user isolation test of tests/integration/test_local_isolation.py, on the docker runtime.

bob and carol each create a workspace (a container of its own on a network of its own, behind the
agent's firewall). Code in bob's real kernel tries to read the agent's database, keys and
agent.yaml (not in the container), carol's files, to connect to carol's JupyterLab, the agent's
API and another host address: every attempt fails; the same code in carol's kernel reads her own
files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AgentProcess, free_port
from tests.integration.docker.conftest import bridge_gateway, cleanup
from tests.integration.jupyter import execute
from tests.integration.test_local_isolation import _host_address, _net_probe, _probe

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PREFIX = f"fmltest-{os.getpid()}-iso"
TABLE = f"fmltest_{os.getpid()}_iso"
REFUSED = ("ConnectionRefusedError", "TimeoutError", "PermissionError", "OSError", "ConnectionResetError")


@pytest.fixture
def docker_agent(tmp_path: Path, docker_client: Any, workspace_image: str) -> Iterator[AgentProcess]:
    port = free_port()
    # On every address: what stops bob's kernel reaching the agent's API is the firewall, not a
    # listener that is not there. The package index on an index-only port of its own (docker.index):
    # by default it is the agent's own port, which would let a workspace reach /api and /ws too.
    a = AgentProcess(tmp_path / "agent", port, {
        "listen": f"0.0.0.0:{port}",
        "runtime": "docker",
        "docker": {"prefix": PREFIX, "firewall_table": TABLE, "image": workspace_image,
                   "index": f"{bridge_gateway(docker_client)}:{free_port()}"},
        # The workspace image ships requests and urllib3 (JupyterLab needs them): see test_docker_e2e.
        "package_management": {"startup_blocked_packages": "off"},
    })
    try:
        a.start()
        yield a
    finally:
        a.stop()
        cleanup(docker_client, PREFIX, TABLE)


def _container_ip(client: Any, name: str) -> str:
    c = next(c for c in client.containers.list(filters={"label": [f"io.fetchml.instance={PREFIX}"]})
             if name in c.name)
    nets = c.attrs["NetworkSettings"]["Networks"]
    return str(next(iter(nets.values()))["IPAddress"])


def test_each_owner_is_kept_apart_on_docker(docker_agent: AgentProcess, docker_client: Any) -> None:
    a = docker_agent
    bob = a.ml_json("jupyter", "create", "bob-box", user="bob")
    carol = a.ml_json("jupyter", "create", "carol-box", user="carol")
    try:
        wrote = execute(carol["url"], "print(open('notes.txt', 'w').write('carol-only'))")
        assert wrote.strip() == "10", wrote
        carol_dir = execute(carol["url"], "import os; print(os.getcwd())").strip()
        targets = {
            "agent_db": str(a.data_dir / "agent.db"),
            "secrets_key": str(a.data_dir / "keys" / "secrets.key"),
            "agent_yaml": str(a.config_path),
            "carol_notes": os.path.join(carol_dir, "notes.txt"),
        }
        seen_by_bob = _probe(bob["url"], targets)
        assert seen_by_bob["uid"] != 0, seen_by_bob
        for label in targets:
            assert not seen_by_bob[label].startswith("read:"), (label, seen_by_bob[label])
        seen_by_carol = _probe(carol["url"], {"carol_notes": targets["carol_notes"]})
        assert seen_by_carol["carol_notes"] == "read:carol-only"
        gateway = bridge_gateway(docker_client)
        reached = _net_probe(bob["url"], {
            "carol_lab": (_container_ip(docker_client, "carol-box"), 8888),
            "agent_api": (gateway, a.port),
            "outside": (_host_address(), a.port),
        })
        for label, outcome in reached.items():
            assert outcome in REFUSED, (label, reached)
    finally:
        a.ml("jupyter", "delete", "bob-box", "--yes", user="bob", check=False)
        a.ml("jupyter", "delete", "carol-box", "--yes", user="carol", check=False)
