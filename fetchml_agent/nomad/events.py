"""Nomad's event stream, ``GET /v1/event/stream``, read as frames (not python-nomad's helper).

Why not python-nomad's ``event.stream``: on a reconnect it subscribes again from the index it was
first given, so a client sees everything since then twice; and it runs in a thread. Here one
subscription is one HTTP request read line by line on the event loop (httpx), the caller chooses
the index each time, and drops what it has already processed.

What Nomad sends, and what :func:`subscribe` makes of it (``command/agent/event_endpoint.go``,
``nomad/event_endpoint.go``, ``nomad/stream/``; modelled by the tests' double):

* newline-delimited JSON: ``{}`` heartbeats (the first line, then every few seconds) and frames
  ``{"Index": N, "Events": [...]}``, every event of one Raft apply in one frame, each event with
  its ``Topic``, ``Type``, ``Key``, ``FilterKeys``, ``Namespace``, ``Index`` and ``Payload``;
* ``index=N`` starts at the first buffered frame whose index is at least N (so the frame at N
  comes again), or at the newest one when N is past it; the buffer is short (100 frames by
  default), so a frame older than it is gone without notice;
* ``topic=Topic:*`` for each topic wanted (``*`` together with other keys of the same topic
  matches nothing, so keys are never mixed);
* refusals: 404 before Nomad 1.0 (no stream at all); 403 ``Permission denied`` for a token without
  the capability a topic needs (Job, Allocation, Evaluation, Deployment: ``read-job``; Node:
  ``node:read``) up to Nomad 1.11; from 2.0 the status line is written before that check, so a
  denial is a ``200`` whose body ends before the first line. All three raise
  :class:`StreamUnavailable`; other failures raise project errors (:class:`BackendUnavailable` when
  Nomad cannot be reached, :class:`BackendError` otherwise).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx

from fetchml_agent.errors import BackendError, BackendUnavailable
from fetchml_agent.nomad.schema import NomadSettings

__all__ = ["HEARTBEAT", "TOPICS", "StreamUnavailable", "stream_client", "subscribe"]

#: The topics the agent follows.
TOPICS: tuple[str, ...] = ("Job", "Allocation", "Evaluation", "Deployment", "Node")
#: What a heartbeat line decodes to.
HEARTBEAT: dict[str, Any] = {}


class StreamUnavailable(Exception):
    """This Nomad does not serve the stream to this token: ``denied`` (ACL; ``topics`` says which
    were asked) or missing (Nomad before 1.0)."""

    def __init__(self, message: str, *, denied: bool, topics: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.denied = denied
        self.topics = tuple(topics)


def stream_client(settings: NomadSettings, read_timeout: float) -> httpx.AsyncClient:
    """An HTTP client for event streams with the settings' TLS and token, no proxies, and a read
    timeout (``read_timeout``, longer than Nomad's heartbeat period) that notices a dead server."""
    verify: bool | str = bool(settings.tls_verify)
    if settings.tls_verify and settings.tls_ca:
        verify = settings.tls_ca
    cert = (settings.tls_cert, settings.tls_key) if settings.tls_cert and settings.tls_key else None
    headers = {"X-Nomad-Token": settings.token} if settings.token else {}
    return httpx.AsyncClient(
        base_url=settings.address, headers=headers, verify=verify, cert=cert, trust_env=False,
        timeout=httpx.Timeout(settings.http_timeout, read=read_timeout),
    )


async def subscribe(
    client: httpx.AsyncClient, settings: NomadSettings, index: int, topics: Sequence[str] = TOPICS,
) -> AsyncIterator[dict[str, Any]]:
    """The lines of one subscription from ``index``, decoded: heartbeats as ``{}`` and frames.

    Ends (``StopAsyncIteration``) when Nomad closes a stream that had started; raises
    :class:`StreamUnavailable` for a refusal (see the module docstring), :class:`BackendUnavailable`
    when Nomad cannot be reached or stops answering, :class:`BackendError` for another status or a
    line that is not JSON.
    """
    params: list[tuple[str, str | int | float | bool | None]] = [
        ("index", str(max(0, int(index)))), ("namespace", settings.namespace)]
    params += [("topic", f"{t}:*") for t in topics]
    if settings.region:
        params.append(("region", settings.region))
    where = f"Nomad at {settings.address}"
    try:
        async with client.stream("GET", "/v1/event/stream", params=params) as resp:
            if resp.status_code == 404:
                raise StreamUnavailable(f"{where} has no event stream (Nomad before 1.0)", denied=False)
            if resp.status_code == 403:
                text = (await resp.aread()).decode("utf-8", "replace").strip()
                raise StreamUnavailable(f"{where} refused the event stream: {text or 'Permission denied'}",
                                        denied=True, topics=topics)
            if resp.status_code != 200:
                text = (await resp.aread()).decode("utf-8", "replace").strip()
                raise BackendError(f"{where} answered {resp.status_code} to the event stream: {text[:300]}")
            started = False
            async for line in resp.aiter_lines():
                if not line.strip():
                    continue
                try:
                    frame = json.loads(line)
                except json.JSONDecodeError:
                    raise BackendError(f"{where} sent an event stream line that is not JSON: {line[:200]!r}") from None
                if not isinstance(frame, dict):
                    raise BackendError(f"{where} sent an event stream line that is not an object: {line[:200]!r}")
                started = True
                yield frame
            if not started:
                raise StreamUnavailable(
                    f"{where} ended the event stream before its first line (Nomad 2.0 answers a denied "
                    "subscription that way)", denied=True, topics=topics)
    except httpx.TimeoutException as exc:
        raise BackendUnavailable(f"{where} stopped sending the event stream (no heartbeat): {type(exc).__name__}",
                                 "the agent subscribes again") from None
    except httpx.HTTPError as exc:
        raise BackendUnavailable(f"cannot reach {where} for the event stream: {exc}",
                                 "check nomad.address and that Nomad is up") from None
