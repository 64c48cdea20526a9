"""TOTP (RFC 6238) through pyotp, and recovery codes.

Codes are six digits for 30-second steps; one step either side is accepted (clock drift), and a
step once used is refused afterwards (no replay). Recovery codes are ten one-time codes shown once
at enrolment; only their SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

import pyotp

__all__ = ["RECOVERY_CODES", "hash_recovery", "new_recovery_codes", "new_secret", "provisioning_uri", "verify_totp"]

RECOVERY_CODES = 10
_STEP = 30


def new_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, user: str, issuer: str) -> str:
    """The ``otpauth://totp/...`` URI an authenticator app reads (from a QR code)."""
    return pyotp.TOTP(secret).provisioning_uri(name=user, issuer_name=issuer)


def verify_totp(secret: str, code: str, last_step: int, now: float | None = None) -> int | None:
    """The time step ``code`` matches (within one step of now, later than ``last_step``), else None."""
    code = "".join(code.split())
    if not code.isdigit() or len(code) != 6:
        return None
    totp = pyotp.TOTP(secret)
    current = int((time.time() if now is None else now) // _STEP)
    for step in (current - 1, current, current + 1):
        if step > last_step and hmac.compare_digest(totp.at(step * _STEP), code):
            return step
    return None


def new_recovery_codes() -> list[str]:
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    return ["".join(secrets.choice(alphabet) for _ in range(5)) + "-" + "".join(secrets.choice(alphabet) for _ in range(5))
            for _ in range(RECOVERY_CODES)]


def hash_recovery(code: str) -> str:
    return hashlib.sha256("".join(code.lower().split()).encode()).hexdigest()
