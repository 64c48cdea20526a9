"""The host's GPUs and TCP ports, and who holds which: the one place that hands them out.

A runtime that runs workloads on this host owns one :class:`GpuAllocator` (its inventory is set
when the runtime opens, from ``nvidia-smi`` or its configuration) and, when workspaces listen on
host ports the agent picks, one :class:`PortAllocator` (``Runtime.gpus`` / ``Runtime.ports``; a
runtime whose backend places GPUs or ports itself, Nomad, has neither). Every user of a GPU or a
port claims it here under a *holder* name and releases it when done:

- a workspace (``workspace_holder(id)``) from its start until it stops or is found dead;
- an experiment run (``run_holder(id)``) from its launch until it is recorded; a run may use the
  GPUs its own workspace holds (``share_with``), never another holder's;
- after an agent restart, what is still running is held again (:meth:`GpuAllocator.hold`).

Claims are idempotent per holder: a holder that already holds enough gets the same ones again.
Standard library only; nothing here blocks or awaits (the agent's event loop is single-threaded).
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

from .errors import InsufficientResources

__all__ = ["GpuAllocator", "PortAllocator", "port_free", "run_holder", "workspace_holder"]


def workspace_holder(workspace_id: str) -> str:
    """The holder name of a workspace's GPUs and port."""
    return f"workspace:{workspace_id}"


def run_holder(run_id: str) -> str:
    """The holder name of an experiment run's GPUs."""
    return f"run:{run_id}"


class GpuAllocator:
    """The host GPUs (by index) one runtime hands out; each GPU to one holder at a time."""

    def __init__(self, indexes: Iterable[int] = ()) -> None:
        self._indexes: tuple[int, ...] = tuple(sorted(set(indexes)))
        self._held: dict[str, tuple[int, ...]] = {}

    def set_inventory(self, indexes: Iterable[int]) -> None:
        """The GPUs this host has (the runtime detected or was told them). Claims stay."""
        self._indexes = tuple(sorted(set(indexes)))

    @property
    def indexes(self) -> tuple[int, ...]:
        return self._indexes

    @property
    def capacity(self) -> int:
        return len(self._indexes)

    def held(self, holder: str) -> tuple[int, ...]:
        return self._held.get(holder, ())

    def free(self, *, holder: str | None = None, share_with: str | None = None) -> list[int]:
        """GPUs nobody holds, counting those of ``holder`` itself and of ``share_with`` as free."""
        used: set[int] = set()
        for who, ids in self._held.items():
            if who not in (holder, share_with):
                used.update(ids)
        return [i for i in self._indexes if i not in used]

    def try_claim(self, holder: str, count: int, *, share_with: str | None = None) -> tuple[int, ...] | None:
        """``count`` GPUs for ``holder`` (the lowest free ones), or ``None`` when too few are free."""
        if count <= 0:
            self._held.pop(holder, None)
            return ()
        mine = self.held(holder)
        if len(mine) == count:
            return mine
        free = self.free(holder=holder, share_with=share_with)
        if len(free) < count:
            return None
        ids = tuple(free[:count])
        self._held[holder] = ids
        return ids

    def claim(self, holder: str, count: int, *, share_with: str | None = None, hint: str = "") -> tuple[int, ...]:
        """Like :meth:`try_claim`; raises :class:`InsufficientResources` when too few are free."""
        ids = self.try_claim(holder, count, share_with=share_with)
        if ids is None:
            free = self.free(holder=holder, share_with=share_with)
            raise InsufficientResources(
                f"asked for {count} GPU{'s' if count != 1 else ''}, but only {len(free)} of {self.capacity} "
                f"{'is' if len(free) == 1 else 'are'} free on this host",
                hint or "stop a workspace that holds a GPU, or ask for fewer (--gpu)",
            )
        return ids

    def hold(self, holder: str, ids: Iterable[int], *, what: str = "the workload") -> tuple[int, ...]:
        """Record GPUs ``holder`` already has (assigned elsewhere, or found running after a
        restart). Raises :class:`InsufficientResources` for an index this host does not have."""
        got = tuple(int(i) for i in ids)
        missing = [i for i in got if i not in self._indexes]
        if missing:
            raise InsufficientResources(
                f"{what} was assigned GPU(s) {list(got)} but this host has {list(self._indexes) or 'none'}"
            )
        if got:
            self._held[holder] = got
        else:
            self._held.pop(holder, None)
        return got

    def release(self, holder: str) -> None:
        self._held.pop(holder, None)


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a TCP server could bind ``host:port`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class PortAllocator:
    """Host TCP ports for workspaces' servers, from ``base`` up: each held by one holder, and
    handed out only when nobody holds it and it can be bound now."""

    def __init__(self, base: int, host: str = "127.0.0.1") -> None:
        self.base = base
        self.host = host
        self._held: dict[str, int] = {}

    def held(self, holder: str) -> int | None:
        return self._held.get(holder)

    def _taken(self, holder: str) -> set[int]:
        return {p for who, p in self._held.items() if who != holder}

    def claim(self, holder: str, preferred: int | None = None, *, avoid: Iterable[int] = ()) -> int:
        """A port for ``holder``: the one it holds, else ``preferred`` when free, else the lowest
        free one from :attr:`base`, never one of ``avoid`` (ports a start just found taken).
        Raises :class:`InsufficientResources` when none is left."""
        avoid = set(avoid)
        mine = self._held.get(holder)
        if mine is not None and mine not in avoid:
            return mine
        taken = self._taken(holder) | avoid
        if preferred is not None and preferred not in taken and port_free(preferred, self.host):
            self._held[holder] = preferred
            return preferred
        port = self.base
        while port < 65535:
            if port not in taken and port_free(port, self.host):
                self._held[holder] = port
                return port
            port += 1
        raise InsufficientResources("no free TCP port for JupyterLab", f"searched from {self.base}")

    def hold(self, holder: str, port: int) -> None:
        """Record a port ``holder`` already listens on (found running after a restart)."""
        self._held[holder] = int(port)

    def release(self, holder: str) -> None:
        self._held.pop(holder, None)
