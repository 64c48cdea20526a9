"""Translating Nomad's failures into the project's errors, at the boundary.

python-nomad raises exceptions that share no useful base: :class:`nomad.api.exceptions.BaseNomadException`
(with subclasses per HTTP status) wraps both HTTP answers and ``requests`` transport errors, while
``TimeoutNomadException`` derives from ``requests.RequestException``. :func:`map_nomad_errors`
catches all of them (and raw ``requests`` errors) and raises the most specific project error
``from`` the original:

=================================  =====================================================
Nomad / transport                  project error
=================================  =====================================================
connection refused, DNS, TLS       :class:`BackendUnavailable` (what address, what to check)
no cluster leader, 502/503/504     :class:`BackendUnavailable`
read/connect timeout               :class:`Timeout`
403 Permission denied / bad token  :class:`PermissionDenied` (the agent's ACL token)
404                                :class:`NotFound`
400                                :class:`InvalidArgument` (Nomad's message)
409                                :class:`AlreadyExists` (a Variable changed concurrently)
other 5xx                          :class:`BackendError` (Nomad's message)
an answer that is not JSON         :class:`BackendError`
=================================  =====================================================

:func:`map_exec_errors` does the same for the exec WebSocket (``websockets`` exceptions and
Nomad's close frames).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import nomad.api.exceptions as nomad_exc
import requests

from fetchml_agent.errors import (
    AlreadyExists,
    BackendError,
    BackendUnavailable,
    FetchmlError,
    InvalidArgument,
    InvalidState,
    NotFound,
    PermissionDenied,
    Timeout,
)

__all__ = ["ACL_HINT", "exec_close_error", "map_exec_errors", "map_nomad_errors", "nomad_message"]

ACL_HINT = (
    "give the agent's Nomad token (nomad.token) a policy with namespace capabilities submit-job, "
    "read-job, read-logs, read-fs, alloc-exec, alloc-lifecycle and variables write on nomad/jobs/*; "
    "see docs/nomad.md"
)
_MAX_TEXT = 600


def nomad_message(resp: Any) -> str:
    """Nomad's error text from a ``requests.Response`` (errors are text/plain), shortened."""
    text = ""
    try:
        text = (resp.text or "").strip()
    except Exception:  # a response whose body cannot be decoded
        text = ""
    text = " ".join(text.split())
    return text[:_MAX_TEXT] + ("..." if len(text) > _MAX_TEXT else "")


@contextlib.contextmanager
def map_nomad_errors(action: str, address: str = "", what: str = "") -> Iterator[None]:
    """Raise project errors for Nomad failures inside the block.

    ``action`` completes "Nomad could not ..." (``"register job fetchml-ws-a"``), ``address`` is
    the Nomad address for messages, ``what`` names the object for :class:`NotFound`
    (``"job fetchml-ws-a"``). Project errors raised inside pass through unchanged.
    """
    try:
        yield
    except FetchmlError:
        raise
    except nomad_exc.TimeoutNomadException as exc:
        raise _transport_error(exc, action, address) from exc
    except nomad_exc.BaseNomadException as exc:
        inner = exc.nomad_resp
        if isinstance(inner, requests.Response):
            raise _http_error(inner, action, address, what) from exc
        raise _transport_error(inner, action, address) from exc
    except requests.RequestException as exc:
        raise _transport_error(exc, action, address) from exc
    except json.JSONDecodeError as exc:
        raise BackendError(
            f"Nomad answered {action} with something that is not JSON",
            details=f"{address}: {exc}; is nomad.address a Nomad HTTP API?",
        ) from exc


def _http_error(resp: requests.Response, action: str, address: str, what: str) -> FetchmlError:
    status = resp.status_code
    text = nomad_message(resp)
    where = f"{address}: HTTP {status} {text}".strip()
    if status == 403:
        if "token not found" in text.lower():
            return PermissionDenied(f"Nomad does not know the agent's ACL token ({action})", details=ACL_HINT)
        return PermissionDenied(
            f"Nomad denied the agent's ACL token permission to {action}", details=ACL_HINT
        )
    if status == 404:
        return NotFound(f"{what or 'object'} not found in Nomad", details=where)
    if status == 400:
        return InvalidArgument(f"Nomad rejected the request to {action}: {text}", details=address)
    if status == 409:
        return AlreadyExists(f"Nomad could not {action}: it changed concurrently; retry", details=where)
    if status in (502, 503, 504) or "no cluster leader" in text.lower():
        return BackendUnavailable(
            f"Nomad is not able to serve requests ({action}): {text or 'HTTP ' + str(status)}",
            details=f"{address}: check that the Nomad servers are up and have elected a leader",
        )
    return BackendError(f"Nomad could not {action}: {text or 'HTTP ' + str(status)}", details=address)


def _transport_error(exc: BaseException, action: str, address: str) -> FetchmlError:
    if isinstance(exc, (requests.Timeout, nomad_exc.TimeoutNomadException)):
        return Timeout(
            f"Nomad did not answer in time ({action})",
            details=f"{address}: raise nomad.http_timeout or check the Nomad servers' load",
        )
    if isinstance(exc, requests.exceptions.SSLError):
        return BackendUnavailable(
            f"TLS with Nomad failed ({action})",
            details=f"{address}: {_short(exc)}; set nomad.tls.ca to the CA that signed Nomad's certificate",
        )
    if isinstance(exc, requests.ConnectionError):
        return BackendUnavailable(
            f"cannot reach Nomad at {address or 'the configured address'} ({action})",
            details=f"{_short(exc)}; check nomad.address and that the Nomad agent is running",
        )
    return BackendError(f"talking to Nomad failed ({action})", details=f"{address}: {_short(exc)}")


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text[:300] + ("..." if len(text) > 300 else "")


def exec_close_error(code: int | None, reason: str, alloc_id: str, task: str) -> FetchmlError:
    """The project error for a close frame Nomad sent instead of an exit result."""
    low = reason.lower()
    if "permission denied" in low or "acl token" in low:
        return PermissionDenied("Nomad refused to exec into the workspace", details=ACL_HINT)
    if "not started yet" in low or "not running" in low or "terminal" in low:
        return InvalidState(f"the workspace task is not running ({reason})", details=f"allocation {alloc_id}")
    if "unknown task" in low or "unknown allocation" in low or "not found" in low:
        return NotFound(f"allocation {alloc_id} task {task} not found in Nomad", details=reason)
    return BackendError(f"exec in the workspace failed: {reason or 'closed with code ' + str(code)}")


@contextlib.contextmanager
def map_exec_errors(address: str, alloc_id: str, task: str) -> Iterator[None]:
    """Translate ``websockets``/OS errors of an exec session into project errors."""
    import websockets.exceptions as ws_exc  # local: only exec needs websockets

    try:
        yield
    except FetchmlError:
        raise
    except ws_exc.InvalidStatus as exc:
        status = exc.response.status_code
        body = exc.response.body.decode("utf-8", "replace").strip() if exc.response.body else ""
        if status == 403:
            raise PermissionDenied("Nomad refused to exec into the workspace", details=ACL_HINT) from exc
        if status == 404:
            raise NotFound(f"allocation {alloc_id} not found in Nomad", details=body) from exc
        raise BackendError(f"Nomad refused the exec session: HTTP {status} {body}".strip()) from exc
    except ws_exc.ConnectionClosed as exc:
        rcvd = exc.rcvd
        if rcvd is None:  # no close frame: the connection itself broke (Nomad or its node went away)
            raise BackendUnavailable(
                f"lost the connection to Nomad at {address} while a command ran in allocation {alloc_id}",
                details="the command may have finished or may still run; check the workspace "
                "(ml jupyter status) and the Nomad servers, then retry",
            ) from exc
        raise exec_close_error(
            rcvd.code if rcvd else None, rcvd.reason if rcvd else "", alloc_id, task
        ) from exc
    except ws_exc.InvalidURI as exc:
        raise BackendUnavailable(f"invalid Nomad address for exec: {address}") from exc
    except (OSError, ws_exc.InvalidHandshake) as exc:
        raise BackendUnavailable(
            f"cannot reach Nomad at {address} for exec", details=f"{_short(exc)}; check nomad.address"
        ) from exc
