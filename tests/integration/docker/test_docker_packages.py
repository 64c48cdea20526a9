"""The seed's startup-scan example on the docker runtime, through the real agent and ``ml``.

The workspace image ships requests and urllib3 (JupyterLab needs them). Blocking installs of
``requests,urllib3,httpx`` stops the image at start (the scan looks at the image itself, in a
throwaway container); ``FETCHML_JUPYTER_STARTUP_BLOCKED_PACKAGES=off`` lets it start, and
installs of those packages stay blocked.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AgentProcess, free_port
from tests.integration.docker.conftest import cleanup

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PREFIX = f"fmltest-{os.getpid()}-pkg"
TABLE = f"fmltest_{os.getpid()}_pkg"
SEED_BLOCKED = {"FETCHML_JUPYTER_BLOCKED_PACKAGES": "requests,urllib3,httpx"}


@pytest.fixture
def docker_agent(tmp_path: Path, docker_client: Any, workspace_image: str) -> Iterator[AgentProcess]:
    a = AgentProcess(tmp_path / "agent", free_port(),
                     {"runtime": "docker", "docker": {"prefix": PREFIX, "firewall_table": TABLE, "image": workspace_image}})
    try:
        yield a
    finally:
        a.stop()
        cleanup(docker_client, PREFIX, TABLE)


def test_seed_example_startup_scan_off(docker_agent: AgentProcess) -> None:
    a = docker_agent
    a.start(env=SEED_BLOCKED)
    refused = a.ml("jupyter", "create", "dockseed", check=False)
    assert refused.returncode == 5, refused.stderr
    assert "already contains blocked packages" in refused.stderr and "requests" in refused.stderr
    assert "FETCHML_JUPYTER_STARTUP_BLOCKED_PACKAGES" in refused.stderr
    assert a.ml_json("jupyter", "list")["services"] == []  # nothing left behind

    a.stop()
    a.start(env={**SEED_BLOCKED, "FETCHML_JUPYTER_STARTUP_BLOCKED_PACKAGES": "off"})
    assert a.ml_json("jupyter", "create", "dockseed")["status"] == "running"
    blocked = a.ml("jupyter", "install", "dockseed", "requests", check=False)
    assert blocked.returncode == 5 and "requests is blocked" in blocked.stderr
    scan = json.loads(a.ml("jupyter", "security-scan", "dockseed", "--json", check=False).stdout)
    assert scan["startup_scan"]["list"] == "off"
    assert "requests" in {f["name"].lower() for f in scan["findings"]}  # reported, though it may start
