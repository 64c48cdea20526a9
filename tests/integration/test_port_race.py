"""A workspace's port taken between the agent's claim and JupyterLab's bind (agents on one host,
any other process): the readiness probe must not take the squatter's answer for "started", and
the start moves on to the next free port. A real JupyterLab on the local runtime."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fetchml_agent.allocators import workspace_holder
from fetchml_agent.runtimes.base import WorkspaceSpec
from fetchml_agent.runtimes.local import LocalRuntime
from fetchml_jupyter.probe import PROOF_PATH, server_proof
from tests.conftest import free_port


class _Forbidden(http.server.BaseHTTPRequestHandler):
    """What another Jupyter server answers a stranger's token with: 403, to everything."""

    def do_GET(self) -> None:
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"message": "Forbidden"}')

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def squatter() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Forbidden)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("access", [True, False], ids=["access-extension", "jupyter-token"])
def test_a_port_taken_after_the_claim_moves_the_workspace_to_the_next_free_one(
        tmp_path: Path, squatter: int, access: bool) -> None:
    rt = LocalRuntime(tmp_path / "data", use_cgroups=False)
    (tmp_path / "ws").mkdir()
    # With FETCHML_ACCESS_URL the server runs fetchml_jupyter and proves its credential; without,
    # Jupyter's own token check answers. No agent is asked either way during start-up.
    env = {"FETCHML_ACCESS_URL": "http://127.0.0.1:9/"} if access else {}
    spec = WorkspaceSpec(id="w1", name="w1", owner="alice", path=tmp_path / "ws", token="tok-0123456789abcdef",
                         env=env)
    rt.ports.hold(workspace_holder(spec.id), squatter)  # the agent claimed it; then someone bound it
    lines: list[str] = []

    async def progress(line: str) -> None:
        lines.append(line)

    async def scenario() -> tuple[dict, str]:
        await rt.open()
        started = await rt.start(spec, progress)
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                r = await client.get(started.url + PROOF_PATH, params={"nonce": "n1"})
                answer = r.json()["proof"] if r.status_code == 200 else r.status_code
            return dict(started.state), str(answer)
        finally:
            await rt.stop(started.state, grace=2.0)

    state, answer = asyncio.run(scenario())
    assert state["port"] != squatter and rt.ports.held(workspace_holder(spec.id)) == state["port"]
    assert any(f"port {squatter} was taken" in line for line in lines), lines
    # The server the workspace got is its own: it proves the workspace's credential.
    assert answer == (server_proof(spec.token, "n1") if access else "404")
    log = (tmp_path / "data" / "logs" / "w1.log").read_text()
    assert "is already in use" in log and "jpserver_file_prefix" not in log


def test_two_agents_on_one_host_never_share_a_port(tmp_path: Path) -> None:
    """Two agents with the same local.port_base create at the same moment (the race seen under
    load): both claim the same free port, one JupyterLab loses the bind and moves on. Each ``ml``
    reports its own server: the URL it printed answers that workspace's personal token."""
    import random
    import threading

    from tests.conftest import AgentProcess

    base = random.randint(41000, 50000)
    agents = [AgentProcess(tmp_path / f"agent{i}", free_port(), {"local": {"port_base": base}}) for i in range(2)]
    try:
        for a in agents:
            a.start()
        results: dict[int, object] = {}

        def create(i: int) -> None:
            results[i] = agents[i].ml("jupyter", "create", f"race{i}", "--json", check=False)

        threads = [threading.Thread(target=create, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        docs = []
        for i in range(2):
            cp = results[i]
            assert cp.returncode == 0, cp.stderr  # type: ignore[attr-defined]
            docs.append(__import__("json").loads(cp.stdout))  # type: ignore[attr-defined]
        assert docs[0]["port"] != docs[1]["port"], docs
        for doc in docs:  # the printed URL reaches this workspace's own server (another would refuse the token)
            url = doc["url"].replace("/lab?", "/api/status?")
            assert httpx.get(url, timeout=10).status_code == 200, doc
    finally:
        for a in agents:
            a.cleanup_workspaces()
            a.stop()
