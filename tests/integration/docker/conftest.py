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
import base64
import contextlib
import functools
import hashlib
import http.server
import os
import shutil
import socket
import subprocess
import threading
import zipfile
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

docker = pytest.importorskip("docker", reason="the docker SDK is not installed")

from fetchml_agent.runtimes.docker import DockerRuntime  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
PREFIX = f"fmltest-{os.getpid()}"
TABLE = f"fmltest_{os.getpid()}"
WHEEL_NAME = "fmltest-hello"
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


def _build_wheel(dest: Path) -> Path:
    """A minimal pure-Python wheel, written by hand: no build tool, no network."""
    name, version = WHEEL_NAME.replace("-", "_"), "1.0"
    files = {
        f"{name}/__init__.py": b'GREETING = "hello from the index"\n',
        f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {WHEEL_NAME}\nVersion: {version}\n".encode(),
        f"{name}-{version}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: fmltest\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{name}-{version}.dist-info/RECORD,,")
    files[f"{name}-{version}.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = dest / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return wheel


@pytest.fixture(scope="session")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A static simple index: /simple/ and /simple/fmltest-hello/ linking the wheel."""
    root = tmp_path_factory.mktemp("index")
    (root / "packages").mkdir()
    wheel = _build_wheel(root / "packages")
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    (root / "simple" / WHEEL_NAME).mkdir(parents=True)
    (root / "simple" / "index.html").write_text(f'<a href="{WHEEL_NAME}/">{WHEEL_NAME}</a>\n')
    (root / "simple" / WHEEL_NAME / "index.html").write_text(
        f'<a href="../../packages/{wheel.name}#sha256={sha}">{wheel.name}</a>\n'
    )
    return root


@dataclass
class Server:
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/simple/"


@contextlib.contextmanager
def _serve(directory: Path, host: str, port: int) -> Iterator[Server]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    httpd = http.server.ThreadingHTTPServer((host, port), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Server(host, port)
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="session")
def index(docker_client: Any, index_dir: Path) -> Iterator[Server]:
    host = bridge_gateway(docker_client)
    with _serve(index_dir, host, free_port(host)) as server:
        yield server


@pytest.fixture(scope="session")
def host_service(docker_client: Any, index_dir: Path) -> Iterator[Server]:
    host = bridge_gateway(docker_client)
    with _serve(index_dir, host, free_port(host)) as server:
        yield server


@pytest.fixture(scope="session")
def internet(index_dir: Path) -> Iterator[Server]:
    """The index served from a network namespace of our own, beyond a veth pair (10.214.N.0/30)."""
    ns, n = f"{PREFIX}-inet", os.getpid() % 250
    host_if, ns_if = f"fmlth{n}", f"fmltn{n}"
    host_ip, ns_ip = f"10.214.{n}.1", f"10.214.{n}.2"

    def sh(*argv: str) -> None:
        subprocess.run(argv, check=True, capture_output=True)

    sh("ip", "netns", "add", ns)
    proc = None
    try:
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        sh("ip", "link", "set", ns_if, "netns", ns)
        sh("ip", "addr", "add", f"{host_ip}/30", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ns_ip}/30", "dev", ns_if)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        # Only the way back to workspaces: nothing from this namespace may leave the machine.
        sh("ip", "netns", "exec", ns, "ip", "route", "add", "10.213.0.0/16", "via", host_ip)
        port = 8080
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "python3", "-m", "http.server", "--bind", ns_ip, str(port)],
            cwd=index_dir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection((ns_ip, port), timeout=0.2):
                break
            threading.Event().wait(0.05)
        yield Server(ns_ip, port)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def cleanup(client: Any, prefix: str) -> None:
    """Remove every container, network and volume labelled with ``prefix``; and the test table."""
    label = {"label": [f"io.fetchml.instance={prefix}"]}
    for c in client.containers.list(all=True, filters=label):
        c.remove(force=True)
    for n in client.networks.list(filters=label):
        n.remove()
    for v in client.volumes.list(filters=label):
        v.remove(force=True)


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
