"""Running a command inside an allocation through Nomad's exec WebSocket (python-nomad has none).

``GET /v1/client/allocation/:id/exec?task=&command=<JSON array>&tty=false`` upgraded to a
WebSocket. Frames are JSON text messages: the client sends ``{"stdin": {"data": b64}}``,
``{"stdin": {"close": true}}`` and ``{}`` heartbeats; Nomad sends ``{"stdout"|"stderr": {"data": b64}}``
and finally ``{"exited": true, "result": {"exit_code": N}}`` (``exit_code`` omitted when 0).
Errors arrive as a close frame whose reason is Nomad's message.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
import time
from collections.abc import Awaitable, Callable
from urllib.parse import quote, urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedOK

from fetchml_agent.errors import BackendError, Timeout
from fetchml_agent.nomad.errors import exec_close_error, map_exec_errors
from fetchml_agent.nomad.schema import NomadSettings

__all__ = ["ExecOutcome", "HEARTBEAT_SECONDS", "alloc_exec", "exec_url"]

HEARTBEAT_SECONDS = 10.0
Output = Callable[[bytes], Awaitable[None]]


class ExecOutcome:
    """Exit code and the collected output (stdout and stderr interleaved, capped)."""

    __slots__ = ("exit_code", "output", "truncated")

    def __init__(self, exit_code: int, output: bytes, truncated: bool) -> None:
        self.exit_code = exit_code
        self.output = output
        self.truncated = truncated


def exec_url(settings: NomadSettings, alloc_id: str, task: str, argv: list[str]) -> str:
    """The ``ws(s)://`` URL of an exec session."""
    base = settings.address
    scheme = "wss" if base.startswith("https://") else "ws"
    host = base.split("://", 1)[1]
    query = {"task": task, "command": json.dumps(argv), "tty": "false", "namespace": settings.namespace}
    if settings.region:
        query["region"] = settings.region
    return f"{scheme}://{host}/v1/client/allocation/{quote(alloc_id, safe='')}/exec?{urlencode(query)}"


def _ssl_context(settings: NomadSettings) -> ssl.SSLContext | None:
    if not settings.address.startswith("https://"):
        return None
    ctx = (
        ssl.create_default_context(cafile=settings.tls_ca)
        if settings.tls_verify
        else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    )
    if not settings.tls_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if settings.tls_cert and settings.tls_key:
        ctx.load_cert_chain(settings.tls_cert, settings.tls_key)
    return ctx


async def _send_stdin(ws: ClientConnection, stdin: bytes | None) -> None:
    """Send ``stdin`` and close it. A command that does not read its stdin may finish, and Nomad
    send its exit frame and close, before these frames are sent: sending then stops, and the
    frames already received (the output, the exit code) are still read."""
    with contextlib.suppress(ConnectionClosedOK):
        if stdin:
            for i in range(0, len(stdin), 32 * 1024):
                encoded = base64.b64encode(stdin[i : i + 32 * 1024]).decode()
                await ws.send(json.dumps({"stdin": {"data": encoded}}))
        await ws.send(json.dumps({"stdin": {"close": True}}))


async def alloc_exec(
    settings: NomadSettings,
    alloc_id: str,
    task: str,
    argv: list[str],
    output: Output | None = None,
    stdin: bytes | None = None,
    timeout: float | None = None,
    max_output: int = 4 * 1024 * 1024,
) -> ExecOutcome:
    """Run ``argv`` in ``task`` of allocation ``alloc_id`` and return its exit code and output.

    ``output`` receives each chunk of stdout/stderr as it arrives. ``stdin`` (if any) is sent and
    closed; without it stdin is closed at once. Raises :class:`Timeout` after ``timeout``
    seconds (the session is closed; Nomad stops the command), :class:`PermissionDenied`,
    :class:`NotFound`, :class:`InvalidState` or :class:`BackendError` from Nomad's answer, and
    :class:`BackendUnavailable` when Nomad cannot be reached.
    """
    if not argv:
        raise BackendError("exec needs a command")
    url = exec_url(settings, alloc_id, task, argv)
    headers = {"X-Nomad-Token": settings.token} if settings.token else {}
    collected = bytearray()
    truncated = False
    deadline = time.monotonic() + timeout if timeout else None

    async def session() -> int:
        nonlocal truncated
        async with connect(
            url,
            additional_headers=headers,
            ssl=_ssl_context(settings),
            proxy=None,
            open_timeout=settings.http_timeout,
            max_size=16 * 1024 * 1024,
            compression=None,
        ) as ws:
            await _send_stdin(ws, stdin)

            async def heartbeat() -> None:
                with contextlib.suppress(ConnectionClosedOK):
                    while True:
                        await asyncio.sleep(HEARTBEAT_SECONDS)
                        await ws.send("{}")

            beat = asyncio.create_task(heartbeat())
            try:
                async for message in ws:
                    frame = json.loads(message)
                    for stream in ("stdout", "stderr"):
                        data = (frame.get(stream) or {}).get("data")
                        if data:
                            chunk = base64.b64decode(data)
                            if len(collected) < max_output:
                                collected.extend(chunk[: max_output - len(collected)])
                            else:
                                truncated = True
                            if output is not None:
                                await output(chunk)
                    if frame.get("exited"):
                        result = frame.get("result") or {}
                        return int(result.get("exit_code", 0))
            finally:
                beat.cancel()
            # The stream ended without an exit frame: Nomad closed it with a reason.
            rcvd = ws.close_code, ws.close_reason or ""
            raise exec_close_error(rcvd[0], rcvd[1], alloc_id, task)

    with map_exec_errors(settings.address, alloc_id, task):
        try:
            if deadline is None:
                code = await session()
            else:
                code = await asyncio.wait_for(session(), max(0.001, deadline - time.monotonic()))
        except TimeoutError:
            raise Timeout(
                f"the command in the workspace did not finish within {timeout:g} s", details=" ".join(argv)
            ) from None
    return ExecOutcome(code, bytes(collected), truncated)
