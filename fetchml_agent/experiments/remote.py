"""Runs on a runtime that executes them itself (Nomad batch jobs), and workspaces whose files the
agent reaches only through the workload.

Such a runtime has ``submit_run``/``run_status``/``fetch_run_outputs``/``cancel_run``/``purge_run``
(see :class:`fetchml_agent.runtimes.nomad.NomadRuntime`) and a ``workspace_root``: the workspace's
directory inside its container. The agent then:

1. takes the run's snapshot from the *running* workspace (:func:`fetch_sources`): one command in
   the workspace (``find`` with the sources rule of :mod:`.files`, piped to ``tar``) whose output
   streams into the run's ``work/`` directory on the agent, so the notebook that runs is the one
   the user sees in JupyterLab, frozen when queued (sync works on such workspaces the same way:
   :func:`pull_paths` brings the workspace's side into a mirror, the conflict rule runs there,
   and :func:`push_files` writes what it changed back through ``runtime.exec``'s stdin);
2. writes it where the runtime's workers read it (:func:`publish_snapshot`: the snapshot volume),
   submits the run, and remembers the runtime's state in ``runtime-job.json`` in the run's directory
   (what a restarted agent adopts);
3. follows the run with blocking queries, fetches its results into the run's directory (the
   allocation's ``alloc/data`` is laid out like it: ``output.ipynb``, ``metrics.jsonl``,
   ``work/outputs/``) and turns the runtime's status into the run's result
   (:func:`result_from_status`), which the executor records like a local run's.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..aio import run_blocking
from ..errors import BackendError, InvalidState
from ..runtimes.base import Resources, RunBackend, RunSpec, RunStatus, capability, find_capability
from .files import select_sources, sha256_file, source_find_expression

if TYPE_CHECKING:
    from ..agent import Agent
    from ..store.workspaces import Workspace
    from .records import Run

__all__ = [
    "STATE_FILE",
    "check_ready",
    "fetch_sources",
    "is_remote",
    "notebook_error",
    "publish_snapshot",
    "pull_paths",
    "push_files",
    "result_from_status",
    "run_spec",
    "snapshot_root",
    "unpublish_snapshot",
    "workspace_dir",
]

STATE_FILE = "runtime-job.json"
EXIT_TIMEOUT = 124
EXIT_CANCELLED = 143
_SNAPSHOT_TIMEOUT_S = 300.0
_MAX_SNAPSHOT_BYTES = 2 << 30
_MAX_PUSH_BYTES = 512 << 20
# Streams what ``find ARGS`` selects as a tar archive on stdout; stderr is dropped so that nothing
# but the archive reaches the agent (the exit status still tells whether tar succeeded).
_TAR_SCRIPT = 'exec 2>/dev/null; cd "$1" || exit 3; shift; find "$@" | tar -cf - --null --no-recursion -T -'


def is_remote(agent: Agent) -> bool:
    """Whether this agent's runtime executes runs itself (Nomad batch jobs, docker containers)."""
    return find_capability(agent.runtime, RunBackend) is not None


def workspace_dir(agent: Agent, ws: Workspace) -> str:
    """The workspace's directory inside its workload (``Runtime.files_root``)."""
    from ..service.workspaces import spec_for

    return agent.runtime.files_root(spec_for(agent, ws), ws.runtime_state)


def _require_running(ws: Workspace, why: str) -> None:
    if ws.status != "running" or not ws.runtime_state:
        raise InvalidState(
            f"workspace {ws.name} is not running: {why}",
            f"start it first: ml jupyter start {ws.name}",
        )


async def _pull(agent: Agent, ws: Workspace, dest: Path, find_args: list[str]) -> None:
    """Copy what ``find FIND_ARGS`` prints (NUL-separated, relative to the workspace's directory)
    from the running workspace into ``dest``, as one tar stream through ``runtime.exec``."""
    from ..service.workspaces import spec_for

    dest.mkdir(parents=True, exist_ok=True)
    archive = dest.parent / f".{dest.name}.pull.tar"
    size = 0
    with open(archive, "wb") as fh:

        async def sink(chunk: bytes) -> None:
            nonlocal size
            size += len(chunk)
            if size > _MAX_SNAPSHOT_BYTES:
                raise BackendError(f"the workspace's files to copy exceed {_MAX_SNAPSHOT_BYTES >> 30} GiB")
            fh.write(chunk)

        argv = ["sh", "-c", _TAR_SCRIPT, "fetchml-pull", workspace_dir(agent, ws), *find_args]
        res = await agent.runtime.exec(spec_for(agent, ws), ws.runtime_state, argv, output=sink,
                                       timeout=_SNAPSHOT_TIMEOUT_S)
    try:
        if res.exit_code != 0:
            raise BackendError(
                f"could not read the files of workspace {ws.name} (exit code {res.exit_code})",
                f"the workspace's directory is {workspace_dir(agent, ws)}; the image needs sh, find and tar",
            )
        await run_blocking(_unpack, archive, dest)
    finally:
        archive.unlink(missing_ok=True)


def _unpack(archive: Path, dest: Path) -> None:
    head = archive.read_bytes()[:20480] if archive.stat().st_size <= 20480 else b"x"
    if not head.strip(b"\0"):
        return  # nothing matched: tar wrote only its end-of-archive blocks
    try:
        with tarfile.open(archive, mode="r:") as tar:
            tar.extractall(dest, filter="data")  # no links out, no absolute paths, no devices
    except (tarfile.TarError, OSError) as exc:
        raise BackendError(f"the workspace's files arrived damaged: {exc}") from None


async def fetch_sources(agent: Agent, ws: Workspace, work: Path, max_bytes: int) -> dict[str, Any]:
    """Copy the running workspace's sources (the rule of :mod:`.files`) into ``work``; return the
    snapshot manifest ``{"copied": {path: sha256}, "linked": [], "too_large": []}``.

    Raises :class:`InvalidState` when the workspace is not running (its files are only
    reachable through its workload) and :class:`BackendError` when the copy fails.
    """
    _require_running(ws, "runs are snapshotted from the running workspace")
    await _pull(agent, ws, work, [".", *source_find_expression(max_bytes)])
    return await run_blocking(_keep_sources, work, max_bytes)


def _keep_sources(work: Path, max_bytes: int) -> dict[str, Any]:
    sources, _ = select_sources(work, max_bytes)
    for dirpath, _dirs, files in os.walk(work):
        for name in files:  # the rule is applied again here: nothing else stays
            path = Path(dirpath, name)
            if path.relative_to(work).as_posix() not in sources:
                path.unlink()
    return {"copied": {rel: sha256_file(path) for rel, path in sources.items()}, "linked": [], "too_large": []}


async def pull_paths(agent: Agent, ws: Workspace, dest: Path, rels: list[str]) -> None:
    """Copy the files at or under the workspace-relative paths ``rels`` (those that exist) into
    ``dest``: the workspace's side of a results sync."""
    _require_running(ws, "its files are synced through its workload")
    await _pull(agent, ws, dest, [*(f"./{r}" for r in rels), "-type", "f", "-print0"])


async def push_files(agent: Agent, ws: Workspace, src: Path, rels: list[str]) -> None:
    """Write the files ``src/REL`` into the running workspace at the same relative paths (one tar
    stream through ``runtime.exec``'s stdin), replacing what is there."""
    from ..service.workspaces import spec_for

    if not rels:
        return
    _require_running(ws, "its files are synced through its workload")
    data = await run_blocking(_pack, src, rels)
    argv = ["sh", "-c", 'mkdir -p "$1" && cd "$1" && tar -xmf - --no-same-owner', "fetchml-push", workspace_dir(agent, ws)]
    res = await agent.runtime.exec(spec_for(agent, ws), ws.runtime_state, argv, stdin=data, timeout=_SNAPSHOT_TIMEOUT_S)
    if res.exit_code != 0:
        raise BackendError(
            f"could not write into workspace {ws.name} (exit code {res.exit_code})",
            res.output.decode("utf-8", "replace")[-300:],
        )


def _pack(src: Path, rels: list[str]) -> bytes:
    if sum((src / rel).stat().st_size for rel in rels) > _MAX_PUSH_BYTES:
        raise BackendError(f"the results to write into the workspace exceed {_MAX_PUSH_BYTES >> 20} MiB",
                           "they stay in the experiment's directory on the agent")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for rel in sorted(rels):
            tar.add(src / rel, arcname=rel, recursive=False)
    return buf.getvalue()


def publish_snapshot(snapshot_dir: Path | None, run_dir: Path, run_id: str) -> tuple[Path, bool]:
    """Where the run's workers find ``run_dir/work``: its path relative to ``snapshot_dir``, and
    whether a copy was made there (to remove after the run). ``run_dir`` inside ``snapshot_dir``
    is used in place."""
    work = run_dir / "work"
    if snapshot_dir is None:
        return work, False
    base = snapshot_dir.resolve()
    if base == work.resolve() or base in work.resolve().parents:
        return work.resolve().relative_to(base), False
    dest = base / "runs" / run_id
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(work, dest, symlinks=True)
    return dest.relative_to(base), True


def unpublish_snapshot(snapshot_dir: Path | None, state: dict[str, Any]) -> None:
    if snapshot_dir is not None and state.get("snapshot_copy"):
        shutil.rmtree(snapshot_dir.resolve() / state["snapshot_path"], ignore_errors=True)


def notebook_error(path: Path) -> dict[str, Any] | None:
    """The first error papermill recorded in an executed notebook: ``{cell, execution_count,
    ename, evalue, traceback}`` (``cell`` counts from 1), or ``None``."""
    try:
        nb = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    # papermill's own banners (markdown cells tagged papermill-error-cell-tag) are not counted.
    cells = [c for c in nb.get("cells") or [] if "papermill-error-cell-tag" not in c.get("metadata", {}).get("tags", [])]
    for i, cell in enumerate(cells, start=1):
        for out in cell.get("outputs") or []:
            if out.get("output_type") == "error":
                return {"cell": i, "execution_count": cell.get("execution_count"), "ename": out.get("ename"),
                        "evalue": out.get("evalue"), "traceback": out.get("traceback") or []}
    return None


def result_from_status(run: Run, status: RunStatus, cancelled: bool, fetched: str | None) -> dict[str, Any]:
    """The run's result document (as the local runner writes it) from the runtime's final
    :class:`~fetchml_agent.runtimes.base.RunStatus`. ``fetched`` says why outputs are missing."""
    import time

    now = time.time()
    base: dict[str, Any] = {"finished_at": now, "attempts": [{"attempt": 1, "started_at": run.started_at,
                                                              "finished_at": now, "alloc_id": status.alloc_id}]}
    note = f" (its results could not be fetched: {fetched})" if fetched else ""
    if status.state == "succeeded":
        return {**base, "status": "succeeded", "message": note.strip(" ()"), "error": None, "exit_code": 0}
    if status.state == "cancelled" or cancelled:
        return {**base, "status": "cancelled", "message": "cancelled" + note, "error": None, "exit_code": EXIT_CANCELLED}
    if status.state == "timed_out":
        limit = f"timed out after {float(run.timeout_s or 0):g} s"
        return {**base, "status": "failed", "message": limit + note, "exit_code": EXIT_TIMEOUT,
                "error": {"ename": "Timeout", "evalue": limit, "cell": None}}
    error = notebook_error(Path(run.run_dir, "output.ipynb")) if run.kind == "notebook" else None
    if error:
        message = f"cell {error['cell']} (In [{error['execution_count']}]) failed: {error['ename']}: {error['evalue']}"
    elif status.state == "missing":
        message = f"{status.message} while the run was followed: its results are lost"
    else:
        message = status.message or "the run failed"
        error = {"ename": "ExitCode" if status.exit_code else "NomadAllocation", "evalue": message, "cell": None}
    return {**base, "status": "failed", "message": message + note, "error": error, "exit_code": status.exit_code}


def _location(agent: Agent, experiments_root: Path) -> tuple[str, str, Path] | None:
    """``(volume, volume type, its root as the agent sees it)`` where runs read snapshots, from the
    runtime's ``run_snapshot_location``; ``None`` when none is configured."""
    return capability(agent.runtime, RunBackend).run_snapshot_location(experiments_root)


def check_ready(agent: Agent, experiments_root: Path) -> None:
    """Refuse runs on a remote runtime that has nowhere to put snapshots (before anything is
    copied): :class:`NotSupported` naming the setting."""
    from ..errors import NotSupported

    if _location(agent, experiments_root) is None:
        raise NotSupported(
            f"runs on the {agent.runtime.name} runtime need a snapshot volume, and none is configured",
            f"set {agent.runtime.name}.snapshot_volume (a host or CSI volume every client mounts) and "
            f"{agent.runtime.name}.snapshot_dir (where the agent writes into it) in agent.yaml; see docs/nomad.md",
        )


def snapshot_root(agent: Agent, experiments_root: Path) -> Path:
    """The snapshot volume's root as the agent sees it."""
    location = _location(agent, experiments_root)
    return location[2] if location else experiments_root


def run_spec(agent: Agent, ws: Workspace, run: Run, snapshot_path: Path, experiments_root: Path) -> RunSpec:
    """The runtime's :class:`~fetchml_agent.runtimes.base.RunSpec` of ``run``: the workspace's image,
    CPU and memory, the run's GPUs, parameters, timeout (7 days when none) and retries, and the
    workspace's environment (the agent's own ``FETCHML_``/Jupyter variables are the job's)."""
    import dataclasses

    from ..service.workspaces import spec_for

    location = _location(agent, experiments_root)
    assert location is not None  # checked when queued
    env = {k: v for k, v in spec_for(agent, ws).env.items()
           if not k.startswith("FETCHML_") and k not in ("JUPYTER_TOKEN", "JUPYTER_CONFIG_PATH")}
    return RunSpec(
        run_id=run.id,
        workspace=ws.name,
        notebook=run.target,
        kind=run.kind,
        owner=run.user,
        experiment_id=run.experiment_id,
        image=ws.image,
        snapshot_volume=location[0],
        snapshot_volume_type=location[1],
        snapshot_path=snapshot_path.as_posix(),
        parameters=run.parameters,
        timeout=float(run.timeout_s or 7 * 86400),
        retries=run.retries,
        resources=dataclasses.replace(Resources.from_dict(ws.resources), gpu=run.gpus),
        env=env,
    )
