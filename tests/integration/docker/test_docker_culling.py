"""Idle culling on the docker runtime (issue #16, docs/capacity.md): JupyterLab inside the container
reports its activity to the agent through the index listener; a workspace claimed from the warm
pool reports as its workspace from the claim on. The untouched (claimed) workspace is stopped
within a check of its timeout; the cold one, whose kernel runs ``time.sleep(3600)``, is kept.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AgentProcess, free_port
from tests.integration.docker.conftest import cleanup
from tests.integration.jupyter import start_busy

PREFIX = f"fmltest-{os.getpid()}-cull"
TABLE = f"fmltest_{os.getpid()}_cull"
IDLE = 10


@pytest.fixture
def cull_agent(tmp_path: Path, docker_client: Any, workspace_image: str) -> Iterator[AgentProcess]:
    a = AgentProcess(tmp_path / "agent", free_port(), {
        "runtime": "docker",
        "docker": {"prefix": PREFIX, "firewall_table": TABLE, "image": workspace_image},
        "package_management": {"startup_blocked_packages": "off"},
        "warm_pool": {"size": 1},
        "culling": {"idle_timeout": f"{IDLE}s", "check_interval": "1s", "warn_before": "3s"},
    })
    try:
        a.start()
        yield a
    finally:
        a.stop()
        cleanup(docker_client, PREFIX, TABLE)


def _until(what: str, pred: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_docker_culls_the_untouched_claim_and_keeps_the_busy_kernel(cull_agent: AgentProcess) -> None:
    a = cull_agent
    busy = a.ml_json("jupyter", "create", "cold-busy", "--cpu", "1", user="bob")
    start_busy(busy["url"], "import time\ntime.sleep(3600)")
    _until("a ready pool member", lambda: a.ml_json("status")["capacity"]["pools"]["pools"][0]["ready"] >= 1, 240)
    claimed = a.ml_json("jupyter", "create", "claimed-idle", user="bob")
    assert claimed["start"]["kind"] == "claim"
    _until("the untouched claim to be culled",
           lambda: a.ml_json("jupyter", "info", "claimed-idle", user="bob")["status"] == "stopped", IDLE + 40)
    # Culled for idleness, so its server reported as its workspace (one that never reports is active).
    assert "stopped by the agent: idle for" in a.ml_json("jupyter", "info", "claimed-idle", user="bob")["message"]
    kept = a.ml_json("jupyter", "info", "cold-busy", user="bob")
    assert kept["status"] == "running" and "1 kernel(s) busy" in kept["activity"]["active_because"]
    events = [e["action"] for e in a.ml_json("jupyter", "audit", "claimed-idle")["events"]]
    assert "workspace.cull_warning" in events and "workspace.cull" in events
