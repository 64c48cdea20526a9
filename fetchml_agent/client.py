"""The client library: one WebSocket connection, requests in, packets out.

Used by ``ml`` and importable by scripts::

    with Client("ws://127.0.0.1:9101/ws", api_key) as c:
        services = c.call(Opcode.LIST_JUPYTER).data["services"]

A request's answer is read until its terminal packet (see :data:`STREAMING`); progress and log
packets go to the callbacks as they arrive. Failures are raised as the project's errors, rebuilt
from the error packet's code.

On connecting, the client sends ``HELLO`` announcing the ``stream`` capability, so that the seed's
``0x0D`` answers with progress and the workspace document too (a client that knows only the seed
gets one packet per request). The hello is not waited for: its answer is read just before the
first request's, so it costs no round trip; a request larger than the agent takes before a key
has been checked (:data:`PREAUTH_MAX_FRAME`) waits for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import __version__
from .errors import (
    AgentUnreachable,
    ErrorCode,
    InvalidArgument,
    ProtocolError,
    RequestTooLarge,
    Timeout,
    error_for_code,
)
from .protocol import (
    CAP_STREAM,
    PREAUTH_MAX_FRAME,
    SEED_OPCODES,
    STREAMING,
    DataPacket,
    ErrorPacket,
    JsonRequest,
    ListRequest,
    LogPacket,
    Opcode,
    ProgressPacket,
    StartRequest,
    StopRequest,
    SuccessPacket,
    api_key_hash,
    parse_response,
)
from .wsclient import ConnectionClosed, HandshakeError, WebSocket

__all__ = ["Client", "Reply"]


@dataclass
class Reply:
    message: str = ""
    data_type: str | None = None
    data: Any = None
    progress: list[str] = field(default_factory=list)


class Client:
    """A connection to one agent. Not thread-safe; one request at a time."""

    def __init__(
        self,
        server: str,
        api_key: str,
        *,
        ca: str | None = None,
        timeout: float = 10.0,
        on_progress: Callable[[str], None] | None = None,
        on_log: Callable[[bytes], None] | None = None,
        hello: bool = True,
    ) -> None:
        self.server = server
        self.key_hash = api_key_hash(api_key)
        self.ca = ca
        self.timeout = timeout
        self.on_progress = on_progress
        self.on_log = on_log
        self.hello = hello
        self.capabilities: frozenset[str] = frozenset()
        self.agent_info: dict[str, Any] = {}
        self._ws: Any = None
        self._hello_pending = False

    def __enter__(self) -> Client:
        self.connect()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def connect(self) -> None:
        if not self.server.startswith(("ws://", "wss://")):
            raise AgentUnreachable(
                f"--server must be a ws:// or wss:// URL, got {self.server!r}", "e.g. ws://127.0.0.1:9101/ws"
            )
        ctx = None
        if self.server.startswith("wss://"):
            import ssl

            try:
                ctx = ssl.create_default_context(cafile=self.ca) if self.ca else ssl.create_default_context()
            except (OSError, ssl.SSLError) as exc:
                raise InvalidArgument(f"--ca {self.ca}: cannot load it as a CA bundle ({_reason(exc)})",
                                      "a PEM file with the certificate that signed the agent's") from None
        try:
            self._ws = WebSocket.connect(self.server, ssl_context=ctx, timeout=self.timeout,
                                         max_size=64 * 1024 * 1024, user_agent=f"ml/{__version__}")
        except (OSError, HandshakeError, ValueError) as exc:
            raise AgentUnreachable(f"cannot reach the agent at {self.server} ({_reason(exc)})", _hint(exc)) from None
        if self.hello:
            body = {"client": f"ml {__version__}", "capabilities": [CAP_STREAM]}
            self._ws.send(JsonRequest(Opcode.HELLO, self.key_hash, body).serialize())
            self._hello_pending = True

    def _finish_hello(self, timeout: float | None) -> None:
        """Read the hello's answer. An agent that predates HELLO answers 0x01: no capabilities."""
        self._hello_pending = False
        pkt = self.recv_packet(timeout if timeout is not None else self.timeout)
        if isinstance(pkt, DataPacket) and pkt.type == "hello":
            info = pkt.decode_json()
            self.agent_info = info if isinstance(info, dict) else {}
            self.capabilities = frozenset(self.agent_info.get("capabilities") or ())
        elif isinstance(pkt, ErrorPacket) and pkt.code == ErrorCode.AUTH_FAILED:
            raise error_for_code(pkt.code, pkt.message, pkt.details)

    def close(self) -> None:
        if self._ws is not None:
            try:
                self._ws.close()
            finally:
                self._ws = None
                self._hello_pending = False

    def send_raw(self, frame: bytes | str) -> None:
        # An idle connection may have been closed by the agent (unanswered pings, a restart): open a
        # new one before the request goes out, never after.
        if self._ws is None or not self._ws.is_open():
            self.connect()
        try:
            self._ws.send(frame)
        except ConnectionClosed:
            raise AgentUnreachable(
                f"the agent at {self.server} closed the connection",
                "it may have been stopped or restarted; run the command again",
            ) from None

    def recv_packet(self, timeout: float | None = None) -> Any:
        try:
            frame = self._ws.recv(timeout=timeout)
        except TimeoutError:
            raise Timeout(f"the agent at {self.server} did not answer within {timeout:.0f} s") from None
        except ConnectionClosed:
            raise AgentUnreachable(
                f"the agent at {self.server} closed the connection",
                "it may have been stopped or restarted; run the command again",
            ) from None
        return parse_response(frame)

    def request(self, packet: Any, *, streaming: bool, timeout: float | None = None) -> Reply:
        """Send one request packet and read its answer up to the terminal packet."""
        frame = packet.serialize()
        if self._ws is None:
            self.connect()
        if self._hello_pending and len(frame) > PREAUTH_MAX_FRAME:
            self._finish_hello(timeout)
        limit = self.agent_info.get("max_frame")
        if isinstance(limit, int) and len(frame) > limit:
            raise RequestTooLarge(
                f"the request is {len(frame)} bytes; the agent at {self.server} takes at most {limit}",
                "its limits.max_request_body sets that; send less (a smaller file or fewer items)",
            )
        self.send_raw(frame)
        if self._hello_pending:
            self._finish_hello(timeout)
        if packet.opcode in SEED_OPCODES and CAP_STREAM not in self.capabilities:
            streaming = False
        reply = Reply()
        while True:
            pkt = self.recv_packet(timeout)
            if isinstance(pkt, ProgressPacket):
                reply.progress.append(pkt.message)
                if self.on_progress:
                    self.on_progress(pkt.message)
            elif isinstance(pkt, LogPacket):
                if self.on_log:
                    self.on_log(pkt.data)
            elif isinstance(pkt, DataPacket):
                reply.data_type, reply.data = pkt.type, pkt.decode_json()
                if not streaming:
                    return reply
            elif isinstance(pkt, SuccessPacket):
                reply.message = pkt.message
                return reply
            elif isinstance(pkt, ErrorPacket):
                raise error_for_code(pkt.code, pkt.message, pkt.details)
            else:  # pragma: no cover - parse_response knows no other type
                raise ProtocolError("unexpected packet from the agent")

    def call(self, opcode: Opcode, args: dict[str, Any] | None = None, *, timeout: float | None = None) -> Reply:
        """Any operation by opcode; the seed's three are sent in their own layouts."""
        args = args or {}
        packet: Any
        if opcode == Opcode.START_JUPYTER:
            packet = StartRequest(self.key_hash, args["name"], args.get("workspace") or "", args.get("password") or "")
        elif opcode == Opcode.STOP_JUPYTER:
            packet = StopRequest(self.key_hash, args["service_id"])
        elif opcode == Opcode.LIST_JUPYTER:
            packet = ListRequest(self.key_hash)
        else:
            packet = JsonRequest(opcode, self.key_hash, {k: v for k, v in args.items() if v is not None})
        return self.request(packet, streaming=opcode in STREAMING, timeout=timeout)

def _reason(exc: BaseException) -> str:
    if getattr(exc, "verify_message", None):
        return f"certificate verify failed: {exc.verify_message}"  # type: ignore[attr-defined]
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _hint(exc: BaseException) -> str:
    """What to try next: a certificate problem wants --ca, anything else a running agent."""
    if getattr(exc, "verify_code", None) is not None:
        return ("the agent's certificate is not trusted here: pass its CA bundle with --ca FILE "
                "(or FETCHML_CA, or `ca:` in ml's config file)")
    return ("start it with `make dev-up` (or `fetchml-agent serve --config agent.yaml`), "
            "or point ml at another agent with --server or FETCHML_SERVER")
