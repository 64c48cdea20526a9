"""API keys: what a client sends, what agent.yaml stores, and how the two are compared.

A client sends ``api_key_hash``, the first 16 bytes of SHA-256 of its key (the seed's wire format,
:func:`fetchml_agent.protocol.api_key_hash`), with every request. agent.yaml stores the key's
*verifier*: SHA-256 of those 16 bytes, as 64 hex digits (``api_key_verifier``). The agent hashes
the 16 bytes it receives and looks the result up; whoever reads agent.yaml, an inventory or a log
learns the verifier, from which the 16 wire bytes cannot be computed (that would take a preimage of
SHA-256 over 128 bits, as long as keys are random with at least 128 bits: ``new_api_key`` makes
256). ``docs/security.md`` has the reasoning.

The earlier ``api_key_sha256`` stored the whole SHA-256 of the key, whose first 16 bytes *are* the
wire credential; :func:`verifier_from_legacy_sha256` converts it (``fetchml-agent convert-keys``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Generic, TypeVar

from .protocol.packets import KEY_HASH_LEN, api_key_hash
from .settings import ConfigError

__all__ = [
    "KeyTable",
    "LEGACY_KEY_FIELD",
    "LEGACY_KEY_REFUSAL",
    "VERIFIER_FIELD",
    "api_key_verifier",
    "convert_key_file",
    "convert_legacy_keys",
    "legacy_key_hint",
    "new_api_key",
    "verifier_from_legacy_sha256",
    "verifier_of_wire_hash",
]

VERIFIER_FIELD = "api_key_verifier"
LEGACY_KEY_FIELD = "api_key_sha256"
LEGACY_KEY_REFUSAL = (
    f"{LEGACY_KEY_FIELD} is no longer accepted: its first 16 bytes are the credential a client sends, "
    f"so whoever reads it could log in; it is replaced by {VERIFIER_FIELD}"
)

T = TypeVar("T")


def verifier_of_wire_hash(key_hash16: bytes) -> bytes:
    """The 32-byte verifier of the 16 bytes a client sends."""
    return hashlib.sha256(key_hash16).digest()


def api_key_verifier(api_key: str) -> str:
    """The ``api_key_verifier`` (64 lowercase hex digits) to write into agent.yaml for ``api_key``."""
    return verifier_of_wire_hash(api_key_hash(api_key)).hex()


def verifier_from_legacy_sha256(sha256_hex: str) -> str:
    """Convert a stored ``api_key_sha256`` (SHA-256 of the key, hex) to its ``api_key_verifier``.

    Raises:
        ValueError: ``sha256_hex`` is not 64 hex digits.
    """
    raw = bytes.fromhex(sha256_hex)
    if len(raw) != 32:
        raise ValueError(f"expected 64 hex digits, got {len(sha256_hex)} characters")
    return verifier_of_wire_hash(raw[:KEY_HASH_LEN]).hex()


def new_api_key() -> str:
    """A fresh random API key (256 bits of randomness)."""
    return "fml_" + secrets.token_urlsafe(32)


def legacy_key_hint(config_path: str = "agent.yaml") -> str:
    """What to tell an operator whose configuration still has ``api_key_sha256``."""
    return (
        f"run `fetchml-agent convert-keys --config {config_path}` to replace each api_key_sha256 with "
        "its api_key_verifier in place (the API keys themselves stay the same), or write "
        "`api_key_verifier: <fetchml-agent hash-key KEY>` by hand"
    )


class KeyTable(Generic[T]):
    """Users by verifier: a dictionary lookup, then a constant-time comparison on the hit."""

    def __init__(self, entries: Iterable[tuple[bytes, T]]) -> None:
        self._by_verifier: dict[bytes, tuple[bytes, T]] = {}
        for verifier, value in entries:
            self._by_verifier[verifier] = (verifier, value)

    def lookup(self, key_hash16: bytes) -> T | None:
        """The entry whose verifier matches the 16 wire bytes, or None."""
        if len(key_hash16) != KEY_HASH_LEN:
            return None
        candidate = verifier_of_wire_hash(key_hash16)
        hit = self._by_verifier.get(candidate)
        if hit is None or not hmac.compare_digest(hit[0], candidate):
            return None
        return hit[1]

    def __len__(self) -> int:
        return len(self._by_verifier)


# ``api_key_sha256: <64 hex>`` as a YAML key (block or flow style, the key and the value quoted or not).
_LEGACY_ENTRY = re.compile(
    r"(?P<kq>[\"']?)\b" + LEGACY_KEY_FIELD + r"\b(?P=kq)(?P<sep>\s*:\s*)(?P<vq>[\"']?)(?P<hex>[0-9a-fA-F]{64})(?P=vq)"
)


def convert_legacy_keys(text: str) -> tuple[str, int]:
    """Rewrite every ``api_key_sha256: HEX`` of a YAML text as ``api_key_verifier: VERIFIER``.

    Everything else (comments, order, quoting, indentation) is left as it was. Returns the new
    text and the number of entries rewritten.
    """

    def _sub(m: re.Match[str]) -> str:
        verifier = verifier_from_legacy_sha256(m.group("hex"))
        return f"{m.group('kq')}{VERIFIER_FIELD}{m.group('kq')}{m.group('sep')}{m.group('vq')}{verifier}{m.group('vq')}"

    return _LEGACY_ENTRY.subn(_sub, text)


def _users(document: Any) -> list[dict[str, Any]]:
    users = document.get("users") if isinstance(document, dict) else None
    return [u for u in users if isinstance(u, dict)] if isinstance(users, list) else []


def convert_key_file(path: str | Path) -> tuple[Path, int]:
    """``fetchml-agent convert-keys``: convert agent.yaml in place (same mode and owner).

    The result is read back and compared with the original, user by user, before it replaces the
    file; anything the text rewrite cannot handle (an anchor, a key built by a tag) is refused.

    Raises:
        ConfigError: the file cannot be read, is not YAML, or cannot be converted safely.
    """
    import yaml

    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
        before = yaml.safe_load(text)
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the configuration file: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML", str(exc)) from None
    new_text, count = convert_legacy_keys(text)
    if count == 0 and not any(LEGACY_KEY_FIELD in u for u in _users(before)):
        return p, 0
    after = yaml.safe_load(new_text)
    expected = []
    for user in _users(before):
        user = dict(user)
        legacy = user.pop(LEGACY_KEY_FIELD, None)
        if isinstance(legacy, str) and re.fullmatch(r"[0-9a-fA-F]{64}", legacy):
            user[VERIFIER_FIELD] = verifier_from_legacy_sha256(legacy)
        expected.append(user)
    if _users(after) != expected:
        raise ConfigError(
            f"{p}: cannot convert {LEGACY_KEY_FIELD} automatically (an entry is not a plain `{LEGACY_KEY_FIELD}: "
            "<64 hex digits>`)",
            f"edit it by hand: replace each {LEGACY_KEY_FIELD} with `{VERIFIER_FIELD}: <fetchml-agent hash-key KEY>`",
        )
    st = p.stat()
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(new_text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, st.st_mode & 0o7777)
        if os.geteuid() == 0:
            os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, p)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise ConfigError(f"{p}: cannot write the converted file: {exc.strerror}") from None
    return p, count
