"""The audit key: 32 random bytes in ``DATA_DIR/keys/audit.key`` (mode 0600), outside the database.

Created at the agent's first start. Whoever can read it can re-sign the audit chain, so it lives
apart from ``agent.db``: a copy of the database alone cannot be forged undetected. Back it up
with the database; a database whose chain was signed with another key cannot be verified.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from ..errors import InvalidArgument

__all__ = ["KEY_BYTES", "key_path", "load_key", "load_or_create_key"]

KEY_BYTES = 32


def key_path(data_dir: Path) -> Path:
    return data_dir / "keys" / "audit.key"


def load_key(path: Path) -> bytes | None:
    """The key in ``path``, or ``None`` when the file does not exist.

    Raises :class:`InvalidArgument` when the file is readable by others than its owner, or does
    not hold 64 hex digits.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise InvalidArgument(f"{path}: the audit key is readable by others (mode {stat.S_IMODE(st.st_mode):04o})",
                              f"chmod 600 {path}; the key signs the audit chain")
    text = path.read_text(encoding="ascii", errors="replace").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise InvalidArgument(f"{path}: not an audit key (expected {KEY_BYTES * 2} hex digits)",
                              "restore it from the backup taken with agent.db")
    return key


def load_or_create_key(path: Path) -> tuple[bytes, bool]:
    """The key in ``path``, created (0600, in a 0700 directory) when absent; and whether it was new."""
    key = load_key(path)
    if key is not None:
        return key, False
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    key = secrets.token_bytes(KEY_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (key.hex() + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return key, True
