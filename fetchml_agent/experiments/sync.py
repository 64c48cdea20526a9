"""Workspace ↔ experiment sync, and the conflict rule.

Two areas are synced between a workspace and one experiment it is linked to:

- **sources** — the workspace's notebooks, scripts and configuration files (see :mod:`.files`)
  and the experiment's copy of them (``DATA_DIR/experiments/<id>/files/``);
- **results** — what the experiment's runs produced (``run.json`` with the notebook's metadata and
  resource usage, ``metrics.csv``, ``output.ipynb``, ``experiment-config.json``, ``outputs/``)
  and the experiment's summary ``experiment.json``; they arrive in the workspace under
  ``experiments/<id>/``.

``--to-experiment`` carries sources workspace → experiment; ``--from-experiment`` carries results
experiment → workspace; ``--full`` does both and carries sources both ways. When a run finishes,
its results are synced automatically (``auto``).

**The conflict rule — never silently overwrite a file somebody changed.** For every path the
agent remembers the content both sides last agreed on (its SHA-256 after the previous sync). A
file is copied over its counterpart only when the counterpart is absent, identical, or unchanged
since that last agreement. When both sides changed since then (or the agent has no record and
they differ), neither is touched: the experiment's version is written into the workspace beside
the workspace's file as ``NAME.conflict-experiment-<UTC time>.EXT``, and the conflict is listed in
the answer, the sync history and the audit event. While that conflict copy exists the path is
*unresolved* and is skipped. To resolve, merge what you want into your file and delete the
conflict copy: the next sync carries your file (unless the experiment's copy changed again,
which is a new conflict). Deleted files are not propagated.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from ..aio import run_blocking
from ..core import AgentCore
from ..jsonfiles import write_json
from . import remote
from .files import select_sources, sha256_file
from .records import (
    FINISHED,
    Run,
    get_experiment,
    insert_sync,
    pending_conflicts,
    runs_of,
    save_sync_state,
    sync_bases,
)

if TYPE_CHECKING:
    from ..store.workspaces import Workspace

__all__ = ["DIRECTIONS", "auto_sync", "conflict_name", "reconcile", "sync_workspace"]

DIRECTIONS = ("to-experiment", "from-experiment", "full")
_RESULT_FILES = ("run.json", "metrics.csv", "output.ipynb", "experiment-config.json")
_locks: dict[str, asyncio.Lock] = {}


@dataclass
class _Pair:
    key: str  # "src:<path>" or "res:<path>": what the agreed hashes are remembered by
    ws_rel: str  # path in the workspace
    ws_path: Path
    exp_path: Path
    to_experiment: bool  # may flow workspace → experiment
    to_workspace: bool  # may flow experiment → workspace


@dataclass
class _Outcome:
    copied: list[dict[str, str]] = field(default_factory=list)
    conflicts: list[dict[str, str]] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)
    kept: list[dict[str, str]] = field(default_factory=list)
    unchanged: int = 0
    bases: dict[str, str] = field(default_factory=dict)
    resolved: list[str] = field(default_factory=list)
    new_conflicts: dict[str, dict[str, Any]] = field(default_factory=dict)


def conflict_name(rel: str, when: float) -> str:
    """Where the experiment's version of ``rel`` goes in a conflict: beside it, marked."""
    p = PurePosixPath(rel)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when))
    suffix = "".join(p.suffixes[-1:])
    stem = p.name[: -len(suffix)] if suffix else p.name
    return str(p.with_name(f"{stem}.conflict-experiment-{stamp}{suffix}"))


def _hash(path: Path) -> str | None:
    return sha256_file(path) if path.is_file() and not path.is_symlink() else None


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.sync-tmp")
    shutil.copy2(src, tmp)
    os.replace(tmp, dest)


def reconcile(pairs: list[_Pair], ws_root: Path, bases: dict[str, str], pending: dict[str, dict[str, Any]], now: float) -> _Outcome:
    """Apply the conflict rule (module docstring) to each pair, copying files; pure file work."""
    out = _Outcome()
    for pair in pairs:
        base = bases.get(pair.key)
        waiting = pending.get(pair.key)
        if waiting is not None:
            if (ws_root / waiting["copy_path"]).exists():
                out.unresolved.append(pair.ws_rel)
                continue
            base = waiting["theirs_sha256"]  # the user saw their version and resolved
            out.resolved.append(pair.key)
            out.bases[pair.key] = base
        w, e = _hash(pair.ws_path), _hash(pair.exp_path)
        if w == e:
            if w is not None:
                out.bases[pair.key] = w
                out.unchanged += 1
            continue
        ws_changed = w is not None and w != base
        exp_changed = e is not None and e != base
        if e is None or (ws_changed and not exp_changed and base is not None):
            if pair.to_experiment:
                _copy(pair.ws_path, pair.exp_path)
                out.copied.append({"path": pair.ws_rel, "to": "experiment"})
                out.bases[pair.key] = w  # type: ignore[assignment]
            else:
                out.kept.append({"path": pair.ws_rel, "newer": "workspace"})
            continue
        if w is None or (exp_changed and not ws_changed and base is not None):
            if pair.to_workspace:
                _copy(pair.exp_path, pair.ws_path)
                out.copied.append({"path": pair.ws_rel, "to": "workspace"})
                out.bases[pair.key] = e
            else:
                out.kept.append({"path": pair.ws_rel, "newer": "experiment"})
            continue
        copy_rel = conflict_name(pair.ws_rel, now)
        _copy(pair.exp_path, ws_root / copy_rel)
        out.conflicts.append({"path": pair.ws_rel, "experiment_copy": copy_rel})
        out.new_conflicts[pair.key] = {"theirs_sha256": e, "copy_path": copy_rel, "created_at": now}
    return out


def _source_pairs(ws_root: Path, files_root: Path, max_bytes: int, both_ways: bool) -> list[_Pair]:
    ws_sources, _ = select_sources(ws_root, max_bytes)
    exp_sources, _ = select_sources(files_root, max_bytes) if files_root.is_dir() else ({}, [])
    return [
        _Pair(f"src:{rel}", rel, ws_root / rel, files_root / rel, to_experiment=True, to_workspace=both_ways)
        for rel in sorted(set(ws_sources) | (set(exp_sources) if both_ways else set()))
    ]


def _result_pairs(ws_root: Path, exp_root: Path, experiment_id: str, runs: list[Run]) -> list[_Pair]:
    base = f"experiments/{experiment_id}"
    pairs = [_Pair(f"res:{base}/experiment.json", f"{base}/experiment.json", ws_root / base / "experiment.json",
                   exp_root / "experiment.json", to_experiment=False, to_workspace=True)]
    for run in runs:
        run_dir = Path(run.run_dir)
        rels = [name for name in _RESULT_FILES if (run_dir / name).is_file()]
        rels += [f"outputs/{o}" for o in run.outputs]
        for rel in rels:
            src = run_dir / rel if not rel.startswith("outputs/") else run_dir / "work" / rel
            ws_rel = f"{base}/runs/{run.id}/{rel}"
            pairs.append(_Pair(f"res:{ws_rel}", ws_rel, ws_root / ws_rel, src, to_experiment=False, to_workspace=True))
    return pairs


def _experiment_summary(experiment: dict[str, Any], runs: list[Run]) -> dict[str, Any]:
    keys = ("id", "workspace", "user", "kind", "target", "parameters", "status", "message", "queued_at",
            "started_at", "finished_at", "duration_s", "peak_memory_bytes", "exit_code")
    return {
        **experiment,
        "runs": [{k: getattr(r, k) for k in keys} for r in sorted(runs, key=lambda r: r.queued_at)],
    }


async def sync_workspace(
    agent: AgentCore, ws: Workspace, experiment_id: str, direction: str, user: str, *, only_run: Run | None = None
) -> dict[str, Any]:
    """Sync ``ws`` with ``experiment_id`` in ``direction`` (``to-experiment``, ``from-experiment``,
    ``full`` or ``auto`` for one finished run); record the history; return what happened."""
    store = agent.store
    exp_root = agent.data_dir / "experiments" / experiment_id
    on_remote = not agent.runtime.capabilities.host_files
    # A workspace whose files live in its workload is synced through a mirror: its side is
    # copied in, the rule runs there, and what changed is written back.
    ws_root = agent.data_dir / "run" / ws.id / "sync-mirror" if on_remote else Path(ws.path)
    max_bytes = int(agent.config.section("experiments").get("snapshot_max_file_mb") or 10) * 1024 * 1024
    lock = _locks.setdefault(ws.id, asyncio.Lock())
    async with lock:
        experiment = await store.run(get_experiment, experiment_id) or {"id": experiment_id}
        all_runs = await store.run(lambda conn: runs_of(conn, experiment_id=experiment_id))
        if only_run is not None:  # its record is written after this sync: use the one in hand
            all_runs = [only_run if r.id == only_run.id else r for r in all_runs]
            runs = [only_run]
        else:
            runs = [r for r in all_runs if r.status in FINISHED]
        if on_remote:
            await run_blocking(shutil.rmtree, ws_root, True)
            if direction in ("to-experiment", "full"):
                await remote.fetch_sources(agent, ws, ws_root, max_bytes)
            if direction in ("from-experiment", "full", "auto"):
                area = f"experiments/{experiment_id}"
                rels = [area] if only_run is None else [f"{area}/experiment.json", f"{area}/runs/{only_run.id}"]
                await remote.pull_paths(agent, ws, ws_root, rels)
        bases = await store.run(sync_bases, ws.id, experiment_id)
        pending = await store.run(pending_conflicts, ws.id, experiment_id)

        def work() -> _Outcome:
            pairs: list[_Pair] = []
            if direction in ("to-experiment", "full"):
                pairs += _source_pairs(ws_root, exp_root / "files", max_bytes, both_ways=direction == "full")
            if direction in ("from-experiment", "full", "auto"):
                exp_root.mkdir(parents=True, exist_ok=True)
                write_json(exp_root / "experiment.json", _experiment_summary(experiment, all_runs))
                pairs += _result_pairs(ws_root, exp_root, experiment_id, runs)
            return reconcile(pairs, ws_root, bases, pending, time.time())

        outcome = await run_blocking(work)
        if on_remote:  # what the rule wrote on the workspace's side: copies and conflict copies
            written = [c["path"] for c in outcome.copied if c["to"] == "workspace"]
            await remote.push_files(agent, ws, ws_root, written + [c["experiment_copy"] for c in outcome.conflicts])
        await store.run(save_sync_state, ws.id, experiment_id, outcome.bases, outcome.resolved, outcome.new_conflicts)
        record = await store.run(
            insert_sync, ws.id, ws.name, experiment_id, direction, user,
            [f"{c['path']} -> {c['to']}" for c in outcome.copied], outcome.conflicts,
            only_run.id if only_run is not None else None,
        )
    return {
        "workspace": ws.name,
        "experiment": experiment_id,
        "direction": direction,
        "copied": outcome.copied,
        "conflicts": outcome.conflicts,
        "unresolved": outcome.unresolved,
        "kept": outcome.kept,
        "unchanged": outcome.unchanged,
        "history_id": record["id"],
    }


async def auto_sync(agent: AgentCore, ws: Workspace, run: Run) -> dict[str, Any]:
    """The automatic sync when ``run`` finishes: its results into the workspace."""
    return await sync_workspace(agent, ws, run.experiment_id, "auto", "agent", only_run=run)
