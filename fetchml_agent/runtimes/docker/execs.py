"""Commands in a workspace's running container (``exec``), with stdin when given."""

from __future__ import annotations

import asyncio
import shlex
import socket
from collections.abc import Callable
from typing import Any

from docker.utils.socket import frames_iter

from ...aio import run_blocking
from ...errors import (
    InvalidState,
    Timeout,
)
from ..base import (
    ExecResult,
    Output,
    State,
    WorkspaceSpec,
)
from .common import DockerBase, _docker_errors, rewrite_loopback_urls


class ExecMixin(DockerBase):
    """Runs commands beside JupyterLab in the workspace's container."""

    async def exec(
        self,
        spec: WorkspaceSpec,
        state: State | None,
        argv: list[str],
        output: Output | None = None,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
        stdin: bytes | None = None,
    ) -> ExecResult:
        """Run ``argv`` in the running container as its user; stdout and stderr interleaved.
        ``stdin``, when given, is written to the command and closed."""
        container = await run_blocking(self._container, state or {"container": self._names(spec.name)[0]})
        if container is None or container.status != "running":
            raise InvalidState(
                f"workspace {spec.name} is not running", "start it first: commands run inside its container"
            )
        # Commands run beside the server, not by it: they get no Jupyter secrets.
        cmd = ["env", "-u", "JUPYTER_TOKEN", "-u", "FETCHML_JUPYTER_PASSWORD_HASH", *argv]
        if timeout is not None:
            cmd = ["timeout", "--kill-after=5", f"{max(timeout, 0.1):g}", *cmd]
        if self.index is not None and env:
            env = rewrite_loopback_urls(env, self.index[1], self.index[0])
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[bytes | None] = asyncio.Queue()

        def run() -> int:
            try:
                with _docker_errors(f"running a command in {container.name}"):
                    api = self.client.api
                    exec_id = api.exec_create(container.id, cmd, environment=env or None, stdin=stdin is not None)["Id"]
                    if stdin is None:
                        for chunk in api.exec_start(exec_id, stream=True):
                            loop.call_soon_threadsafe(chunks.put_nowait, chunk)
                    else:
                        _exec_with_stdin(api, exec_id, stdin, lambda c: loop.call_soon_threadsafe(chunks.put_nowait, c))
                    return int(api.exec_inspect(exec_id)["ExitCode"])
            finally:
                loop.call_soon_threadsafe(chunks.put_nowait, None)

        job = asyncio.ensure_future(run_blocking(run))
        collected = bytearray()
        while (chunk := await chunks.get()) is not None:
            if output is not None:
                await output(chunk)
            else:
                collected += chunk
        code = await job
        if timeout is not None and code in (124, 137):
            raise Timeout(f"`{shlex.join(argv)}` did not finish within {timeout:g}s in workspace {spec.name}")
        return ExecResult(code, bytes(collected))




def _exec_with_stdin(api: Any, exec_id: str, data: bytes, emit: Callable[[bytes], Any]) -> None:
    """Start an exec created with ``stdin=True``: write ``data``, close its stdin, and pass what
    it prints (stdout and stderr) to ``emit``."""
    sock = api.exec_start(exec_id, socket=True)
    raw = getattr(sock, "_sock", sock)
    try:
        raw.sendall(data)
        raw.shutdown(socket.SHUT_WR)
        for _stream, chunk in frames_iter(sock, tty=False):
            emit(chunk)
    finally:
        sock.close()


