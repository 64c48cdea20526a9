"""The access key: one random secret in a 0600 file beside the database, never inside it.

Personal tokens and session tokens are *checked by recomputing* an HMAC with keys derived from it,
so the database holds no token at all: reading ``agent.db`` (a backup, a copy) lets no one into a
workspace. TOTP secrets are stored sealed with a key derived from it. Losing the file signs every
person out and voids MFA enrolments (they must enrol again); that is the only way to rotate it.

Formats (URL-safe, so a token rides in ``?token=``)::

    personal token   fmlp.<base64url(user)>.<workspace id>.<mac>   mac = HMAC(k_personal, user \\0 ws \\0 generation)
    session token    fmls.<session id>.<mac>                         mac = HMAC(k_session, session id)

A personal token names its person and workspace (not secrets); the generation is the agent's
(``ml jupyter revoke`` bumps it), so an old URL stays dead after access is granted again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

__all__ = ["AccessKeys", "PersonalToken", "load_or_create_key"]

_MAC_LEN = 32  # characters of base64url: 192 bits


def load_or_create_key(path: Path) -> bytes:
    """The key in ``path`` (created with 32 random bytes, mode 0600, when missing)."""
    try:
        data = path.read_bytes().strip()
    except FileNotFoundError:
        key = secrets.token_bytes(32)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key.hex() + "\n")
        return key
    if os.stat(path).st_mode & 0o077:
        os.chmod(path, 0o600)
    return bytes.fromhex(data.decode())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class PersonalToken:
    user: str
    workspace_id: str
    mac: str


class AccessKeys:
    """Derived keys and the token codecs; pure functions of the key."""

    def __init__(self, key: bytes) -> None:
        self._personal = hmac.new(key, b"fetchml personal token", hashlib.sha256).digest()
        self._session = hmac.new(key, b"fetchml session token", hashlib.sha256).digest()
        self._seal = hmac.new(key, b"fetchml mfa seal", hashlib.sha256).digest()
        self._server = hmac.new(key, b"fetchml server credential", hashlib.sha256).digest()

    # -- personal tokens ----------------------------------------------------------------------

    def _personal_mac(self, user: str, workspace_id: str, generation: int) -> str:
        msg = f"{user}\0{workspace_id}\0{generation}".encode()
        return _b64(hmac.new(self._personal, msg, hashlib.sha256).digest())[:_MAC_LEN]

    def personal_token(self, user: str, workspace_id: str, generation: int) -> str:
        return f"fmlp.{_b64(user.encode())}.{workspace_id}.{self._personal_mac(user, workspace_id, generation)}"

    @staticmethod
    def parse_personal(token: str) -> PersonalToken | None:
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != "fmlp":
            return None
        try:
            user = _unb64(parts[1]).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        if not user or _b64(user.encode()) != parts[1]:
            return None  # only the one canonical spelling of a name
        return PersonalToken(user, parts[2], parts[3])

    def personal_ok(self, token: PersonalToken, generation: int) -> bool:
        return hmac.compare_digest(self._personal_mac(token.user, token.workspace_id, generation), token.mac)

    # -- session tokens -----------------------------------------------------------------------

    def _session_mac(self, session_id: str) -> str:
        return _b64(hmac.new(self._session, session_id.encode(), hashlib.sha256).digest())[:_MAC_LEN]

    def new_session_token(self) -> tuple[str, str]:
        """A fresh ``(session id, token)``."""
        sid = secrets.token_urlsafe(12)
        return sid, f"fmls.{sid}.{self._session_mac(sid)}"

    def session_id(self, token: str) -> str | None:
        """The session id of a well-formed, authentic session token; else ``None``."""
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != "fmls":
            return None
        return parts[1] if hmac.compare_digest(self._session_mac(parts[1]), parts[2]) else None

    # -- server credentials -------------------------------------------------------------------

    def server_digest(self, credential: str) -> str:
        """What identifies a workspace server's credential in memory and in the store."""
        return hmac.new(self._server, credential.encode(), hashlib.sha256).hexdigest()

    # -- sealing (TOTP secrets) ---------------------------------------------------------------

    def seal(self, purpose: str, plaintext: bytes) -> str:
        """Encrypt-then-MAC with an HMAC-SHA256 keystream and a random nonce (stdlib only)."""
        nonce = secrets.token_bytes(16)
        stream = self._stream(purpose, nonce, len(plaintext))
        body = bytes(a ^ b for a, b in zip(plaintext, stream, strict=True))
        tag = hmac.new(self._seal, b"tag" + purpose.encode() + nonce + body, hashlib.sha256).digest()[:16]
        return _b64(nonce + body + tag)

    def unseal(self, purpose: str, sealed: str) -> bytes | None:
        raw = _unb64(sealed)
        if len(raw) < 32:
            return None
        nonce, body, tag = raw[:16], raw[16:-16], raw[-16:]
        want = hmac.new(self._seal, b"tag" + purpose.encode() + nonce + body, hashlib.sha256).digest()[:16]
        if not hmac.compare_digest(want, tag):
            return None
        stream = self._stream(purpose, nonce, len(body))
        return bytes(a ^ b for a, b in zip(body, stream, strict=True))

    def _stream(self, purpose: str, nonce: bytes, length: int) -> bytes:
        out = b""
        counter = 0
        while len(out) < length:
            block = purpose.encode() + b"\0" + nonce + counter.to_bytes(4, "big")
            out += hmac.new(self._seal, block, hashlib.sha256).digest()
            counter += 1
        return out[:length]
