"""Paths that come from a request: their text, and where a workspace may live.

Every path a client names is checked as text first (:func:`check_path_text`): no NUL byte, no
component longer than the file system allows, no path longer than ``PATH_MAX``; each is an
:class:`~fetchml_agent.errors.InvalidArgument` (0x06) with the reason, never an ``OSError``
from deep inside. :func:`check_workspace_dir` is the rule of ``--workspace`` (``ml jupyter
start``, ``create --workspace``) after symbolic links are resolved: a non-admin's directory lies
inside one of ``local.workspace_roots``, is never the agent's managed root nor inside it, and
never inside or around another workspace's directory.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ..errors import InvalidArgument, PermissionDenied

__all__ = ["NAME_MAX", "PATH_MAX", "check_path_text", "check_workspace_dir", "overlaps"]

NAME_MAX = 255  # bytes of one path component (ext4, xfs, btrfs, tmpfs)
PATH_MAX = 4095  # bytes of a whole path, without its terminating NUL


def check_path_text(text: str, what: str) -> str:
    """``text`` when it can name a file; else :class:`InvalidArgument` naming ``what`` and why."""
    if "\x00" in text:
        raise InvalidArgument(f"{what}: the path contains a NUL byte", "a path cannot contain NUL (\\0)")
    raw = os.fsencode(text) if text.isascii() else text.encode("utf-8", "surrogateescape")
    if len(raw) > PATH_MAX:
        raise InvalidArgument(f"{what}: the path is {len(raw)} bytes long", f"at most {PATH_MAX} bytes")
    for part in raw.split(b"/"):
        if len(part) > NAME_MAX:
            shown = part[:40].decode("utf-8", "replace")
            raise InvalidArgument(
                f"{what}: the path component {shown!r}... is {len(part)} bytes long",
                f"a file or directory name has at most {NAME_MAX} bytes",
            )
    return text


def overlaps(a: Path, b: Path) -> bool:
    """Whether one of two resolved directories is the other or inside it."""
    return a == b or a in b.parents or b in a.parents


def check_workspace_dir(path: Path, *, admin: bool, roots: Iterable[Path], managed_root: Path,
                        others: Iterable[Path]) -> None:
    """Raise unless ``path`` (resolved) may hold a new workspace of a user.

    Admins may name any directory. Anyone else: a directory inside one of ``roots`` (resolved),
    not ``managed_root`` nor anything inside it (the agent's own workspaces live there), and not
    inside or containing the directory of another workspace (``others``: their resolved directories).
    Raises :class:`PermissionDenied` naming the rule and what would be allowed.
    """
    if admin:
        return
    managed_root = managed_root.resolve()
    if path == managed_root or managed_root in path.parents:
        raise PermissionDenied(
            f"workspace directory {path} is inside the agent's managed workspaces ({managed_root})",
            "leave out --workspace to get a directory of your own, or name one inside local.workspace_roots",
        )
    if path in managed_root.parents:
        raise PermissionDenied(
            f"workspace directory {path} contains the agent's managed workspaces ({managed_root})",
            "name a directory of your own inside local.workspace_roots",
        )
    for other in others:
        if overlaps(path, other):
            # Without the other's name: it may be a workspace this user may not see.
            raise PermissionDenied(
                f"workspace directory {path} overlaps the directory of another workspace",
                "name a directory that is neither inside nor around another workspace's directory",
            )
    allowed = [r.resolve() for r in roots]
    if any(path == r or r in path.parents for r in allowed):
        return
    raise PermissionDenied(
        f"workspace directory {path} is outside the directories you may use",
        ("allowed: " + ", ".join(map(str, allowed)) + " and what is inside") if allowed
        else "leave out --workspace (an admin can add local.workspace_roots to agent.yaml)",
    )
