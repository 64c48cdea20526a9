"""Fixtures shared by the docker and the local isolation tests, loaded for the whole session
(``pytest_plugins`` in tests/conftest.py) so that each exists once: a static package index on disk,
and "the internet": that index served from a network namespace of the session's own.

Names carry ``fmltest-<pid>`` (tests/leaks.py checks that none outlives the session).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import http.server
import os
import socket
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PREFIX = f"fmltest-{os.getpid()}"
WHEEL_NAME = "fmltest-hello"


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
def serve(directory: Path, host: str, port: int) -> Iterator[Server]:
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
