"""A blocking WebSocket client (RFC 6455) with only what ``ml`` needs, and cheap to import.

``ml`` is a short-lived process: the ``websockets`` package's client costs it ~65 ms of imports
(version metadata, ssl, logging, threads, HTTP proxies) before the first byte is sent, more than
the rest of a command together. This module imports ``socket`` and the standard library's small
helpers; ``ssl`` only for ``wss://``. The agent's side stays on the ``websockets`` library, so
every integration test checks this client against a full implementation.

What it does: the opening handshake (``Sec-WebSocket-Accept`` checked), masked binary and text
messages out, unmasked messages in (fragments reassembled), pings answered while reading, the
closing handshake. What it leaves out: extensions (no compression is negotiated), subprotocols,
proxies and redirects. The peer is the agent, which speaks plain RFC 6455.

Errors: :class:`HandshakeError` when the server does not switch protocols, :class:`ConnectionClosed`
when the connection ends, ``TimeoutError`` when :meth:`WebSocket.recv` waited too long (nothing is
lost: a frame half-read stays buffered for the next call), ``OSError`` from the socket (including
``ssl.SSLError``). None of them carries anything the server sent beyond a status line.
"""

from __future__ import annotations

import base64
import hashlib
import os
import select
import socket
import struct
import time
from typing import Any, NoReturn

__all__ = ["ConnectionClosed", "HandshakeError", "WebSocket"]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_CONT, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_MAX_HEADERS = 16 * 1024
_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")


class HandshakeError(Exception):
    """The server answered the opening handshake with something other than a switch to WebSocket."""


class ConnectionClosed(Exception):
    """The connection is closed: by a close frame (``code``, ``reason``) or by the socket (1006)."""

    def __init__(self, code: int = 1006, reason: str = "") -> None:
        super().__init__(f"connection closed ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


def _mask(data: bytes, key: bytes) -> bytes:
    n = len(data)
    if not n:
        return b""
    pad = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(pad, "little")).to_bytes(n, "little")


def _frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked frame (every client frame is masked, RFC 6455 §5.3)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        head = bytes((0x80 | opcode, 0x80 | 126)) + _U16.pack(n)
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + _U64.pack(n)
    key = os.urandom(4)
    return head + key + _mask(payload, key)


class WebSocket:
    """One client connection. Not thread-safe: one caller sends and receives."""

    def __init__(self, sock: socket.socket, buffered: bytes = b"", *, max_size: int = 64 * 1024 * 1024) -> None:
        self._sock = sock
        self._buf = bytearray(buffered)
        self._max_size = max_size
        self._parts: list[bytes] = []
        self._part_opcode = 0
        self._pending: list[bytes | str] = []
        self.closed: ConnectionClosed | None = None

    @classmethod
    def connect(cls, url: str, *, ssl_context: Any = None, timeout: float | None = 10.0,
                max_size: int = 64 * 1024 * 1024, user_agent: str = "fetchml-ml") -> WebSocket:
        """Open ``ws://`` or ``wss://`` ``url``; ``ssl_context`` defaults to the system's trust store."""
        secure, host, port, authority, target = split_url(url)
        # An ASCII host goes to getaddrinfo as bytes: a str would load the IDNA codec (~7 ms) first.
        address: Any = (host.encode() if host.isascii() else host, port)
        sock = socket.create_connection(address, timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if secure:
                if ssl_context is None:
                    import ssl

                    ssl_context = ssl.create_default_context()
                sock = ssl_context.wrap_socket(sock, server_hostname=host)
            key = base64.b64encode(os.urandom(16)).decode()
            sock.sendall(
                (f"GET {target} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nUser-Agent: {user_agent}\r\n\r\n").encode()
            )
            rest = _read_handshake(sock, key)
        except BaseException:
            sock.close()
            raise
        return cls(sock, rest, max_size=max_size)

    # -- sending -----------------------------------------------------------------------------

    def send(self, message: bytes | str) -> None:
        """Send one message: ``bytes`` as a binary frame, ``str`` as a text frame."""
        if self.closed is not None:
            raise self.closed
        if isinstance(message, str):
            self._send_frame(_TEXT, message.encode("utf-8"))
        else:
            self._send_frame(_BINARY, bytes(message))

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        self._sock.settimeout(None)
        try:
            self._sock.sendall(_frame(opcode, payload))
        except OSError:
            raise self._lost() from None

    # -- receiving ---------------------------------------------------------------------------

    def recv(self, timeout: float | None = None) -> bytes | str:
        """The next message (``bytes`` or ``str``); waits ``timeout`` seconds at most (``None``: no limit)."""
        if self._pending:
            return self._pending.pop(0)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            message = self._next_message(deadline)
            if message is not None:
                return message

    def is_open(self) -> bool:
        """Whether the connection still stands: reads what has arrived (answering pings) without waiting.

        An idle connection may have been closed by the server meanwhile (after unanswered pings, or
        on restart); a caller checks before sending a request, not after.
        """
        if self.closed is not None:
            return False
        try:
            while self._buf or self._readable():
                # Something has arrived: read it (a frame's rest follows within moments).
                message = self._next_message(time.monotonic() + 0.5)
                if message is not None:
                    self._pending.append(message)
        except TimeoutError:
            pass
        except ConnectionClosed:
            return False
        return True

    def _readable(self) -> bool:
        pending = getattr(self._sock, "pending", None)  # bytes ssl has decrypted but not handed out
        if pending is not None and pending() > 0:
            return True
        return bool(select.select([self._sock], [], [], 0)[0])

    def _next_message(self, deadline: float | None) -> bytes | str | None:
        """Read one frame; a data message once its last fragment is in, else ``None``."""
        if self.closed is not None:
            raise self.closed
        fin, opcode, payload = self._read_frame(deadline)
        if opcode == _PING:
            self._send_frame(_PONG, payload)
            return None
        if opcode == _PONG:
            return None
        if opcode == _CLOSE:
            code = _U16.unpack(payload[:2])[0] if len(payload) >= 2 else 1005
            reason = payload[2:].decode("utf-8", "replace")
            try:
                self._sock.settimeout(1.0)
                self._sock.sendall(_frame(_CLOSE, payload[:2]))
            except OSError:
                pass
            self._shutdown()
            self.closed = ConnectionClosed(code, reason)
            raise self.closed
        if opcode in (_TEXT, _BINARY):
            if self._parts:
                self._fail(1002, "a new message started before the last one ended")
            self._part_opcode = opcode
        elif opcode == _CONT:
            if not self._parts and not self._part_opcode:
                self._fail(1002, "continuation frame without a message")
        else:
            self._fail(1002, f"unknown opcode 0x{opcode:X}")
        self._parts.append(payload)
        if sum(map(len, self._parts)) > self._max_size:
            self._fail(1009, "message too big")
        if not fin:
            return None
        data, kind = b"".join(self._parts), self._part_opcode
        self._parts, self._part_opcode = [], 0
        if kind == _TEXT:
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError:
                self._fail(1007, "invalid UTF-8 in a text message")
        return data

    def _read_frame(self, deadline: float | None) -> tuple[bool, int, bytes]:
        # The whole frame is buffered before anything is consumed, so a timeout never splits one.
        self._fill(2, deadline)
        b0, b1 = self._buf[0], self._buf[1]
        if b0 & 0x70:
            self._fail(1002, "reserved bits set (no extension was negotiated)")
        if b1 & 0x80:
            self._fail(1002, "the server masked a frame")
        opcode, length, offset = b0 & 0x0F, b1 & 0x7F, 2
        if length == 126:
            self._fill(4, deadline)
            length, offset = _U16.unpack_from(self._buf, 2)[0], 4
        elif length == 127:
            self._fill(10, deadline)
            length, offset = _U64.unpack_from(self._buf, 2)[0], 10
        if opcode & 0x8 and (length > 125 or not b0 & 0x80):
            self._fail(1002, "invalid control frame")
        if length > self._max_size:
            self._fail(1009, "message too big")
        self._fill(offset + length, deadline)
        payload = bytes(self._buf[offset : offset + length])
        del self._buf[: offset + length]
        return bool(b0 & 0x80), opcode, payload

    def _fill(self, size: int, deadline: float | None) -> None:
        while len(self._buf) < size:
            if deadline is None:
                self._sock.settimeout(None)
            else:
                # A floor of 1 ms lets a poll (deadline = now) still read what has already arrived.
                self._sock.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                chunk = self._sock.recv(max(65536, size - len(self._buf)))
            except TimeoutError:
                raise
            except OSError:
                chunk = b""
            if not chunk:
                raise self._lost()
            self._buf += chunk

    # -- closing -----------------------------------------------------------------------------

    def close(self, timeout: float = 1.0) -> None:
        """The closing handshake (code 1000), waiting ``timeout`` seconds at most for the server's answer."""
        if self.closed is not None:
            return
        try:
            self._sock.settimeout(timeout)
            self._sock.sendall(_frame(_CLOSE, _U16.pack(1000)))
            deadline = time.monotonic() + timeout
            while True:
                _, opcode, _ = self._read_frame(deadline)
                if opcode == _CLOSE:
                    break
        except (OSError, ConnectionClosed):
            pass
        self._shutdown()
        self.closed = ConnectionClosed(1000)

    def _fail(self, code: int, reason: str) -> NoReturn:
        try:
            self._sock.settimeout(1.0)
            self._sock.sendall(_frame(_CLOSE, _U16.pack(code) + reason.encode()[:120]))
        except OSError:
            pass
        self._shutdown()
        self.closed = ConnectionClosed(code, reason)
        raise self.closed

    def _lost(self) -> ConnectionClosed:
        self._shutdown()
        if self.closed is None:
            self.closed = ConnectionClosed(1006, "the connection was lost")
        return self.closed

    def _shutdown(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass


def split_url(url: str) -> tuple[bool, str, int, str, str]:
    """``(secure, host, port, authority, target)`` of a ``ws://`` or ``wss://`` URL (RFC 6455 §3).

    Written out rather than taken from urllib.parse, whose import (with ipaddress) costs ``ml``
    more than this whole module.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("ws", "wss"):
        raise HandshakeError(f"not a ws:// or wss:// URL: {url!r}")
    rest = rest.partition("#")[0]
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, target = rest[:cut], rest[cut:] or "/"
    if target.startswith("?"):
        target = "/" + target
    if "@" in authority:
        raise HandshakeError(f"credentials in the URL are not supported: {url!r}")
    if authority.startswith("["):
        host, bracket, port_text = authority[1:].partition("]")
        if not bracket or (port_text and not port_text.startswith(":")):
            raise HandshakeError(f"bad host in {url!r}")
        port_text = port_text[1:]
    else:
        host, _, port_text = authority.partition(":")
    secure = scheme.lower() == "wss"
    if not host:
        raise HandshakeError(f"no host in {url!r}")
    if port_text and not (port_text.isdigit() and 0 < int(port_text) < 65536):
        raise HandshakeError(f"bad port in {url!r}")
    return secure, host, int(port_text) if port_text else (443 if secure else 80), authority, target


def _read_handshake(sock: socket.socket, key: str) -> bytes:
    """Read the server's answer to the opening handshake; return the bytes that follow it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise HandshakeError("the server closed the connection during the WebSocket handshake")
        data += chunk
        if len(data) > _MAX_HEADERS:
            raise HandshakeError("the server's handshake answer is too long")
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or not status[0].startswith("HTTP/1.") or status[1] != "101":
        raise HandshakeError(f"the server answered {lines[0][:80]!r} instead of switching to WebSocket")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    expected = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
    if headers.get("upgrade", "").lower() != "websocket" or "upgrade" not in headers.get("connection", "").lower():
        raise HandshakeError("the server's answer does not upgrade the connection to WebSocket")
    if headers.get("sec-websocket-accept") != expected:
        raise HandshakeError("the server's Sec-WebSocket-Accept does not match the key sent")
    if headers.get("sec-websocket-extensions"):
        raise HandshakeError("the server enabled an extension that was not asked for")
    return rest
