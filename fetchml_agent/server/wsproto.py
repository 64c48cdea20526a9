"""uvicorn's sans-I/O WebSocket protocol, with a frame size limit the application can raise.

uvicorn starts every connection with ``ws_max_size`` (the agent sets it to
:data:`~fetchml_agent.protocol.PREAUTH_MAX_FRAME`, enough for any request of the seed).
websockets checks that limit against a frame's header, before it buffers the payload, and closes
the connection with 1009 when it is exceeded: a 15 MiB frame from someone without a key costs the
agent a few bytes, not 15 MiB. Once a connection has sent a request with a valid key, the
transport raises the limit through the :data:`FRAME_LIMIT_EXTENSION` callable that this class puts
into the ASGI scope.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

__all__ = ["FRAME_LIMIT_EXTENSION", "FetchmlWebSocketProtocol"]

FRAME_LIMIT_EXTENSION = "fetchml.frame_limit"


class FetchmlWebSocketProtocol(WebSocketsSansIOProtocol):
    """Adds ``scope["extensions"]["fetchml.frame_limit"]``: ``set_limit(max_bytes)``."""

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:  # None: the handshake was refused before a scope existed
            scope["extensions"][FRAME_LIMIT_EXTENSION] = self._set_frame_limit

    def _set_frame_limit(self, max_bytes: int) -> None:
        # websockets reads the limit again before each frame (Protocol.parse).
        self.conn.max_message_size = max_bytes
