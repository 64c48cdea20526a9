"""Process trees on Linux, from ``/proc``: liveness, resident memory, signalling.

A run's processes are a tree, not a session: Jupyter starts each kernel in a session of its own,
so a run is found by following parent pids from its runner. A pid is only trusted together with
its start time (field 22 of ``/proc/PID/stat``), which tells a reused pid apart. Standard library
only: the runner imports this inside a workspace's Python.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

__all__ = ["alive", "descendants", "environ", "kill_tree", "start_time", "tree_rss", "tree_roots_with_env"]

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot; ``None`` if it is gone or a zombie."""
    rest = _stat(pid)
    if not rest or rest[0] in ("Z", "X"):
        return None
    return int(rest[19])


def alive(pid: int | None, started: int | None) -> bool:
    """True when ``pid`` runs and is the same process that started at ``started``."""
    return bool(pid) and started is not None and start_time(int(pid)) == started  # type: ignore[arg-type]


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            rest = _stat(int(entry))
            if rest:
                kids.setdefault(int(rest[1]), []).append(int(entry))
    return kids


def environ(pid: int) -> dict[str, str]:
    """The environment ``pid`` started with (empty when it is gone or not ours to read)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    out: dict[str, str] = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            out[key.decode(errors="replace")] = value.decode(errors="replace")
    return out


def tree_roots_with_env(var: str, prefix: str) -> list[tuple[int, dict[str, str]]]:
    """Live processes whose ``var`` starts with ``prefix`` and whose parent's does not: the roots
    of the trees that inherited it (a server, not its kernels), with their environments."""
    found: dict[int, tuple[int, dict[str, str]]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        rest = _stat(int(entry))
        if not rest or rest[0] in ("Z", "X"):
            continue
        env = environ(int(entry))
        if env.get(var, "").startswith(prefix):
            found[int(entry)] = (int(rest[1]), env)
    return [(pid, env) for pid, (ppid, env) in sorted(found.items()) if ppid not in found]


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children first), whatever session it moved to."""
    kids = _children()
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def tree_rss(pid: int) -> int:
    """Resident memory in bytes of ``pid`` and all its descendants, now."""
    total = 0
    for p in [pid, *descendants(pid)]:
        rest = _stat(p)
        if rest and rest[0] not in ("Z", "X"):
            total += int(rest[21]) * _PAGE
    return total


def kill_tree(pid: int, sig: int = signal.SIGKILL, *, include_root: bool = True) -> int:
    """Send ``sig`` to every descendant of ``pid`` (found first, so none escapes by being
    re-parented) and then to ``pid``; return how many processes were signalled."""
    targets = descendants(pid) + ([pid] if include_root else [])
    sent = 0
    for p in targets:
        try:
            os.kill(p, sig)
            sent += 1
        except (ProcessLookupError, PermissionError):
            pass
    return sent
