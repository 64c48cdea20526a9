"""A run's packages: the workspace's lock, recorded with the snapshot, rebuilt by the run.

A run on a runtime that starts it from the workspace's *image* (docker, Nomad) would not see what
``ml jupyter install`` put into the workspace. So when a run is queued, :func:`write_lock` records
those packages (``name==version`` and the SHA-256 of the file pip installed: the installs the
agent recorded from pip's own report, dependencies included) in the snapshot's
``.fetchml/environment.lock``, with the environment step (:mod:`.env_step`) beside it. The run's launcher (``RUN_LAUNCHER``) runs the step before the
notebook: pip installs the lock through the run's package index (the agent's, so the policy
applies), into a directory keyed by the lock's SHA-256 in the environment cache, where the next
run with the same lock finds it complete and installs nothing. The step's report
(``environment.json``: lock, packages, cached, seconds, error) comes back with the results;
:func:`environment_view` is what ``ml status`` shows of it.

The local runtime runs in the workspace's own environment and needs none of this.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..jsonfiles import read_json
from ..runtimes.base import RUN_ENVIRONMENT_REPORT, RUN_LOCK, RUN_LOCK_DIR

__all__ = ["LOCK_DIR", "REPORT", "environment_view", "lock_text", "write_lock"]

# Where a run finds them is part of the runtime contract (a run backend fetches the report).
LOCK_DIR = RUN_LOCK_DIR
LOCK = RUN_LOCK
STEP = "environment_step.py"
REPORT = RUN_ENVIRONMENT_REPORT
_STEP_SOURCE = Path(__file__).with_name("env_step.py")


Pin = tuple[str, str] | tuple[str, str, str]  # (name, version[, sha256 of the file pip installed])


def lock_text(pins: Iterable[Pin]) -> str:
    """The lock: one ``name==version`` line per distribution, sorted, under a comment line; each
    with ``--hash=sha256:...`` when every distribution has its file's hash (pip then checks every
    file it installs against it, and needs one for each)."""
    unique = {(p[0], p[1]): (p[2] if len(p) > 2 else "") for p in pins if p[0] and p[1]}
    hashed = bool(unique) and all(unique.values())
    lines = sorted((f"{n}=={v}" + (f" --hash=sha256:{h}" if hashed else "") for (n, v), h in unique.items()),
                   key=str.lower)
    return "# the workspace's packages when the run was queued (ml jupyter install)\n" + "".join(
        line + "\n" for line in lines)


def write_lock(work: Path, pins: Iterable[Pin]) -> dict[str, Any] | None:
    """Record ``pins`` (``(name, version[, sha256])``) in ``work/.fetchml`` with the environment
    step; return ``{"lock": sha256, "packages": n}``, or ``None`` (nothing written) when there are none."""
    text = lock_text(pins)
    count = text.count("\n") - 1
    if count == 0:
        return None
    target = work / LOCK_DIR
    target.mkdir(parents=True, exist_ok=True)
    (target / LOCK).write_text(text, encoding="utf-8")
    shutil.copyfile(_STEP_SOURCE, target / STEP)
    return {"lock": hashlib.sha256(text.encode()).hexdigest(), "packages": count}


def environment_view(run_dir: Path) -> dict[str, Any] | None:
    """The run's environment step as clients see it: the step's report once it came back, else
    the lock the run will install (``status: "pending"``); ``None`` for a run without a lock."""
    report = read_json(run_dir / REPORT)
    if isinstance(report, dict):
        return report
    lock = run_dir / "work" / LOCK_DIR / LOCK
    try:
        text = lock.read_bytes()
    except OSError:
        return None
    packages = sum(1 for line in text.decode("utf-8", "replace").splitlines() if line and not line.startswith("#"))
    return {"lock": hashlib.sha256(text).hexdigest(), "packages": packages, "status": "pending"}
