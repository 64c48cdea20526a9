"""The agent's filtering index from inside a docker workspace, through the real agent and ``ml``.

Containers cannot reach the agent's 127.0.0.1 listener: the agent also serves ONLY ``/index`` on
the bridge gateway. In a real workspace container pip installs an allowed tiny wheel through it,
a blocked one fails with the policy's message, and ``--index-url`` elsewhere is refused by the
network. From the same container ``/api`` and ``/ws`` are not served.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AgentProcess
from tests.integration.docker.conftest import cleanup
from tests.integration.packages.world import agent_for, make_upstream, make_wheelhouse
from tests.netfixtures import Server

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PREFIX = f"fmltest-{os.getpid()}-idx"
TABLE = f"fmltest_{os.getpid()}_idx"


@pytest.fixture
def docker_pkg_agent(tmp_path: Path, docker_client: Any, workspace_image: str) -> Iterator[AgentProcess]:
    with make_upstream(make_wheelhouse(tmp_path / "wheels")) as upstream:
        a = agent_for(
            tmp_path / "agent",
            f"{upstream.url}/simple/",
            {"blocked_packages": ["netlib"], "startup_blocked_packages": "off"},
            runtime="docker",
            docker={"prefix": PREFIX, "firewall_table": TABLE, "image": workspace_image},
        )
        try:
            a.start()
            yield a
        finally:
            a.stop()
            cleanup(docker_client, PREFIX)
            subprocess.run(["nft", "delete", "table", "inet", TABLE], capture_output=True)


def _sh(container: Any, cmd: str) -> tuple[int, str]:
    code, out = container.exec_run(["sh", "-c", cmd + " 2>&1"])
    return code, out.decode("utf-8", "replace")


def test_workspace_installs_through_the_agents_index(
    docker_pkg_agent: AgentProcess, docker_client: Any, internet: Server
) -> None:
    a = docker_pkg_agent
    a.ml("jupyter", "create", "idx1", "--memory=512m")
    (container,) = docker_client.containers.list(filters={"label": [f"io.fetchml.instance={PREFIX}"]})
    env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
    index_url = env["PIP_INDEX_URL"]
    assert "127.0.0.1" not in index_url and "/index/" in index_url, index_url

    code, out = _sh(container, "pip install --no-cache-dir leftpad")
    assert code == 0 and "Successfully installed leftpad-1.0" in out, out
    code, out = _sh(container, "pip install --no-cache-dir --retries 0 netlib")
    assert code != 0 and "netlib is blocked by the package policy" in out, out

    # the index-only listener serves nothing else
    base = index_url.split("/index/")[0]
    code, out = _sh(container, f"python3 -c \"import urllib.request as u; u.urlopen('{base}/api/v1/health')\"")
    assert code != 0 and "404" in out, out

    # the same package elsewhere: the network says no
    with urllib.request.urlopen(f"{internet.url}fmltest-hello/", timeout=5) as r:
        assert r.status == 200
    code, out = _sh(
        container,
        f"pip install -vvv --no-cache-dir --retries 0 --timeout 5 --index-url {internet.url}"
        f" --trusted-host {internet.host} fmltest-hello",
    )
    assert code != 0 and "Connection refused" in out, out


def test_build_custom_image_and_run_it(docker_pkg_agent: AgentProcess, docker_client: Any, workspace_image: str) -> None:
    a = docker_pkg_agent
    base = workspace_image
    tag = f"{PREFIX}/custom:1"
    refused = a.ml("jupyter", "build", tag, f"--base={base}", "--packages=leftpad netlib", check=False)
    assert refused.returncode == 5, refused.stderr
    assert "netlib is blocked by the package policy" in refused.stderr
    assert not docker_client.images.list(name=f"{PREFIX}/custom")  # refused before any build

    other = a.ml("jupyter", "build", tag, "--base=debian:bookworm", "--packages=leftpad", check=False)
    assert other.returncode == 5 and "allowed base images" in other.stderr, other.stderr

    try:
        built = a.ml("jupyter", "build", tag, f"--base={base}", "--packages=leftpad beta")
        assert f"built image {tag}" in built.stdout, built.stdout
        assert "Successfully installed" in built.stdout + built.stderr  # the build log streamed
        assert a.ml_json("jupyter", "create", "custom1", f"--image={tag}")["status"] == "running"
        (container,) = docker_client.containers.list(filters={"label": [f"io.fetchml.instance={PREFIX}"]})
        code, out = _sh(container, "python -c 'import leftpad_mod, alpha_mod; print(leftpad_mod.VERSION)'")
        assert code == 0 and out.strip() == "1.0", out
        with contextlib.closing(sqlite3.connect(a.data_dir / "agent.db")) as db:
            rows = db.execute("SELECT outcome FROM audit WHERE action = 'image.build' ORDER BY id").fetchall()
        assert [r[0] for r in rows] == ["denied", "denied", "ok"]
    finally:
        a.ml("jupyter", "delete", "custom1", check=False)
        for img in docker_client.images.list(name=f"{PREFIX}/custom"):
            docker_client.images.remove(img.id, force=True)
