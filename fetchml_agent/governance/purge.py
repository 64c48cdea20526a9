"""Retention of what is not the audit log: runs, logs and metrics (agent.yaml ``retention:``).

- ``runs``: finished runs (``finished_at`` before the cutoff): their records, their metrics and
  their directories under the data directory (outputs, the executed notebook, the log).
- ``logs``: workspace server logs (``DATA_DIR/logs/*.log``) last written before the cutoff and not
  of a running workspace, and the ``run.log`` of runs finished before it.
- ``metrics``: run metrics logged before the cutoff, and usage samples (every tier) and usage
  events older than it (docs/observe.md).

:func:`plan` counts (the dry run); :func:`purge` removes. The database part runs on the store's
thread; files are removed off it. A directory outside the data directory is never removed.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

from ..aio import run_blocking
from ..core import AgentCore
from ..store import transaction
from ..store.usage import count_before, purge_before

__all__ = ["plan", "purge"]


def _inside(path: str, root: Path) -> bool:
    try:
        return Path(path).resolve().is_relative_to(root.resolve())
    except (OSError, ValueError):
        return False


def _old_runs(conn: sqlite3.Connection, cutoff: float) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in conn.execute(
        "SELECT id, run_dir FROM runs WHERE finished_at IS NOT NULL AND finished_at < ?", (cutoff,))]


def _server_logs(agent: AgentCore, cutoff: float) -> list[Path]:
    live = {str((ws.runtime_state or {}).get("log")) for ws in agent.workspaces.values() if ws.runtime_state}
    live |= {str(agent.data_dir / "logs" / f"{ws.id}.log") for ws in agent.workspaces.values()
             if ws.status in ("starting", "running", "stopping")}
    out = []
    for path in (agent.data_dir / "logs").glob("*.log"):
        try:
            if str(path) not in live and path.stat().st_mtime < cutoff:
                out.append(path)
        except OSError:
            continue
    return out


def _run_logs(runs: list[tuple[str, str]], root: Path) -> list[Path]:
    return [p for _, d in runs if d and _inside(d, root) and (p := Path(d) / "run.log").is_file()]


def _remove_files(files: list[Path]) -> None:
    for f in files:
        f.unlink(missing_ok=True)


def _remove_dirs(dirs: list[str]) -> None:
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


async def plan(agent: AgentCore, cutoffs: dict[str, float | None]) -> dict[str, Any]:
    """What :func:`purge` would remove now, per category with a cutoff."""
    out: dict[str, Any] = {}
    root = agent.data_dir
    if (cut := cutoffs.get("runs")) is not None:
        runs = await agent.store.run(_old_runs, cut)
        out["runs"] = {"would_remove": len(runs), "unit": "runs", "enforced": True}
    if (cut := cutoffs.get("metrics")) is not None:
        def count(conn: sqlite3.Connection, cut: float = cut) -> dict[str, int]:
            n = conn.execute("SELECT count(*) FROM run_metrics WHERE ts < ?", (cut,)).fetchone()[0]
            return {"run_metrics": n, **count_before(conn, cut)}
        counts = await agent.store.run(count)
        out["metrics"] = {"would_remove": sum(counts.values()), "unit": "rows", "enforced": True, **counts}
    if (cut := cutoffs.get("logs")) is not None:
        runs = await agent.store.run(_old_runs, cut)
        files = await run_blocking(lambda: _server_logs(agent, cut) + _run_logs(runs, root))  # type: ignore[arg-type]
        out["logs"] = {"would_remove": len(files), "unit": "files", "enforced": True}
    return out


async def purge(agent: AgentCore, cutoffs: dict[str, float | None]) -> dict[str, dict[str, Any]]:
    """Remove what is older than each category's cutoff; returns what was removed per category."""
    done: dict[str, dict[str, Any]] = {}
    root = agent.data_dir
    if (cut := cutoffs.get("logs")) is not None:
        runs = await agent.store.run(_old_runs, cut)
        files = await run_blocking(lambda: _server_logs(agent, cut) + _run_logs(runs, root))  # type: ignore[arg-type]
        await run_blocking(_remove_files, files)
        done["logs"] = {"removed": len(files), "cutoff": cut}
    if (cut := cutoffs.get("metrics")) is not None:
        def remove(conn: sqlite3.Connection, cut: float = cut) -> dict[str, int]:
            with transaction(conn):
                n = conn.execute("DELETE FROM run_metrics WHERE ts < ?", (cut,)).rowcount
            return {"run_metrics": n, **purge_before(conn, cut)}
        counts = await agent.store.run(remove)
        done["metrics"] = {"removed": sum(counts.values()), "cutoff": cut, **counts}
    if (cut := cutoffs.get("runs")) is not None:
        def remove_runs(conn: sqlite3.Connection, cut: float = cut) -> list[tuple[str, str]]:
            runs = _old_runs(conn, cut)
            with transaction(conn):
                conn.executemany("DELETE FROM runs WHERE id = ?", [(rid,) for rid, _ in runs])
            return runs
        runs = await agent.store.run(remove_runs)
        dirs = [d for _, d in runs if d and _inside(d, root)]
        await run_blocking(_remove_dirs, dirs)
        done["runs"] = {"removed": len(runs), "directories": len(dirs), "cutoff": cut}
    return done
