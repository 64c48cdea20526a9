"""Secrets in the database, sealed with a key kept outside it.

What a workspace's record must remember to work again after a restart (Jupyter's token, the
workspace's package index key, its password hash) is stored encrypted with AES-256-GCM
(``cryptography``) under ``DATA_DIR/keys/secrets.key``: 32 random bytes, mode 0600, created at
the agent's first start. A copy of ``agent.db`` without that file reveals none of them; whoever
reads both has the agent's secrets, so back the key up with the database and keep both private.

A sealed value is text: ``sealed:v1:`` and base64url of a 12-byte nonce and the ciphertext with
its tag. The associated data names the table, the column and the row's id, so a sealed value
copied into another row or column does not open. A value without the prefix is one an older agent
wrote in clear: it is read as it is and sealed on the next write (:func:`is_sealed` finds them).
"""

from __future__ import annotations

import base64
import os
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["PREFIX", "SealError", "Sealer", "is_sealed", "key_path", "load_or_create_key"]

PREFIX = "sealed:v1:"
KEY_BYTES = 32
_NONCE = 12


class SealError(ValueError):
    """A sealed value that does not open with this key (another key, or a changed value)."""


def key_path(data_dir: Path) -> Path:
    return data_dir / "keys" / "secrets.key"


def load_or_create_key(path: Path) -> bytes:
    """The key in ``path``: 64 hex digits, created 0600 in a 0700 directory when absent.

    Raises :class:`SealError` when the file is readable by others or holds no key.
    """
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        key = secrets.token_bytes(KEY_BYTES)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, (key.hex() + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        return key
    if mode & 0o077:
        raise SealError(f"{path}: the secrets key is readable by others (mode {mode:04o}); chmod 600 {path}")
    try:
        key = bytes.fromhex(path.read_text(encoding="ascii", errors="replace").strip())
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise SealError(f"{path}: not a secrets key (expected {KEY_BYTES * 2} hex digits); "
                        "restore it from the backup taken with agent.db")
    return key


def is_sealed(value: str | None) -> bool:
    return value is None or value.startswith(PREFIX)


class Sealer:
    """Seals and opens text values with one key; ``aad`` names where the value lives."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, value: str | None, aad: str) -> str | None:
        if value is None:
            return None
        nonce = secrets.token_bytes(_NONCE)
        sealed = self._aead.encrypt(nonce, value.encode("utf-8"), aad.encode("utf-8"))
        return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")

    def open(self, value: str | None, aad: str) -> str | None:
        """The clear text of ``value``; a value an older agent stored in clear is returned as it is.

        Raises :class:`SealError` when a sealed value does not open.
        """
        if value is None or not value.startswith(PREFIX):
            return value
        try:
            raw = base64.urlsafe_b64decode(value[len(PREFIX):].encode("ascii"))
            return self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], aad.encode("utf-8")).decode("utf-8")
        except (InvalidTag, ValueError, UnicodeError) as exc:
            raise SealError(f"a sealed value ({aad}) does not open with this agent's secrets key") from exc
