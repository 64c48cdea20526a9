"""The seed's defaults on the docker runtime, through the real agent and ``ml``.

The workspace image has two environments (images/workspace/Dockerfile): JupyterLab's server
environment, which needs requests and urllib3, and the kernel environment, where kernels run and
packages are installed. The startup scan (in a throwaway container of the image) and
``security-scan`` look at the kernel environment, so the seed's default policy, and its example
``requests,urllib3,httpx``, create workspaces with no ``off`` switch; those packages are neither
installable nor importable from a kernel.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AgentProcess, free_port
from tests.integration.docker.conftest import cleanup
from tests.integration.jupyter import execute, split_url

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


KERNEL_PYTHON = "/opt/fetchml/kernel/bin/python"
PROBE = """
import importlib.util, sys
print(sys.executable)
print(sorted(m for m in ("requests", "urllib3", "jupyterlab", "jupyter_server", "papermill")
             if importlib.util.find_spec(m) is not None))
"""


@pytest.mark.parametrize("environ", [{}, SEED_BLOCKED], ids=["default-policy", "seed-example"])
def test_defaults_create_and_keep_blocked_packages_from_kernels(docker_agent: AgentProcess,
                                                                 environ: dict[str, str]) -> None:
    a = docker_agent
    a.start(env=environ)
    created = a.ml_json("jupyter", "create", "dockseed")  # no startup_blocked_packages: off
    assert created["status"] == "running"
    base, token = split_url(created["url"])
    with urllib.request.urlopen(urllib.request.Request(base + "api/kernelspecs",
                                                       headers={"Authorization": f"token {token}"}), timeout=30) as r:
        specs = json.loads(r.read())
    assert set(specs["kernelspecs"]) == {"python3"}
    assert specs["kernelspecs"]["python3"]["spec"]["argv"][0] == KERNEL_PYTHON
    out = execute(created["url"], PROBE, timeout=120)
    assert out.split() == [KERNEL_PYTHON, "[]"], out
    assert "/opt/fetchml/kernel/" in execute(created["url"], "!pip --version", timeout=120)
    assert execute(created["url"], "import fetchml, ipykernel; 'ok'").strip() == "'ok'"
    blocked = a.ml("jupyter", "install", "dockseed", "requests", check=False)
    assert blocked.returncode == 5 and "requests is blocked" in blocked.stderr
    scan = json.loads(a.ml("jupyter", "security-scan", "dockseed", "--json").stdout)
    assert scan["ok"] and scan["startup_scan"]["found"] == [] and scan["findings"] == []
    assert "requests" in scan["startup_scan"]["list"]
