"""CPU and memory limits for local workspaces through Linux cgroups.

cgroup v2 is used where the agent may write it (``memory.max``, ``cpu.max``); on hosts still on
the v1 hierarchy the v1 controllers are used (``memory.limit_in_bytes``, ``cpu.cfs_quota_us``).
Where neither can be written, nothing is enforced and :meth:`Cgroups.apply` says why, so
``ml jupyter info`` can tell the user plainly.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Cgroups"]

_PERIOD_US = 100_000
_GROUP = "fetchml"


@dataclass
class _Layout:
    version: int
    memory: Path | None  # directory under which per-workspace memory groups are made
    cpu: Path | None


class Cgroups:
    """Finds a writable cgroup hierarchy once and creates one group per workspace under it."""

    def __init__(self, root: Path = Path("/sys/fs/cgroup"), enabled: bool = True) -> None:
        self.root = root
        self.enabled = enabled
        self.reason = ""
        self.layout = self._detect() if enabled else None
        if not enabled:
            self.reason = "cgroup limits are disabled in the agent's configuration (local.cgroup: false)"

    def _detect(self) -> _Layout | None:
        for v2 in (self.root, self.root / "unified"):
            controllers = v2 / "cgroup.controllers"
            if controllers.is_file():
                have = set(controllers.read_text().split())
                if {"memory", "cpu"} <= have:
                    base = v2 / _GROUP
                    try:
                        base.mkdir(exist_ok=True)
                        (v2 / "cgroup.subtree_control").write_text("+memory +cpu")
                        (base / "cgroup.subtree_control").write_text("+memory +cpu")
                        return _Layout(2, base, base)
                    except OSError as exc:
                        self.reason = f"cgroup v2 at {v2} is not writable by the agent ({exc.strerror})"
                        continue
        mem, cpu = self.root / "memory", self.root / "cpu"
        if (mem / "cgroup.procs").is_file() and (cpu / "cgroup.procs").is_file():
            try:
                (mem / _GROUP).mkdir(exist_ok=True)
                (cpu / _GROUP).mkdir(exist_ok=True)
                return _Layout(1, mem / _GROUP, cpu / _GROUP)
            except OSError as exc:
                self.reason = f"the cgroup v1 hierarchy at {self.root} is not writable by the agent ({exc.strerror})"
                return None
        if not self.reason:
            self.reason = "no cgroup hierarchy with the cpu and memory controllers was found"
        return None

    def apply(self, name: str, pid: int, cpu: float | None, memory_mb: int | None) -> dict[str, Any]:
        """Put ``pid`` (and so its future children) under limits; return the enforcement report."""
        if cpu is None and memory_mb is None:
            return {"enforced": False, "reason": "no cpu or memory limit was asked for"}
        if self.layout is None:
            return {"enforced": False, "reason": self.reason}
        lay = self.layout
        try:
            if lay.version == 2:
                assert lay.memory is not None
                group = lay.memory / name
                group.mkdir(exist_ok=True)
                if memory_mb is not None:
                    (group / "memory.max").write_text(str(memory_mb * 1024 * 1024))
                    _try_write(group / "memory.swap.max", "0")
                if cpu is not None:
                    (group / "cpu.max").write_text(f"{int(cpu * _PERIOD_US)} {_PERIOD_US}")
                (group / "cgroup.procs").write_text(str(pid))
            else:
                assert lay.memory is not None and lay.cpu is not None
                if memory_mb is not None:
                    group = lay.memory / name
                    group.mkdir(exist_ok=True)
                    (group / "memory.limit_in_bytes").write_text(str(memory_mb * 1024 * 1024))
                    (group / "cgroup.procs").write_text(str(pid))
                if cpu is not None:
                    group = lay.cpu / name
                    group.mkdir(exist_ok=True)
                    (group / "cpu.cfs_period_us").write_text(str(_PERIOD_US))
                    (group / "cpu.cfs_quota_us").write_text(str(int(cpu * _PERIOD_US)))
                    (group / "cgroup.procs").write_text(str(pid))
        except OSError as exc:
            return {"enforced": False, "reason": f"writing cgroup limits failed: {exc.strerror}"}
        return {"enforced": True, "mechanism": f"cgroup v{lay.version}", "cgroup": f"{_GROUP}/{name}"}

    def memory_usage(self, name: str) -> int | None:
        """Bytes charged to the workspace's group, if it has one."""
        if self.layout is None or self.layout.memory is None:
            return None
        group = self.layout.memory / name
        for fname in ("memory.current", "memory.usage_in_bytes"):
            try:
                return int((group / fname).read_text())
            except (OSError, ValueError):
                continue
        return None

    def oom_kills(self, name: str) -> int | None:
        """How often the kernel's OOM killer ended a process of the workspace's group (cgroup v2
        ``memory.events`` ``oom_kill``; v1 ``memory.oom_control``); ``None`` when not counted."""
        if self.layout is None or self.layout.memory is None:
            return None
        group = self.layout.memory / name
        for fname in ("memory.events", "memory.oom_control"):
            try:
                text = (group / fname).read_text()
            except OSError:
                continue
            for line in text.splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and value.strip().isdigit():
                    return int(value)
        return None

    def remove(self, name: str) -> None:
        """Remove the workspace's groups once no process is left in them."""
        if self.layout is None:
            return
        for base in {self.layout.memory, self.layout.cpu}:
            if base is not None and (base / name).is_dir():
                try:
                    os.rmdir(base / name)
                except OSError:
                    shutil.rmtree(base / name, ignore_errors=True)


def _try_write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError:
        pass
