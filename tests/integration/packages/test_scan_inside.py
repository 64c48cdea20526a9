"""The startup scan for runtimes that can only look inside a started workspace (nomad's case).

Such a runtime declares ``capabilities.package_scan = "workload"`` (it cannot list a workspace's
packages before it runs: no layer on this host, no image to read), so the agent runs the scan in
the workspace it just started and stops it again on a hit. Here that runtime is the real local
runtime declaring so, and the scan sees the whole environment, whose shared base ships requests
and urllib3: the start is refused and nothing keeps running.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from pathlib import Path
from typing import Any

import pytest

from fetchml_agent.agent import Agent
from fetchml_agent.auth import api_key_verifier
from fetchml_agent.config import parse_config
from fetchml_agent.errors import PolicyDenied
from fetchml_agent.protocol.opcodes import Opcode
from fetchml_agent.runtimes.local import LocalRuntime
from fetchml_agent.service import OPERATIONS, Call
from tests.conftest import free_port


class LookInsideRuntime(LocalRuntime):
    """The local runtime declaring that its startup scan can only look inside the running
    workspace: the environment is then one whole."""

    capabilities = dataclasses.replace(LocalRuntime.capabilities, package_scan="workload")


def _agent(tmp_path: Path, port_base: int, environ: dict[str, str]) -> Agent:
    config = parse_config({
        "data_dir": str(tmp_path / "data"),
        "users": [{"name": "admin", "role": "admin", "api_key_verifier": api_key_verifier("k")}],
        "package_index": {"upstream": "http://127.0.0.1:9/simple/"},
    }, environ=environ)
    return Agent(config, LookInsideRuntime(config.data_dir, port_base=port_base))


async def _create(agent: Agent, name: str) -> Any:
    op = OPERATIONS[Opcode.CREATE_WORKSPACE]
    return await op.handler(agent, Call(agent.users["admin"], "ws"), op.validate({"name": name}))


def test_scan_inside_refuses_and_stops_the_workspace(tmp_path: Path) -> None:
    port = free_port()

    async def run() -> None:
        agent = _agent(tmp_path, port, {})
        await agent.start()
        try:
            with pytest.raises(PolicyDenied, match="blocked packages: requests"):
                await _create(agent, "inside")
            assert agent.workspaces == {}
            with socket.socket() as s:
                assert s.connect_ex(("127.0.0.1", port)) != 0  # JupyterLab was stopped again
        finally:
            await agent.close()
        agent = _agent(tmp_path, port, {"FETCHML_JUPYTER_STARTUP_BLOCKED_PACKAGES": "off"})
        await agent.start()
        try:
            result = await _create(agent, "inside")
            assert result.data["status"] == "running"
            ws = agent.workspaces["inside"]
            await agent.runtime.stop(ws.runtime_state or {}, grace=2.0)
        finally:
            await agent.close()

    asyncio.run(run())
