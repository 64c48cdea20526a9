"""Workspaces whose files the agent reaches only through the workload (``capabilities.host_files``
false: docker volumes, Nomad allocations).

Their files are moved as tar streams through ``runtime.exec``:

- :func:`fetch_sources` takes a run's snapshot from the *running* workspace: one command in the
  workspace (``find`` with the sources rule of :mod:`.files`, piped to ``tar``) whose output
  streams into the run's ``work/`` directory on the agent, so the notebook that runs is the one
  the user sees in JupyterLab, frozen when queued;
- sync works on such workspaces the same way: :func:`pull_paths` brings the workspace's side into
  a mirror, the conflict rule runs there, and :func:`push_files` writes what it changed back
  through ``runtime.exec``'s stdin.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..aio import run_blocking
from ..core import AgentCore
from ..errors import BackendError, InvalidState
from .files import data_find_expression, select_sources, sha256_file, source_find_expression

if TYPE_CHECKING:
    from ..store.workspaces import Workspace

__all__ = ["fetch_sources", "pull_paths", "push_files", "workspace_dir"]
_SNAPSHOT_TIMEOUT_S = 300.0
_MAX_SNAPSHOT_BYTES = 2 << 30
_MAX_PUSH_BYTES = 512 << 20
# Streams what ``find ARGS`` selects as a tar archive on stdout; stderr is dropped so that nothing
# but the archive reaches the agent (the exit status still tells whether tar succeeded).
_TAR_SCRIPT = 'exec 2>/dev/null; cd "$1" || exit 3; shift; find "$@" | tar -cf - --null --no-recursion -T -'


def workspace_dir(agent: AgentCore, ws: Workspace) -> str:
    """The workspace's directory inside its workload (``Runtime.files_root``)."""
    return agent.runtime.files_root(agent.workspace_spec(ws), ws.runtime_state)


def _require_running(ws: Workspace, why: str) -> None:
    if ws.status != "running" or not ws.runtime_state:
        raise InvalidState(
            f"workspace {ws.name} is not running: {why}",
            f"start it first: ml jupyter start {ws.name}",
        )


class _TooLarge(BackendError):
    """The files to copy are larger than allowed."""


async def _pull(agent: AgentCore, ws: Workspace, dest: Path, find_args: list[str],
                limit: int = _MAX_SNAPSHOT_BYTES) -> None:
    """Copy what ``find FIND_ARGS`` prints (NUL-separated, relative to the workspace's directory)
    from the running workspace into ``dest``, as one tar stream through ``runtime.exec``;
    :class:`_TooLarge` (nothing copied) when the stream passes ``limit`` bytes."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest.parent / f".{dest.name}.pull.tar"
    size = 0
    try:
        with open(archive, "wb") as fh:

            async def sink(chunk: bytes) -> None:
                nonlocal size
                size += len(chunk)
                if size > limit:
                    raise _TooLarge(f"the workspace's files to copy exceed {_mib(limit)}")
                fh.write(chunk)

            argv = ["sh", "-c", _TAR_SCRIPT, "fetchml-pull", workspace_dir(agent, ws), *find_args]
            res = await agent.runtime.exec(agent.workspace_spec(ws), ws.runtime_state, argv, output=sink,
                                           timeout=_SNAPSHOT_TIMEOUT_S)
    except BaseException:
        archive.unlink(missing_ok=True)
        raise
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


def _mib(n: int) -> str:
    return f"{n / (1 << 20):g} MiB"


async def fetch_sources(agent: AgentCore, ws: Workspace, work: Path, max_bytes: int,
                        data_max_bytes: int = 0) -> dict[str, Any]:
    """Copy the running workspace's sources (the rule of :mod:`.files`) into ``work``; return the
    snapshot manifest ``{"copied": {path: sha256}, "linked": [], "too_large": []}``.

    With ``data_max_bytes`` (a run's snapshot, issue #18), its data files come too (every other
    file outside what the sources rule prunes) when together they stay within that size: the
    manifest then lists them in ``data``; when they do not, none is copied and ``data_skipped``
    says why (the run reads larger data from a volume both mount: docs/experiments.md).

    Raises :class:`InvalidState` when the workspace is not running (its files are only
    reachable through its workload) and :class:`BackendError` when the copy fails.
    """
    _require_running(ws, "runs are snapshotted from the running workspace")
    await _pull(agent, ws, work, [".", *source_find_expression(max_bytes)])
    manifest = await run_blocking(_keep_sources, work, max_bytes)
    if data_max_bytes > 0:
        data = work.parent / f".{work.name}.data"
        try:
            await _pull(agent, ws, data, [".", *data_find_expression()], limit=data_max_bytes + (1 << 20))
            manifest.update(await run_blocking(_merge_data, data, work, data_max_bytes))
        except _TooLarge:
            manifest["data_skipped"] = (f"the workspace's data files exceed experiments.run_data_max_mb "
                                        f"({_mib(data_max_bytes)}): none was copied")
        finally:
            await run_blocking(shutil.rmtree, data, True)
    return manifest


def _merge_data(data: Path, work: Path, max_bytes: int) -> dict[str, Any]:
    """Move the pulled data files under ``data`` into ``work`` (sources win), when within ``max_bytes``."""
    files = [Path(d, n) for d, _dirs, names in os.walk(data) for n in names]
    total = sum(p.stat().st_size for p in files if not p.is_symlink())
    if total > max_bytes:
        return {"data_skipped": f"the workspace's data files exceed experiments.run_data_max_mb "
                                f"({_mib(max_bytes)}): none was copied"}
    moved = []
    for path in files:
        rel = path.relative_to(data)
        target = work / rel
        if path.is_symlink() or target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        moved.append(rel.as_posix())
    return {"data": sorted(moved), "data_bytes": total}


def _keep_sources(work: Path, max_bytes: int) -> dict[str, Any]:
    sources, _ = select_sources(work, max_bytes)
    for dirpath, _dirs, files in os.walk(work):
        for name in files:  # the rule is applied again here: nothing else stays
            path = Path(dirpath, name)
            if path.relative_to(work).as_posix() not in sources:
                path.unlink()
    return {"copied": {rel: sha256_file(path) for rel, path in sources.items()}, "linked": [], "too_large": []}


async def pull_paths(agent: AgentCore, ws: Workspace, dest: Path, rels: list[str]) -> None:
    """Copy the files at or under the workspace-relative paths ``rels`` (those that exist) into
    ``dest``: the workspace's side of a results sync."""
    _require_running(ws, "its files are synced through its workload")
    await _pull(agent, ws, dest, [*(f"./{r}" for r in rels), "-type", "f", "-print0"])


async def push_files(agent: AgentCore, ws: Workspace, src: Path, rels: list[str]) -> None:
    """Write the files ``src/REL`` into the running workspace at the same relative paths (one tar
    stream through ``runtime.exec``'s stdin), replacing what is there."""
    if not rels:
        return
    _require_running(ws, "its files are synced through its workload")
    data = await run_blocking(_pack, src, rels)
    argv = ["sh", "-c", 'mkdir -p "$1" && cd "$1" && tar -xmf - --no-same-owner', "fetchml-push", workspace_dir(agent, ws)]
    res = await agent.runtime.exec(agent.workspace_spec(ws), ws.runtime_state, argv, stdin=data, timeout=_SNAPSHOT_TIMEOUT_S)
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
