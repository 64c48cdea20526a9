"""The startup scan for runtimes that can only look inside a started workspace (nomad's case).

Such a runtime declares ``capabilities.package_scan = "workload"`` (it cannot list a workspace's
packages before it runs: no layer on this host, no image to read), so the agent runs the scan in
the workspace it just started and stops it again on a hit. Here that runtime is the real local
runtime declaring so, and the scan sees the whole kernel environment, whose kernel base ships
tornado (ipykernel needs it): with tornado on the scan list the start is refused and nothing keeps
running.

The agent runs in this process (the runtime is a subclass of the real one) behind its real ASGI app
and a real uvicorn listener, as ``fetchml-agent serve`` runs it: the workspace's JupyterLab asks
the agent's ``/access`` endpoints who is calling (fetchml_jupyter), and could not start without.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from fetchml_agent.agent import Agent
from fetchml_agent.auth import api_key_verifier
from fetchml_agent.config import parse_config
from fetchml_agent.errors import PolicyDenied
from fetchml_agent.protocol.opcodes import Opcode
from fetchml_agent.runtimes.local import LocalRuntime
from fetchml_agent.server.app import build_app
from fetchml_agent.service import OPERATIONS, Call
from tests.conftest import free_port


class LookInsideRuntime(LocalRuntime):
    """The local runtime declaring that its startup scan can only look inside the running
    workspace: the environment is then one whole."""

    capabilities = dataclasses.replace(LocalRuntime.capabilities, package_scan="workload")


def _agent(tmp_path: Path, listen: int, port_base: int, environ: dict[str, str]) -> Agent:
    config = parse_config({
        "listen": f"127.0.0.1:{listen}",
        "data_dir": str(tmp_path / "data"),
        "users": [{"name": "admin", "role": "admin", "api_key_verifier": api_key_verifier("k")}],
        "package_index": {"upstream": "http://127.0.0.1:9/simple/"},
    }, environ=environ)
    return Agent(config, LookInsideRuntime(config.data_dir, port_base=port_base))


@contextlib.asynccontextmanager
async def _serving(agent: Agent) -> AsyncIterator[Agent]:
    """``agent`` started and serving its app on its ``listen`` address until the block ends, then
    closed (the app's lifespan starts and closes it, as under ``fetchml-agent serve``)."""
    config = agent.config
    server = uvicorn.Server(uvicorn.Config(build_app(agent), host=config.host, port=config.port,
                                           log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task
            raise RuntimeError("the agent's app did not start")
        await asyncio.sleep(0.05)
    try:
        yield agent
    finally:
        server.should_exit = True
        await task


async def _create(agent: Agent, name: str) -> Any:
    op = OPERATIONS[Opcode.CREATE_WORKSPACE]
    return await op.handler(agent, Call(agent.users["admin"], "ws"), op.validate({"name": name}))


def test_scan_inside_refuses_and_stops_the_workspace(tmp_path: Path) -> None:
    port, listen = free_port(), free_port()

    async def run() -> None:
        async with _serving(_agent(tmp_path, listen, port, {"FETCHML_JUPYTER_STARTUP_BLOCKED_PACKAGES": "tornado"})) as agent:
            with pytest.raises(PolicyDenied, match="blocked packages: tornado"):
                await _create(agent, "inside")
            assert agent.workspaces == {}
            with socket.socket() as s:
                assert s.connect_ex(("127.0.0.1", port)) != 0  # JupyterLab was stopped again
        environ = {"FETCHML_JUPYTER_STARTUP_BLOCKED_PACKAGES": "off"}
        async with _serving(_agent(tmp_path, listen, port, environ)) as agent:
            result = await _create(agent, "inside")
            assert result.data["status"] == "running"
            ws = agent.workspaces["inside"]
            await agent.runtime.stop(ws.runtime_state or {}, grace=2.0)

    asyncio.run(run())
