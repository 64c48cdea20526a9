"""A second HTTP server of the agent's process, on a socket of its own: the index-only listener
(:mod:`.index_listener`) and the ``metrics.listen`` server (:mod:`.metrics`) are two. Each owner
binds its socket (the errors name its own setting); this starts uvicorn on it, waits until it
serves, and stops it with the agent. The main server handles the process's signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import uvicorn

__all__ = ["SideServer"]


class _Quiet(uvicorn.Server):
    def capture_signals(self) -> Any:  # type: ignore[override]
        return contextlib.nullcontext()


class SideServer:
    """One side server: :meth:`serve` starts it, :meth:`stop` ends it (idempotent)."""

    def __init__(self) -> None:
        self._running: tuple[uvicorn.Server, asyncio.Task[None], socket.socket] | None = None

    async def serve(self, config: uvicorn.Config, sock: socket.socket, name: str) -> bool:
        """Serve ``config``'s app on the bound ``sock``; False (the socket closed) when it did not start."""
        server = _Quiet(config)
        task = asyncio.create_task(server.serve(sockets=[sock]), name=name)
        while not server.started and not task.done():
            await asyncio.sleep(0.02)
        if not server.started:
            sock.close()
            return False
        self._running = (server, task, sock)
        return True

    async def stop(self) -> None:
        if self._running is None:
            return
        server, task, sock = self._running
        self._running = None
        server.should_exit = True
        try:
            await asyncio.wait_for(task, 10)
        except Exception:
            task.cancel()
        sock.close()
