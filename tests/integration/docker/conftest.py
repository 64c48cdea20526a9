"""Fixtures for tests against the real Docker engine and the real host firewall (nftables).

Everything these tests make is named ``fmltest-<pid>-...`` (tables ``fmltest_<pid>``) and removed
at the end. Stand-ins for the places a workspace must not reach, and for the one it must:

- ``index``: a PEP 503 simple index serving one tiny wheel (built here), bound on the gateway of
  Docker's default bridge (a host address every workspace routes to), at the port the runtime
  opens as the agent's package index;
- ``host_service``: the same kind of server on the same host address, another port;
- ``internet``: the same index served from a network namespace made here, reached through a veth
  pair, i.e. a destination beyond the host (the forward path).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

docker = pytest.importorskip("docker", reason="the docker SDK is not installed")

from fetchml_agent.runtimes.docker import DockerRuntime  # noqa: E402
from tests.netfixtures import Server, serve  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
PREFIX = f"fmltest-{os.getpid()}"
TABLE = f"fmltest_{os.getpid()}"
_T = TypeVar("_T")


def _docker_client() -> Any:
    try:
        client = docker.DockerClient(base_url="unix:///var/run/docker.sock", timeout=120)
        client.ping()
        return client
    except Exception as exc:  # any failure here means: no engine to test against
        pytest.skip(f"Docker engine not reachable ({exc}); .ci/run starts dockerd", allow_module_level=True)


@pytest.fixture(scope="session")
def docker_client() -> Any:
    if shutil.which("nft") is None or os.geteuid() != 0:
        pytest.skip("the docker runtime tests need root and nft (nftables) for the workspace firewall")
    return _docker_client()


@pytest.fixture(scope="session")
def workspace_image(docker_client: Any) -> str:
    """The workspace image, built by images/build.sh (cached: a no-op when up to date). Its tag is
    build.sh's: ``WORKSPACE_IMAGE`` when set (a checkout testing changes to the image on a shared
    engine names its own), else ``fetchml/workspace:<version>``."""
    out = subprocess.run(["bash", str(ROOT / "images" / "build.sh")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return os.environ.get("WORKSPACE_IMAGE") or "fetchml/workspace:" + __import__("fetchml_agent").__version__


@pytest.fixture(scope="module")
def run() -> Iterator[Callable[[Coroutine[Any, Any, _T]], _T]]:
    """Runs a coroutine on one event loop kept for the module (the runtime lives across tests)."""
    loop = asyncio.new_event_loop()
    yield loop.run_until_complete
    loop.close()


def bridge_gateway(client: Any) -> str:
    cfg = client.networks.get("bridge").attrs["IPAM"]["Config"][0]
    return cfg.get("Gateway") or cfg["Subnet"].rsplit(".", 2)[0] + ".0.1"


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def index(docker_client: Any, index_dir: Path) -> Iterator[Server]:
    host = bridge_gateway(docker_client)
    with serve(index_dir, host, free_port(host)) as server:
        yield server


@pytest.fixture(scope="session")
def host_service(docker_client: Any, index_dir: Path) -> Iterator[Server]:
    host = bridge_gateway(docker_client)
    with serve(index_dir, host, free_port(host)) as server:
        yield server


def cleanup(client: Any, prefix: str, table: str | None = None) -> None:
    """Remove every container, network and volume labelled with ``prefix``; and ``table`` (the
    test's nftables table), when given."""
    label = {"label": [f"io.fetchml.instance={prefix}"]}
    for c in client.containers.list(all=True, filters=label):
        c.remove(force=True)
    for n in client.networks.list(filters=label):
        n.remove()
    for v in client.volumes.list(filters=label):
        v.remove(force=True)
    if table:
        subprocess.run(["nft", "delete", "table", "inet", table], capture_output=True)


@pytest.fixture(scope="module")
def runtime(
    docker_client: Any, workspace_image: str, index: Server, run: Callable[..., Any]
) -> Iterator[DockerRuntime]:
    rt = DockerRuntime(image=workspace_image, prefix=PREFIX, index=(index.host, index.port), table=TABLE)
    run(rt.open())
    try:
        yield rt
    finally:
        cleanup(docker_client, PREFIX)
        subprocess.run(["nft", "delete", "table", "inet", TABLE], capture_output=True)
        run(rt.close())
