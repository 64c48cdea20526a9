"""Experiments: link (0x40), queue (0x41), sync (0x42), metadata (0x43), export (0x44), cancel
(0x45), run status (0x46), run info (0x47), and the seed's
``POST /api/v1/jupyter/workspaces/{name}/experiments``.

Roles (:mod:`.access`): linking and syncing change the workspace (editor); queueing and
cancelling use it (collaborator; the run's submitter may always cancel their own run); metadata,
export and run status need viewer. ``ml jupyter create --experiment`` links (creating the
experiment when new) through an after-create hook, ``ml status`` gets its runs section from a
status hook, and deleting a workspace cancels its queued and running runs. The execution itself
lives in :mod:`fetchml_agent.experiments`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..aio import run_blocking
from ..errors import InsufficientResources, InvalidArgument, InvalidState, NotFound
from ..experiments import remote
from ..experiments.config import parse_duration, validate_experiment_id, validate_run_config
from ..experiments.environment import write_lock
from ..experiments.executor import Executor, run_view
from ..experiments.files import build_snapshot, notebook_kernel, resolve_target
from ..experiments.metadata import export_document, metadata_document
from ..experiments.records import (
    Run,
    count_runs,
    forget_workspace_sync,
    get_experiment,
    get_run,
    insert_run,
    link_experiment,
    links_of,
    metrics_of,
    runs_of,
    status_summary,
)
from ..experiments.sync import sync_workspace
from ..jsonfiles import write_json
from ..protocol.opcodes import Opcode
from ..runtimes.base import RunBackend, capability
from ..store.packages import list_installs
from .access import EDIT, USE, VIEW, require, role_of, visible
from .calls import Call, Result
from .context import AgentContext
from .paths import check_path_text
from .registry import operation

if TYPE_CHECKING:
    from ..store.workspaces import Workspace

__all__ = ["check_create", "close", "executor_of", "link_after_create", "on_delete", "start", "status_section"]

_STATUS_LIST_LIMIT = 20
_RECENT = 10


def executor_of(agent: AgentContext) -> Executor:
    return agent.services.experiments


# -- hooks (registered by fetchml_agent.agent.build_services) ------------------------------------


async def start(agent: AgentContext) -> None:
    await agent.services.experiments.start()


async def close(agent: AgentContext) -> None:
    await agent.services.experiments.close()


async def check_create(agent: AgentContext, call: Call, ws: Workspace) -> None:
    if ws.config.get("experiment") is not None:
        validate_experiment_id(ws.config["experiment"])


async def link_after_create(agent: AgentContext, call: Call, ws: Workspace) -> None:
    if ws.config.get("experiment"):
        await _link(agent, call, ws, ws.config["experiment"])


async def on_delete(agent: AgentContext, call: Call, ws: Workspace) -> None:
    await agent.services.experiments.cancel_workspace_runs(ws.id)
    await agent.store.run(forget_workspace_sync, ws.id)


def _can_see(agent: AgentContext, call: Call, visible_ids: set[str], workspace_id: str, user: str) -> bool:
    return call.user.is_admin or workspace_id in visible_ids or user == call.user.name


def _visible_ids(agent: AgentContext, call: Call) -> set[str]:
    return {ws.id for ws in agent.workspaces.values() if visible(agent, call.user, ws)}


async def status_section(agent: AgentContext, call: Call) -> dict[str, Any]:
    """``ml status``'s runs: counts by status, the queue, what runs now, the latest finished."""
    counts_rows, active, recent = await agent.store.run(status_summary, _RECENT if call.user.is_admin else _RECENT * 5)
    ids = _visible_ids(agent, call)
    counts: dict[str, int] = {}
    for ws_id, user, status, n in counts_rows:
        if _can_see(agent, call, ids, ws_id, user):
            counts[status] = counts.get(status, 0) + n
    mine = [r for r in active if _can_see(agent, call, ids, r.workspace_id, r.user)]
    now = time.time()
    queued = [r for r in mine if r.status == "queued"]
    running = [executor_of(agent).active.get(r.id, r) for r in mine if r.status == "running"]
    return {
        "runs": {
            "counts": counts,
            "queued": [run_view(r, now=now) for r in queued[:_STATUS_LIST_LIMIT]],
            "running": [run_view(r, now=now) for r in running],
            "recent": [run_view(r, now=now) for r in recent if _can_see(agent, call, ids, r.workspace_id, r.user)][:_RECENT],
        }
    }


# -- link -----------------------------------------------------------------------------------------


async def _link(agent: AgentContext, call: Call, ws: Workspace, experiment_id: str) -> dict[str, Any]:
    experiment_id = validate_experiment_id(experiment_id)
    created, linked = await agent.store.run(link_experiment, ws.id, experiment_id, call.user.name)
    if ws.config.get("experiment") != experiment_id:
        ws.config["experiment"] = experiment_id
        await agent.save(ws)
    await agent.audit(call.user.name, "experiment.link", ws.name, experiment=experiment_id, created=created, new_link=linked)
    return {
        "workspace": ws.name,
        "experiment": experiment_id,
        "created": created,
        "linked": linked,
        "experiments": [link["id"] for link in await agent.store.run(links_of, ws.id)],
    }


@operation(
    Opcode.LINK_EXPERIMENT,
    routes=[("POST", "/api/v1/jupyter/workspaces/{name}/experiments")],
    schema={
        "name": {"type": "string", "required": True, "empty": False},
        "experiment_id": {"type": "string", "required": True, "empty": False},
    },
)
async def link(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    ws = agent.find_workspace(args["name"])
    require(agent, call.user, ws, EDIT, "linking an experiment")
    doc = await _link(agent, call, ws, args["experiment_id"])
    made = "created experiment {experiment} and linked" if doc["created"] else "linked experiment {experiment} to"
    word = made.format(**doc) if doc["linked"] or doc["created"] else f"experiment {doc['experiment']} was already linked to"
    return Result(f"{word} workspace {ws.name}", "experiment_link", doc, 201 if doc["linked"] else 200)


# -- queue --------------------------------------------------------------------------------------

_QUEUE_SCHEMA: dict[str, Any] = {
    "workspace": {"type": "string", "required": True, "empty": False},
    "experiment": {"type": "string", "nullable": True, "default": None},
    "notebook": {"type": "string", "nullable": True, "default": None},
    "script": {"type": "string", "nullable": True, "default": None},
    "parameters": {"type": "dict", "default": {}, "keysrules": {"type": "string", "regex": r"^[A-Za-z_][A-Za-z0-9_]*$"}},
    "config": {"type": "dict", "nullable": True, "default": None, "allow_unknown": True},
    "config_name": {"type": "string", "nullable": True, "default": None},
    "config_path": {"type": "string", "nullable": True, "default": None},
}


def _workspace_config(root: Path, rel: str | None, shown: str | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """An experiment config that lives in the workspace: the named one, else
    ``experiment-config.yaml`` when present."""
    import yaml

    candidates = [rel] if rel else ["experiment-config.yaml", "experiment-config.yml"]
    for name in candidates:
        path = (root / name).resolve()
        if root.resolve() not in path.parents:
            raise InvalidArgument(f"config {name!r} must be inside the workspace")
        if path.is_file():
            try:
                return yaml.safe_load(path.read_text()) or {}, name
            except (OSError, yaml.YAMLError) as exc:
                raise InvalidArgument(f"{name}: cannot read it as YAML", str(exc)[:300]) from None
        if rel:
            raise NotFound(f"no config file {rel!r} in the workspace ({shown or root})",
                           "pass a local file, or a path relative to the workspace")
    return None, None


def _default_notebook(root: Path) -> str:
    found = sorted(p.name for p in root.glob("*.ipynb") if p.is_file())
    if len(found) == 1:
        return found[0]
    listed = ", ".join(found[:10]) or "none"
    raise InvalidArgument(
        "name what to run: --notebook NOTEBOOK.ipynb or --script SCRIPT.py (or notebook:/script: in the config)",
        f"notebooks at the top of the workspace: {listed}",
    )


def _unknown_parameters(path: Path, parameters: dict[str, Any]) -> list[str]:
    """papermill's own warnings for parameters the notebook's ``parameters`` cell does not name."""
    if not parameters:
        return []
    import logging

    import papermill

    logging.getLogger("papermill").setLevel(logging.WARNING)  # its INFO lines belong to runs, not the agent

    declared = papermill.inspect_notebook(str(path))
    warnings = [f"Passed unknown parameter: {name}" for name in parameters if name not in declared]
    if not declared:
        warnings.append("the notebook has no cell tagged 'parameters': papermill injects the parameters at the top")
    return warnings


def _prepare(root: Path, run_dir: Path, job: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    manifest = build_snapshot(root, run_dir / "work", max_bytes, always=(job["target"],))
    write_json(run_dir / "snapshot.json", manifest)
    write_json(run_dir / "job.json", job)
    return manifest


def _adopt_snapshot(work: Path, run_dir: Path, job: dict[str, Any], manifest: dict[str, Any]) -> None:
    """Make the sources fetched from a remote workspace the run's ``work/`` directory."""
    os.replace(work, run_dir / "work")
    write_json(run_dir / "snapshot.json", manifest)
    write_json(run_dir / "job.json", job)


async def _lock_environment(agent: AgentContext, ws: Workspace, run_dir: Path) -> tuple[dict[str, Any] | None, list[str]]:
    """Issue #18: record what ``ml jupyter install`` put into the workspace with the run's snapshot
    (:mod:`fetchml_agent.experiments.environment`), where the runtime starts runs from the image;
    a warning names conda installs, which a run does not reproduce."""
    if not capability(agent.runtime, RunBackend).rebuilds_environment:
        return None, []
    installs = await agent.store.run(list_installs, ws.id)
    pins = [(r.display_name, r.version, r.sha256) for r in installs if r.installer == "pip"]
    conda = sorted(r.display_name for r in installs if r.installer != "pip")
    note = [f"conda packages are not installed in runs: {', '.join(conda)}"] if conda else []
    return await run_blocking(write_lock, run_dir / "work", pins), note


@operation(Opcode.QUEUE_RUN, routes=[("POST", "/api/v1/experiments/runs")], schema=_QUEUE_SCHEMA)
async def queue_run(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    ws = agent.find_workspace(args["workspace"])
    require(agent, call.user, ws, USE, "queueing a run")
    ex = executor_of(agent)
    ex.snapshot_location()  # NotSupported when the runtime cannot run them or has nowhere to put them
    if args.get("notebook") and args.get("script"):
        raise InvalidArgument("name one thing to run: --notebook or --script, not both")
    for key in ("notebook", "script", "config_path"):
        if args.get(key):
            check_path_text(args[key], f"--{key.replace('_', '-')}")
    run_id = "run-" + secrets.token_hex(5)
    if agent.runtime.capabilities.host_files:
        return await _queue(agent, call, args, ws, ex, run_id, Path(ws.path), None)
    # The workspace's files live in its workload: copy its sources out first, then read the
    # config and resolve the target in that copy, which becomes the run's snapshot.
    staging = ex.root / ".staging" / run_id
    try:
        manifest = await remote.fetch_sources(agent, ws, staging / "work", ex.snapshot_max_bytes, ex.run_data_max_bytes)
        return await _queue(agent, call, args, ws, ex, run_id, staging / "work", manifest)
    finally:
        await run_blocking(shutil.rmtree, staging, True)


async def _queue(agent: AgentContext, call: Call, args: dict[str, Any], ws: Workspace, ex: Executor, run_id: str,
                 root: Path, fetched: dict[str, Any] | None) -> Result:
    """Queue from the workspace files under ``root`` (``fetched``: the manifest when ``root`` is
    already the run's snapshot, taken from a remote workspace)."""
    shown = remote.workspace_dir(agent, ws) if fetched is not None else None  # the path its user knows
    doc, source = args.get("config"), args.get("config_name") or "experiment config"
    if doc is None:
        doc, found = await run_blocking(_workspace_config, root, args.get("config_path"), shown)
        source = found or source
    config = validate_run_config(doc, source)
    experiment = args.get("experiment") or config.get("experiment") or ws.config.get("experiment")
    if not experiment:
        raise InvalidArgument(
            f"workspace {ws.name} is linked to no experiment: pass --experiment EXPERIMENT_ID",
            f"or link one first: ml jupyter link {ws.name} EXPERIMENT_ID",
        )
    experiment = validate_experiment_id(experiment)
    kind, wanted = "notebook", args.get("notebook")
    if args.get("script"):
        kind, wanted = "script", args["script"]
    elif not wanted and config.get("script"):
        kind, wanted = "script", config["script"]
    elif not wanted:
        wanted = config.get("notebook") or await run_blocking(_default_notebook, root)
    target: str = await run_blocking(resolve_target, root, str(wanted), kind, shown)
    kernel, language, kernel_note = config.get("kernel"), None, None
    if kind == "notebook":
        kernel, language, kernel_note = await run_blocking(notebook_kernel, root / target, config.get("kernel"), target)
    parameters = {**(config.get("parameters") or {}), **args["parameters"]}
    gpus = int(config.get("resources", {}).get("gpu", ws.resources.get("gpu") or 0))
    host_gpus = agent.runtime.gpus  # None: the backend (Nomad) places GPUs and decides
    if host_gpus is not None and gpus > host_gpus.capacity:
        raise InsufficientResources(
            f"the run asks for {gpus} GPU{'s' if gpus != 1 else ''}, but this host has {host_gpus.capacity}",
            "set resources.gpu in the experiment config to what the host has (0 for a CPU-only run)",
        )
    timeout = config.get("timeout")
    if timeout is None and ex.default_timeout is not None:
        timeout = parse_duration(ex.default_timeout, "experiments.default_timeout")
    run_dir = ex.run_dir(experiment, run_id)
    retries = int(config.get("retries") or 0)
    job = {
        "run_id": run_id,
        "experiment": experiment,
        "kind": kind,
        "target": target,
        "parameters": parameters,
        "timeout_s": timeout,
        "retries": retries,
        "kernel": kernel,
        "language": language,
        "work_dir": str(run_dir / "work"),
    }
    await agent.store.run(link_experiment, ws.id, experiment, call.user.name)
    if ws.config.get("experiment") is None:
        ws.config["experiment"] = experiment
        await agent.save(ws)
    await run_blocking(run_dir.mkdir, parents=True)
    if fetched is None:
        manifest = await run_blocking(_prepare, root, run_dir, job, ex.snapshot_max_bytes)
    else:
        manifest = fetched
        await run_blocking(_adopt_snapshot, root, run_dir, job, manifest)
    warnings = await run_blocking(_unknown_parameters, run_dir / "work" / target, parameters) if kind == "notebook" else []
    environment, note = await _lock_environment(agent, ws, run_dir)  # issue #18: the workspace's packages
    warnings += note
    if manifest.get("data_skipped"):
        warnings.append(manifest["data_skipped"] + "; read larger data from a volume the runs mount (docs/experiments.md)")
    if kernel_note:
        warnings.insert(0, kernel_note)
    run = Run(
        id=run_id,
        experiment_id=experiment,
        workspace_id=ws.id,
        workspace=ws.name,
        user=call.user.name,
        kind=kind,
        target=target,
        run_dir=str(run_dir),
        queued_at=time.time(),
        parameters=parameters,
        config={**config, "experiment": experiment, kind: target, "parameters": parameters, "timeout": timeout,
                **({"kernel": kernel} if kernel else {}), **({"language": language} if language else {})},
        gpus=gpus,
        timeout_s=timeout,
        retries=retries,
        warnings=warnings,
    )
    await agent.store.run(insert_run, run)
    ex.publish(run)  # issue #18: subscribers see it queued
    await agent.audit(call.user.name, "run.queue", ws.name, run=run_id, experiment=experiment, target=target,
                      parameters=parameters, snapshot_files=len(manifest["copied"]))
    ex.kick()
    view = run_view(run)
    view["snapshot"] = {"copied": sorted(manifest["copied"]), "linked": manifest["linked"], "too_large": manifest["too_large"],
                        "data": manifest.get("data", []), "data_skipped": manifest.get("data_skipped")}
    view["environment"] = environment
    return Result(f"queued {run_id} ({kind} {target}) in experiment {experiment}", "run", view, 201)


# -- sync -----------------------------------------------------------------------------------------


async def _linked_experiment(agent: AgentContext, ws: Workspace, requested: str | None) -> str:
    links = [link["id"] for link in await agent.store.run(links_of, ws.id)]
    experiment = requested or ws.config.get("experiment")
    if not experiment:
        # The request is well formed; the workspace is not in a state to sync (exit 4, as a
        # workspace that is not running): linking it is what changes that.
        raise InvalidState(f"workspace {ws.name} is linked to no experiment", f"ml jupyter link {ws.name} EXPERIMENT_ID")
    if await agent.store.run(get_experiment, experiment) is None:
        raise NotFound(f"no experiment {experiment!r}", f"link it first: ml jupyter link {ws.name} {experiment}")
    if experiment not in links:
        raise InvalidState(
            f"experiment {experiment} is not linked to workspace {ws.name}",
            f"linked: {', '.join(links) or 'none'}; link it with: ml jupyter link {ws.name} {experiment}",
        )
    return experiment


@operation(
    Opcode.SYNC_WORKSPACE,
    routes=[("POST", "/api/v1/jupyter/workspaces/{name}/sync")],
    schema={
        "name": {"type": "string", "required": True, "empty": False},
        "direction": {"type": "string", "allowed": ["to-experiment", "from-experiment", "full"], "default": "full"},
        "experiment": {"type": "string", "nullable": True, "default": None},
    },
)
async def sync(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    ws = agent.find_workspace(args["name"])
    require(agent, call.user, ws, EDIT, "syncing")
    experiment = await _linked_experiment(agent, ws, args.get("experiment"))
    doc = await sync_workspace(agent, ws, experiment, args["direction"], call.user.name)
    await agent.audit(call.user.name, "experiment.sync", ws.name, "conflict" if doc["conflicts"] else "ok",
                      experiment=experiment, direction=args["direction"], copied=len(doc["copied"]),
                      conflicts=[c["path"] for c in doc["conflicts"]])
    summary = f"synced {ws.name} {args['direction']} {experiment}: {len(doc['copied'])} copied, {len(doc['conflicts'])} conflicts"
    return Result(summary, "sync", doc)


# -- metadata and export ------------------------------------------------------------------------


@operation(
    Opcode.WORKSPACE_METADATA,
    routes=[("GET", "/api/v1/jupyter/workspaces/{name}/metadata")],
    schema={"name": {"type": "string", "required": True, "empty": False}},
)
async def metadata(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    ws = agent.find_workspace(args["name"])
    require(agent, call.user, ws, VIEW, "viewing metadata of")
    return Result(ws.name, "workspace_metadata", await metadata_document(agent, ws))


@operation(
    Opcode.EXPORT_WORKSPACE,
    routes=[("GET", "/api/v1/jupyter/workspaces/{name}/export")],
    schema={
        "name": {"type": "string", "required": True, "empty": False},
        "format": {"type": "string", "allowed": ["json", "csv"], "default": "json"},
    },
)
async def export(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    ws = agent.find_workspace(args["name"])
    require(agent, call.user, ws, VIEW, "exporting metadata of")
    doc = await export_document(agent, ws)
    await agent.audit(call.user.name, "workspace.export", ws.name, format=args["format"],
                      runs=len(doc["notebook_executions"]), metrics=len(doc["metrics"]))
    return Result(ws.name, "workspace_export", doc)


# -- runs: cancel, status, info -----------------------------------------------------------------


async def _visible_run(agent: AgentContext, call: Call, run_id: str, level: int, action: str) -> Run:
    run = await agent.store.run(get_run, run_id)
    if run is None:
        raise NotFound(f"no run {run_id!r}", "`ml status` lists the runs you can see")
    ws = next((w for w in agent.workspaces.values() if w.id == run.workspace_id), None)
    if call.user.is_admin or run.user == call.user.name:
        return run
    if ws is None or role_of(agent, call.user, ws) < VIEW:
        raise NotFound(f"no run {run_id!r}", "`ml status` lists the runs you can see")
    require(agent, call.user, ws, level, action)
    return run


_RUN_ID = {"run_id": {"type": "string", "required": True, "empty": False}}


@operation(Opcode.CANCEL_RUN, routes=[("POST", "/api/v1/experiments/runs/{run_id}/cancel")], schema=_RUN_ID)
async def cancel(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    run = await _visible_run(agent, call, args["run_id"], USE, "cancelling a run")
    before = run.status
    run = await executor_of(agent).cancel(run.id)
    await agent.audit(call.user.name, "run.cancel", run.workspace, run=run.id, was=before, status=run.status)
    return Result(f"{run.id} is {run.status}", "run", run_view(run))


@operation(
    Opcode.RUN_STATUS,
    routes=[("GET", "/api/v1/experiments/runs")],
    schema={
        "workspace": {"type": "string", "nullable": True, "default": None},
        "experiment": {"type": "string", "nullable": True, "default": None},
        "status": {"type": "string", "nullable": True, "default": None,
                   "allowed": ["queued", "running", "succeeded", "failed", "cancelled"]},
        "limit": {"type": "integer", "coerce": int, "min": 1, "max": 10000, "default": 50},
    },
)
async def run_status(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    filters: dict[str, Any] = {"experiment_id": args.get("experiment"), "status": args.get("status")}
    if args.get("workspace"):
        ws = agent.find_workspace(args["workspace"])
        require(agent, call.user, ws, VIEW, "viewing runs of")
        filters["workspace_ids"] = [ws.id]
    elif not call.user.is_admin:
        filters.update(workspace_ids=sorted(_visible_ids(agent, call)), or_user=call.user.name)
    if args.get("experiment") and await agent.store.run(get_experiment, args["experiment"]) is None:
        raise NotFound(f"no experiment {args['experiment']!r}", "`ml status` lists the runs and experiments you can see")
    runs = await agent.store.run(lambda conn: runs_of(conn, limit=args["limit"], **filters))
    total = await agent.store.run(lambda conn: count_runs(conn, **filters))
    active = executor_of(agent).active
    now = time.time()
    return Result(f"{total} runs", "runs", {"runs": [run_view(active.get(r.id, r), now=now) for r in runs], "total": total})


@operation(Opcode.RUN_INFO, routes=[("GET", "/api/v1/experiments/runs/{run_id}")], schema=_RUN_ID)
async def run_info(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    run = await _visible_run(agent, call, args["run_id"], VIEW, "viewing a run")
    run = executor_of(agent).active.get(run.id, run)
    view = run_view(run)
    view["attempts"] = run.attempts
    view["config"] = run.config
    view["metrics"] = await agent.store.run(metrics_of, [run.id])
    return Result(run.id, "run", view)

