"""The project's errors: one hierarchy, one table of codes.

Every error a user can see is a :class:`FetchmlError` carrying a wire code (the protocol's
``error_code:1``), an HTTP status and a CLI exit code. The table lives here and nowhere else::

    FetchmlError                     UNKNOWN              0x00  500  exit 1
    ├── ProtocolError                INVALID_REQUEST      0x01  400  exit 1
    │   └── RequestTooLarge          INVALID_REQUEST      0x01  413  exit 1
    ├── AuthenticationFailed         AUTH_FAILED          0x02  401  exit 3
    │   └── TooManyAuthFailures      AUTH_FAILED          0x02  429  exit 3
    ├── PermissionDenied             PERMISSION_DENIED    0x03  403  exit 3
    ├── NotFound                     NOT_FOUND            0x04  404  exit 4
    ├── AlreadyExists                ALREADY_EXISTS       0x05  409  exit 4
    ├── InvalidArgument              INVALID_ARGUMENT     0x06  422  exit 2
    ├── PolicyDenied                 POLICY_DENIED        0x07  403  exit 5
    ├── ApprovalRequired             APPROVAL_REQUIRED    0x08  403  exit 6
    ├── InsufficientResources        INSUFFICIENT_RES.    0x09  409  exit 8
    │   └── QuotaExceeded            INSUFFICIENT_RES.    0x09  409  exit 8
    ├── InvalidState                 INVALID_STATE        0x0A  409  exit 4
    ├── Overloaded                   SERVER_OVERLOADED    0x10  503  exit 1
    ├── BackendUnavailable           BACKEND_UNAVAILABLE  0x11  503  exit 7
    ├── BackendError                 BACKEND_ERROR        0x12  502  exit 1
    ├── UpstreamUnavailable          UPSTREAM_UNAVAIL.    0x13  502  exit 7
    ├── Timeout                      TIMEOUT              0x14  504  exit 1
    ├── NotSupported                 NOT_SUPPORTED        0x15  400  exit 2
    └── MfaRequired                  MFA_REQUIRED         0x16  401  exit 3

``0x00``–``0x03``, ``0x10`` and ``0x14`` are the seed's; the rest are this project's and never
reuse a value. ``docs/protocol.md`` shows the same table. The CLI also exits 2 for usage errors
(argparse) and 7 when the agent cannot be reached (:class:`AgentUnreachable`, raised client-side).
Exit codes follow the README's table: 1 is the agent's (or its backend's) own failure; something
this agent does not offer (``NotSupported``: conda where there is none, image builds on the local
runtime) is the request's problem, 2, like any other input it cannot serve. 9
(:data:`EXIT_TAMPERED`): ``ml jupyter audit --verify`` (or ``--verify-export``) found the audit
chain or an export of it changed; that is an answer, not an error packet.
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar

__all__ = [
    "AgentUnreachable",
    "AlreadyExists",
    "ApprovalRequired",
    "AuthenticationFailed",
    "BackendError",
    "BackendUnavailable",
    "ErrorCode",
    "FetchmlError",
    "InsufficientResources",
    "InvalidArgument",
    "InvalidState",
    "MfaRequired",
    "NotFound",
    "NotSupported",
    "Overloaded",
    "PermissionDenied",
    "PolicyDenied",
    "ProtocolError",
    "QuotaExceeded",
    "RequestTooLarge",
    "Timeout",
    "TooManyAuthFailures",
    "UpstreamUnavailable",
    "error_for_code",
    "EXIT_OK",
    "EXIT_TAMPERED",
    "EXIT_USAGE",
]

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_TAMPERED = 9


class ErrorCode(enum.IntEnum):
    """Wire error codes (``error_code:1`` of the error packet)."""

    UNKNOWN = 0x00
    INVALID_REQUEST = 0x01
    AUTH_FAILED = 0x02
    PERMISSION_DENIED = 0x03
    NOT_FOUND = 0x04
    ALREADY_EXISTS = 0x05
    INVALID_ARGUMENT = 0x06
    POLICY_DENIED = 0x07
    APPROVAL_REQUIRED = 0x08
    INSUFFICIENT_RESOURCES = 0x09
    INVALID_STATE = 0x0A
    SERVER_OVERLOADED = 0x10
    BACKEND_UNAVAILABLE = 0x11
    BACKEND_ERROR = 0x12
    UPSTREAM_UNAVAILABLE = 0x13
    TIMEOUT = 0x14
    NOT_SUPPORTED = 0x15
    MFA_REQUIRED = 0x16


class FetchmlError(Exception):
    """Base of every error a user may see: a code, a message a person can act on, details.

    ``details`` is free text for the curious (what was tried, which key, which file); it never
    holds a traceback or internal state.
    """

    code: ClassVar[ErrorCode] = ErrorCode.UNKNOWN
    http_status: ClassVar[int] = 500
    exit_code: ClassVar[int] = 1

    def __init__(self, message: str, details: str = "", **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.fields = fields

    def __str__(self) -> str:
        return f"{self.message} ({self.details})" if self.details else self.message

    def to_dict(self) -> dict[str, Any]:
        """The JSON body of an HTTP error and of ``ml --json`` failures."""
        out: dict[str, Any] = {
            "error": self.code.name.lower(),
            "code": int(self.code),
            "message": self.message,
        }
        if self.details:
            out["details"] = self.details
        out.update({k: v for k, v in self.fields.items() if v is not None})
        return out


class ProtocolError(FetchmlError):
    """A frame that does not follow the binary protocol (truncated, bad lengths, unknown opcode)."""

    code = ErrorCode.INVALID_REQUEST
    http_status = 400


class RequestTooLarge(ProtocolError):
    """A request body over the operation's limit (``limits.max_request_body``)."""

    http_status = 413


class AuthenticationFailed(FetchmlError):
    code = ErrorCode.AUTH_FAILED
    http_status = 401
    exit_code = 3


class TooManyAuthFailures(AuthenticationFailed):
    """A wrong key from an address that is over its budget of failures for this minute."""

    http_status = 429


class PermissionDenied(FetchmlError):
    code = ErrorCode.PERMISSION_DENIED
    http_status = 403
    exit_code = 3


class NotFound(FetchmlError):
    code = ErrorCode.NOT_FOUND
    http_status = 404
    exit_code = 4


class AlreadyExists(FetchmlError):
    code = ErrorCode.ALREADY_EXISTS
    http_status = 409
    exit_code = 4


class InvalidArgument(FetchmlError):
    """A well-formed request with a value that is not acceptable (bad name, bad size, bad spec)."""

    code = ErrorCode.INVALID_ARGUMENT
    http_status = 422
    exit_code = 2


class PolicyDenied(FetchmlError):
    code = ErrorCode.POLICY_DENIED
    http_status = 403
    exit_code = 5


class ApprovalRequired(FetchmlError):
    code = ErrorCode.APPROVAL_REQUIRED
    http_status = 403
    exit_code = 6


class InsufficientResources(FetchmlError):
    code = ErrorCode.INSUFFICIENT_RESOURCES
    http_status = 409
    exit_code = 8


class QuotaExceeded(InsufficientResources):
    """A create, start or scale that would take its owner (or one of their teams) past a quota of
    agent.yaml ``quotas:``. ``fields`` carry ``quota`` (whose and which), ``limit`` and
    ``in_use`` (what is counted now, with the workspaces that count)."""


class InvalidState(FetchmlError):
    """The target exists but is in the wrong state for the operation (stopped, already decided)."""

    code = ErrorCode.INVALID_STATE
    http_status = 409
    exit_code = 4


class Overloaded(FetchmlError):
    code = ErrorCode.SERVER_OVERLOADED
    http_status = 503


class BackendUnavailable(FetchmlError):
    """The runtime's backend (Docker engine, Nomad API) cannot be reached."""

    code = ErrorCode.BACKEND_UNAVAILABLE
    http_status = 503
    exit_code = 7


class BackendError(FetchmlError):
    """The backend answered but failed the operation (start failed, job invalid, ...)."""

    code = ErrorCode.BACKEND_ERROR
    http_status = 502


class UpstreamUnavailable(FetchmlError):
    """The upstream package index cannot be reached."""

    code = ErrorCode.UPSTREAM_UNAVAILABLE
    http_status = 502
    exit_code = 7


class Timeout(FetchmlError):
    code = ErrorCode.TIMEOUT
    http_status = 504


class NotSupported(FetchmlError):
    """The request is valid, but this agent's runtime does not offer it (the message names what does)."""

    code = ErrorCode.NOT_SUPPORTED
    # 400, not 501: the agent works as configured; the request asks for what it does not offer
    # (schemathesis counts every 5xx as the server's fault, and so do proxies and alerting).
    http_status = 400
    exit_code = 2


class MfaRequired(FetchmlError):
    """The second factor (a TOTP or recovery code) is needed: ``ml auth elevate`` for admin
    operations, the code field of a browser login (docs/access.md)."""

    code = ErrorCode.MFA_REQUIRED
    http_status = 401
    exit_code = 3


class AgentUnreachable(FetchmlError):
    """Client side only: the agent did not answer at the address tried."""

    code = ErrorCode.UNKNOWN
    exit_code = 7


_BY_CODE: dict[int, type[FetchmlError]] = {
    cls.code: cls
    for cls in (
        FetchmlError,
        ProtocolError,
        AuthenticationFailed,
        PermissionDenied,
        NotFound,
        AlreadyExists,
        InvalidArgument,
        PolicyDenied,
        ApprovalRequired,
        InsufficientResources,
        InvalidState,
        Overloaded,
        BackendUnavailable,
        BackendError,
        UpstreamUnavailable,
        Timeout,
        NotSupported,
        MfaRequired,
    )
}


def error_for_code(code: int, message: str, details: str = "", **fields: Any) -> FetchmlError:
    """Rebuild the project error for a wire code (client side); unknown codes become the base."""
    cls = _BY_CODE.get(code, FetchmlError)
    err = cls(message, details, **fields)
    return err
