"""The agent's ``data_dir``: checked, and created private, before anything is written there.

``fetchml-agent serve`` and ``fetchml-agent check-config`` both call :func:`prepare_data_dir`; an
unusable directory (a file, a read-only file system, no permission, no space) stops the agent with
a :class:`~fetchml_agent.config.ConfigError` that names ``data_dir`` and what to change, never a
traceback. The directory holds agent.db (with every workspace's records) and is made ``0700``;
the store makes the database files ``0600`` (:mod:`fetchml_agent.store`).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from .settings import ConfigError
from .store import sealed

__all__ = ["DATA_DIR_MODE", "MIN_FREE_BYTES", "prepare_data_dir"]

DATA_DIR_MODE = 0o700
# Below this the agent could not even record a workspace; refusing early beats a failed write later.
MIN_FREE_BYTES = 8 * 1024 * 1024
_PROBE_BYTES = 4096


def _who() -> str:
    try:
        import pwd

        name = pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        name = "?"
    return f"{name} (uid {os.geteuid()})"


def _human(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} bytes"  # pragma: no cover


def _error(path: Path, exc: OSError) -> ConfigError:
    code = exc.errno
    if code == errno.EROFS:
        return ConfigError(
            f"data_dir {path} is on a read-only file system",
            "point data_dir in agent.yaml at a writable directory, or remount that file system read-write",
        )
    if code in (errno.EACCES, errno.EPERM):
        return ConfigError(
            f"data_dir {path} is not writable by the agent's user {_who()}",
            "give the directory to that user (chown/chmod), or point data_dir in agent.yaml elsewhere",
        )
    if code in (errno.ENOSPC, errno.EDQUOT):
        return ConfigError(
            f"data_dir {path}: no space left on its file system",
            "free some space there, or point data_dir in agent.yaml at another file system",
        )
    if code in (errno.ENOTDIR, errno.EEXIST):
        return ConfigError(
            f"data_dir {path}: a part of the path is a file, not a directory",
            "point data_dir in agent.yaml at a directory",
        )
    return ConfigError(f"data_dir {path} cannot be used: {exc.strerror or exc}", "check data_dir in agent.yaml")


def _free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _probe_write(path: Path) -> None:
    """Write, sync and remove a small file: catches read-only mounts, permissions and a full disk."""
    probe = path / f".fetchml-write-test-{os.getpid()}"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, b"\0" * _PROBE_BYTES)
        os.fsync(fd)
    finally:
        os.close(fd)
        try:
            os.unlink(probe)
        except OSError:
            pass


def prepare_data_dir(path: Path, *, create: bool = True) -> None:
    """Make sure ``path`` is a private directory the agent can write, with room to spare.

    With ``create`` (``serve``) a missing directory is made with mode 0700 and an existing one
    owned by the agent's user is tightened to 0700; without it (``check-config``) nothing is
    created or changed, and a missing directory is checked through its nearest existing parent.

    Raises:
        ConfigError: the message names ``data_dir`` and says what to change.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"data_dir {path} is a file, not a directory",
            "point data_dir in agent.yaml at a directory, or move the file away",
        )
    target = path
    try:
        if not path.exists():
            if create:
                path.mkdir(parents=True, mode=DATA_DIR_MODE)
            else:
                target = next(p for p in path.parents if p.exists())
                if not target.is_dir():
                    raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(target))
                if not os.access(target, os.W_OK | os.X_OK):
                    # access() reports EROFS for a read-only mount, EACCES otherwise.
                    probe_errno = errno.EROFS if _read_only(target) else errno.EACCES
                    raise OSError(probe_errno, os.strerror(probe_errno), str(target))
        elif create and path.stat().st_uid == os.geteuid() and path.stat().st_mode & 0o077:
            os.chmod(path, DATA_DIR_MODE)
        if target == path:
            _probe_write(path)
        free = _free_bytes(target)
    except OSError as exc:
        raise _error(path, exc) from None
    if free < MIN_FREE_BYTES:
        raise ConfigError(
            f"data_dir {path}: only {_human(free)} free on its file system (the agent needs at least "
            f"{_human(MIN_FREE_BYTES)})",
            "free some space there, or point data_dir in agent.yaml at another file system",
        )
    _check_secrets_key(path)


def _check_secrets_key(data_dir: Path) -> None:
    """An existing secrets key (``keys/secrets.key``, :mod:`fetchml_agent.store.sealed`) must be
    private and hold a key: without it the workspaces' sealed secrets do not open."""
    path = sealed.key_path(data_dir)
    if not path.exists():
        return
    try:
        sealed.load_or_create_key(path)
    except (sealed.SealError, OSError) as exc:
        raise ConfigError(f"data_dir {data_dir}: {exc}",
                          "the secrets key opens the workspaces' tokens and keys in agent.db") from None


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False
