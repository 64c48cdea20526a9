"""Process trees on Linux, from ``/proc``: liveness, resident memory, signalling.

A run's processes are a tree, not a session: Jupyter starts each kernel in a session of its own,
so a run is found by following parent pids from its runner. A pid is only trusted together with
its start time (field 22 of ``/proc/PID/stat``), which tells a reused pid apart. Standard library
only: the runner imports this inside a workspace's Python.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = ["alive", "ancestors", "descendants", "environ", "kill_tree", "one_table", "start_time", "tree_roots_with_env",
           "tree_rss"]

# Issue 17 (the usage sampler): one read of the process table for many trees; see one_table().
class _Table:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.kids: dict[int, list[int]] | None = None


_TABLE: contextvars.ContextVar[_Table | None] = contextvars.ContextVar("fetchml_procs_table", default=None)

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


@contextlib.contextmanager
def one_table() -> Iterator[None]:
    """Inside it (and in the tasks and threads started inside it, which copy the context),
    :func:`descendants` reads the process table once instead of at every call: for readers of
    many trees at one moment (the usage sampler's sweep over every workspace), whose cost would
    otherwise be trees x processes. Never around signalling: a snapshot misses newer children."""
    token = _TABLE.set(_Table())
    try:
        yield
    finally:
        _TABLE.reset(token)


def _table() -> dict[int, list[int]]:
    shared = _TABLE.get()
    if shared is None:
        return _children()
    with shared.lock:
        if shared.kids is None:
            shared.kids = _children()
        return shared.kids


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
    kids = _table()
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def ancestors(pid: int) -> list[int]:
    """``pid``'s parent, its parent's parent, ... up to (not including) pid 0; empty if it is gone."""
    out: list[int] = []
    seen = {pid}
    rest = _stat(pid)
    while rest:
        parent = int(rest[1])
        if parent <= 0 or parent in seen:
            break
        out.append(parent)
        seen.add(parent)
        rest = _stat(parent)
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
