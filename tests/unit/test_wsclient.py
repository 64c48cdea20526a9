"""`ml`'s WebSocket client against the `websockets` library's own server (a full RFC 6455 peer)."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from websockets.sync.server import ServerConnection, serve

from fetchml_agent.wsclient import ConnectionClosed, HandshakeError, WebSocket, split_url


@pytest.fixture
def server() -> Iterator[Callable[[Callable[[ServerConnection], None]], str]]:
    """Start a server whose connections run ``handler``; yields a function returning its ws:// URL."""
    servers: list[Any] = []

    def start(handler: Callable[[ServerConnection], None]) -> str:
        srv = serve(handler, "127.0.0.1", 0, compression=None, max_size=None)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"ws://127.0.0.1:{srv.socket.getsockname()[1]}/ws"

    yield start
    for srv in servers:
        srv.shutdown()


def _echo(conn: ServerConnection) -> None:
    for message in conn:
        conn.send(message)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 3 * 1024 * 1024 + 7])
def test_binary_and_text_messages_of_every_length_encoding(server: Any, size: int) -> None:
    ws = WebSocket.connect(server(_echo))
    payload = bytes(i % 251 for i in range(size))
    ws.send(payload)
    assert ws.recv(timeout=10) == payload
    ws.send("é" * (size // 2))
    assert ws.recv(timeout=10) == "é" * (size // 2)
    ws.close()
    assert ws.closed is not None and ws.closed.code == 1000


def test_fragmented_messages_are_reassembled(server: Any) -> None:
    def fragments(conn: ServerConnection) -> None:
        conn.recv()
        conn.send([b"ab", b"cd", b"ef"])  # one message in three frames
        conn.send(["x", "y"])
        conn.recv()

    ws = WebSocket.connect(server(fragments))
    ws.send(b"go")
    assert ws.recv(timeout=5) == b"abcdef"
    assert ws.recv(timeout=5) == "xy"
    ws.close()


def test_pings_are_answered_while_waiting_and_between_requests(server: Any) -> None:
    answered: list[bool] = []

    def pinger(conn: ServerConnection) -> None:
        conn.recv()
        answered.append(conn.ping(b"one").wait(5))  # answered from inside the client's recv()
        conn.send(b"after ping")
        conn.recv()
        answered.append(conn.ping(b"two").wait(5))  # answered by is_open() before the next request
        conn.send(b"bye")
        conn.recv()

    ws = WebSocket.connect(server(pinger))
    ws.send(b"hi")
    assert ws.recv(timeout=10) == b"after ping"
    ws.send(b"more")
    deadline = time.monotonic() + 5
    while len(answered) < 2 and time.monotonic() < deadline:
        assert ws.is_open()
        time.sleep(0.01)
    assert answered == [True, True]
    assert ws.recv(timeout=5) == b"bye"  # read by is_open() meanwhile, kept for recv()
    ws.close()


def test_a_timeout_loses_nothing(server: Any) -> None:
    def slow(conn: ServerConnection) -> None:
        conn.recv()
        time.sleep(0.5)
        conn.send(b"late" * 50_000)
        conn.recv()

    ws = WebSocket.connect(server(slow))
    ws.send(b"x")
    with pytest.raises(TimeoutError):
        ws.recv(timeout=0.05)
    assert ws.recv(timeout=10) == b"late" * 50_000
    ws.close()


def test_a_server_close_is_seen_by_recv_and_by_is_open(server: Any) -> None:
    def closer(conn: ServerConnection) -> None:
        conn.recv()
        conn.close(4001, "going away")

    ws = WebSocket.connect(server(closer))
    assert ws.is_open()
    ws.send(b"x")
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=5)
    assert (closed.value.code, closed.value.reason) == (4001, "going away")
    assert not ws.is_open()
    with pytest.raises(ConnectionClosed):
        ws.send(b"y")


def test_an_idle_connection_closed_by_the_server_is_noticed_before_sending(server: Any) -> None:
    def hang_up(conn: ServerConnection) -> None:
        conn.close()

    ws = WebSocket.connect(server(hang_up))
    deadline = time.monotonic() + 5
    while ws.is_open() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not ws.is_open()


def test_a_server_that_is_not_websocket_fails_the_handshake() -> None:
    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with pytest.raises(HandshakeError, match="404"):
            WebSocket.connect(f"ws://127.0.0.1:{httpd.server_port}/ws", timeout=5)
    finally:
        httpd.shutdown()


def test_nothing_listening_is_an_os_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        WebSocket.connect(f"ws://127.0.0.1:{port}/ws", timeout=5)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ws://127.0.0.1:9101/ws", (False, "127.0.0.1", 9101, "127.0.0.1:9101", "/ws")),
        ("wss://agent.example/ws?x=1#frag", (True, "agent.example", 443, "agent.example", "/ws?x=1")),
        ("ws://[::1]:8080", (False, "::1", 8080, "[::1]:8080", "/")),
        ("WS://host?q", (False, "host", 80, "host", "/?q")),
    ],
)
def test_split_url(url: str, expected: tuple[Any, ...]) -> None:
    assert split_url(url) == expected


@pytest.mark.parametrize("url", ["http://h/ws", "ws://", "ws://h:0/", "ws://h:99999/", "ws://u:p@h/", "ws://[::1/", "h:1"])
def test_split_url_refuses(url: str) -> None:
    with pytest.raises(HandshakeError):
        split_url(url)


def test_wss_with_the_servers_ca(tmp_path: Any) -> None:
    import ssl

    from tests.integration.test_tls import _self_signed

    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    srv = serve(_echo, "127.0.0.1", 0, ssl=server_ctx, compression=None)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"wss://127.0.0.1:{srv.socket.getsockname()[1]}/ws"
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            WebSocket.connect(url, timeout=5)  # the system's trust store does not know this CA
        ws = WebSocket.connect(url, ssl_context=ssl.create_default_context(cafile=str(cert)), timeout=5)
        for size in (10, 70_000):
            assert ws.is_open()
            ws.send(b"x" * size)
            assert ws.recv(timeout=10) == b"x" * size
        ws.close()
    finally:
        srv.shutdown()
