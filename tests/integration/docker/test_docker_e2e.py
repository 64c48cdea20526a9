"""End to end on the docker runtime: the real agent process and the real ``ml`` command.

create → the URL answers → list; ``kill -9`` of the agent and a new start → the same container is
adopted, not duplicated; delete → container, volume, network and firewall rules are gone.
"""

from __future__ import annotations

import os
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AgentProcess, free_port
from tests.integration.docker.conftest import cleanup

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PREFIX = f"fmltest-{os.getpid()}-e2e"
TABLE = f"fmltest_{os.getpid()}_e2e"


@pytest.fixture
def docker_agent(tmp_path: Path, docker_client: Any, workspace_image: str) -> Iterator[AgentProcess]:
    a = AgentProcess(
        tmp_path / "agent",
        free_port(),
        {
            "runtime": "docker",
            "docker": {"prefix": PREFIX, "firewall_table": TABLE, "image": workspace_image},
            # The workspace image ships requests and urllib3 (JupyterLab needs them), which the
            # seed's default blocked list names: the seed's case for turning the startup scan off.
            "package_management": {"startup_blocked_packages": "off"},
        },
    )
    try:
        a.start()
        yield a
    finally:
        a.stop()
        cleanup(docker_client, PREFIX, TABLE)


def ours(client: Any) -> list[Any]:
    return client.containers.list(all=True, filters={"label": [f"io.fetchml.instance={PREFIX}"]})


def test_create_adopt_after_kill9_delete(docker_agent: AgentProcess, docker_client: Any) -> None:
    a = docker_agent
    a.ml("jupyter", "create", "dock1", "--cpu=1", "--memory=512m")
    info = a.ml_json("jupyter", "info", "dock1")
    assert info["status"] == "running", info
    url = urllib.parse.urlsplit(info["url"])
    assert url.hostname in ("127.0.0.1", "localhost"), info["url"]
    token = urllib.parse.parse_qs(url.query)["token"][0]
    status = urllib.request.Request(
        f"{url.scheme}://{url.netloc}/api/status", headers={"Authorization": f"token {token}"}
    )
    with urllib.request.urlopen(status, timeout=10) as r:
        assert r.status == 200
    (container,) = ours(docker_client)
    assert container.attrs["HostConfig"]["NanoCpus"] == 1_000_000_000
    assert container.attrs["HostConfig"]["Memory"] == 512 * 2**20
    per = a.ml_json("jupyter", "limits", "dock1")["limits"]["per_resource"]  # per resource, not one "True"
    assert per["cpu"].startswith("enforced (docker cgroup limits") and per["memory"].startswith("enforced (docker")
    assert per["disk"] == "no limit asked for" and per["gpu"] == "none asked for"
    assert "yes ()" not in a.ml("jupyter", "info", "dock1").stdout

    a.kill9()
    a.start()
    listed = a.ml_json("jupyter", "list")
    assert any(s.get("name") == "dock1" or s.get("workspace") == "dock1" for s in _services(listed)), listed
    assert a.ml_json("jupyter", "info", "dock1")["status"] == "running"
    (again,) = ours(docker_client)
    assert again.id == container.id  # adopted, not started twice

    iface = docker_client.networks.get(f"{PREFIX}-dock1").attrs["Options"]["com.docker.network.bridge.name"]
    a.ml("jupyter", "delete", "dock1", "--yes")
    assert ours(docker_client) == []
    assert not docker_client.networks.list(names=[f"{PREFIX}-dock1"])
    assert not [v for v in docker_client.volumes.list() if v.name == f"{PREFIX}-dock1-work"]
    rules = subprocess.run(["nft", "list", "table", "inet", TABLE], capture_output=True, text=True).stdout
    assert iface not in rules


def _services(listed: Any) -> list[dict[str, Any]]:
    if isinstance(listed, dict):
        for key in ("services", "workspaces"):
            if isinstance(listed.get(key), list):
                return listed[key]
    return listed if isinstance(listed, list) else []


def test_versions_the_image_does_not_have_are_refused(docker_agent: AgentProcess, docker_client: Any,
                                                      tmp_path: Path) -> None:
    """environment.python_version is the image's on docker: read inside the started container; a
    version the image does not have refuses the create (exit 2, naming the image's), nothing left."""
    config = tmp_path / "old-python.yaml"
    config.write_text("environment:\n  python_version: '2.7'\n")
    cp = docker_agent.ml("jupyter", "create", "dock2", "--config", str(config), check=False)
    assert cp.returncode == 2 and "environment.python_version 2.7: the image" in cp.stderr, cp.stderr
    assert "has Python 3." in cp.stderr
    assert ours(docker_client) == [] and "dock2" not in docker_agent.ml("jupyter", "list").stdout
