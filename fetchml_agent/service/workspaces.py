"""Workspaces: create, start (the seed's 0x0D), stop, list, info, status, restart, delete.

A workspace is a directory of files plus a JupyterLab server run by the runtime. Its record is
written before the runtime is asked to do anything and updated after, so a crash in between
leaves a record that the next start reconciles (``adopt_all``): nothing is lost, nothing runs
twice.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

from ..aio import run_blocking
from ..allocators import workspace_holder
from ..errors import (
    AlreadyExists,
    FetchmlError,
    InsufficientResources,
    InvalidArgument,
    InvalidState,
    NotSupported,
    Overloaded,
    PermissionDenied,
)
from ..protocol.opcodes import Opcode
from ..runtimes.base import ENVIRONMENT_VERSIONS, VERSION_PROBE, Resources, State, Status, version_mismatch
from ..store.workspaces import Workspace, delete_workspace, insert_workspace
from ..testpoints import pause_point
from ..units import parse_cpu, parse_size_mb
from .access import OWN, USE, VIEW, require, require_password_change, visible
from .calls import Call, Result
from .context import AgentContext
from .paths import check_path_text, check_workspace_dir
from .registry import operation
from .views import browser_url, cpu_beyond_host, limits_view, resources_view, service_view, workspace_view

log = logging.getLogger(__name__)

__all__ = ["adopt_all", "hash_password", "managed_root", "reconcile_once", "validate_name"]

_NAME = re.compile(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?")
_SERVICE_ID = re.compile(r"ws-[0-9a-f]{12}")
ACTIVE = ("starting", "running", "stopping")


def validate_name(name: Any) -> str:
    """``name`` when it is a valid workspace name, matched whole (a trailing newline is not part of
    a valid name); else InvalidArgument (0x06). A name shaped like a service id (``ws-`` and 12
    hex digits) is refused: commands take either, and a name must never shadow another's id."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidArgument(
            f"invalid workspace name {name!r}",
            "use 1-63 lowercase letters, digits and hyphens, starting with a letter and not ending "
            "with a hyphen (e.g. project-name-dev)",
        )
    if _SERVICE_ID.fullmatch(name):
        raise InvalidArgument(
            f"invalid workspace name {name!r}: it looks like a service id",
            "service ids are ws- and 12 hex digits; pick a name that is not shaped like one",
        )
    return name


def _resources(args: dict[str, Any], base: dict[str, Any] | None = None) -> Resources:
    merged = dict(base or {})
    merged.update({k: v for k, v in args.items() if v is not None})
    try:
        cpu = parse_cpu(merged["cpu"], "--cpu") if merged.get("cpu") is not None else None
        memory = parse_size_mb(merged["memory"], "--memory") if merged.get("memory") is not None else None
        disk = parse_size_mb(merged["disk"], "--disk") if merged.get("disk") is not None else None
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    gpu = merged.get("gpu") or 0
    if isinstance(gpu, bool) or (not isinstance(gpu, int) and not str(gpu).isdigit()):
        raise InvalidArgument(f"--gpu: expected a whole number of GPUs, got {gpu!r}")
    gpu_type = _gpu_type(merged.get("gpu_type"))
    if gpu_type and not int(gpu):
        if merged.get("gpu") is not None:
            raise InvalidArgument(f"--gpu-type {gpu_type} asks for a kind of GPU, but --gpu is 0", "give --gpu 1 or more")
        gpu = 1  # a type without a count: one GPU of that type
    return Resources(cpu=cpu, memory_mb=memory, gpu=int(gpu), disk_mb=disk, gpu_type=gpu_type)


_GPU_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._+:-]{0,127}$")


def _gpu_type(value: Any) -> str | None:
    """``--gpu-type``: a GPU model (``H100``, ``A100-SXM4-80GB``) or MIG profile (``3g.40gb``), as
    text the runtime that places GPUs matches against what its nodes fingerprint."""
    if value is None or value == "":
        return None
    text = " ".join(str(value).split())
    if not isinstance(value, str) or not _GPU_TYPE.match(text):
        raise InvalidArgument(f"--gpu-type: invalid GPU type {value!r}",
                              "a model such as H100 or A100-SXM4-80GB, or a MIG profile such as 3g.40gb")
    return text


def check_gpu_type(agent: AgentContext, resources: Resources) -> None:
    """A GPU type needs a runtime that places GPUs itself (``capabilities.places_gpus``: Nomad's
    device requests); the others hand out the host's GPUs by index."""
    if resources.gpu_type and not agent.runtime.capabilities.places_gpus:
        raise NotSupported(
            f"--gpu-type needs a runtime that places GPUs by kind (nomad); the {agent.runtime.name} runtime "
            "assigns this host's GPUs by index",
            "leave out --gpu-type (and gpu_type: in the workspace config)",
        )


def hash_password(password: str) -> str:
    from jupyter_server.auth.security import passwd

    return passwd(password)


def _check_single_owner(agent: AgentContext, owner: str) -> None:
    """A runtime that cannot keep people apart and was not told to share (``single_owner``)
    serves the workspaces of one person only."""
    isolation = agent.runtime.describe().get("isolation") or {}
    if not isolation.get("single_owner"):
        return
    others = sorted({w.owner for w in agent.workspaces.values()} - {owner})
    if others:
        raise PermissionDenied(
            f"this agent runs every workspace as its own OS user, so it holds one person's workspaces, "
            f"and {others[0]} has workspaces here",
            "an admin runs the agent as root or with the capabilities the fetchml_agent role grants (then "
            "each owner gets an OS user of their own: local.isolation: users, the default there), or sets "
            "local.isolation: none to accept that everyone's workspaces share one OS user (docs/security.md)",
        )


def managed_root(agent: AgentContext) -> Path:
    """Where the agent puts the directories of workspaces created without ``--workspace``: under
    the data_dir, or with local user isolation under ``local.workspaces_dir`` (which workspace
    users can reach; the data_dir is 0700)."""
    shared = agent.config.local_workspaces_dir
    return shared / "files" if shared is not None else agent.data_dir / "workspaces"


def _allowed_path(agent: AgentContext, user: Any, path: Path) -> None:
    """``--workspace`` rules (:func:`~.paths.check_workspace_dir`), on the resolved ``path``."""
    roots = [Path(p).expanduser() for p in agent.config.section("local").get("workspace_roots", [])]
    others = [Path(w.path).resolve() for w in agent.workspaces.values()]
    check_workspace_dir(path, admin=user.is_admin, roots=roots, managed_root=managed_root(agent), others=others)


def _claim_host_resources(agent: AgentContext, ws: Workspace) -> tuple[int, ...]:
    """The GPUs (and, where the agent picks ports, the port) ``ws`` starts with, claimed from the
    runtime's allocators; a runtime whose backend places them itself has none."""
    holder = workspace_holder(ws.id)
    gpu_ids: tuple[int, ...] = ()
    if agent.runtime.gpus is not None:
        gpu_ids = agent.runtime.gpus.claim(holder, int(ws.resources.get("gpu") or 0))
    if agent.runtime.ports is not None:
        try:
            ws.port = agent.runtime.ports.claim(holder, ws.port)
        except BaseException:
            _release_host_resources(agent, ws)
            raise
    return gpu_ids


def _release_host_resources(agent: AgentContext, ws: Workspace) -> None:
    """Give back what ``ws`` held: it stopped, failed, or was found gone."""
    for allocator in (agent.runtime.gpus, agent.runtime.ports):
        if allocator is not None:
            allocator.release(workspace_holder(ws.id))


def _hold_host_resources(agent: AgentContext, ws: Workspace) -> None:
    """After an agent restart: ``ws`` runs, so what it started with is held again."""
    state = ws.runtime_state or {}
    if agent.runtime.gpus is not None and state.get("gpu_indexes"):
        try:
            agent.runtime.gpus.hold(workspace_holder(ws.id), state["gpu_indexes"], what=f"workspace {ws.name}")
        except InsufficientResources as exc:  # the host lost a GPU meanwhile: say so, keep running
            ws.status_message = exc.message
    if agent.runtime.ports is not None and ws.port:
        agent.runtime.ports.hold(workspace_holder(ws.id), ws.port)


async def _start(agent: AgentContext, call: Call, ws: Workspace, *, restart: bool = False) -> None:
    """Start ``ws`` (its record already saved); on failure the record says why. ``restart``: it
    was running a moment ago (restart, reset, scale checked already), so no quota is asked again:
    lowering a quota never stops a workspace (docs/capacity.md). Timed into
    ``fetchml_workspace_start_duration_seconds`` by runtime and outcome (issue 17)."""
    if agent.services.capacity is not None and not restart:  # a start past a quota (docs/capacity.md)
        agent.services.capacity.check_quota(ws, Resources.from_dict(ws.resources), new=False, running=True)
    timer = time.perf_counter()
    outcome = "error"
    try:
        await _start_workload(agent, call, ws)
        outcome = "ok"
    except Overloaded:
        outcome = "overloaded"
        raise
    finally:
        agent.services.metrics.workspace_start.labels(agent.runtime.name, outcome).observe(time.perf_counter() - timer)


async def _start_workload(agent: AgentContext, call: Call, ws: Workspace) -> None:
    if agent.start_slots.locked():
        raise agent.overloaded()
    async with agent.start_slots:
        gpu_ids = _claim_host_resources(agent, ws)
        ws.status, ws.status_message = "starting", ""
        await agent.save(ws)
        await call.progress(f"starting workspace {ws.name} on the {agent.runtime.name} runtime")
        try:
            # The package policy's startup scan: a hook that raises stops the start. An
            # after-start hook gets the new workload's state (for runtimes that can only look
            # inside a running workspace); if it raises, the workload is stopped again.
            for hook in agent.services.hooks.before_start:
                await hook(agent, call, ws)
            started = await agent.runtime.start(agent.workspace_spec(ws, gpu_ids), call.progress)
            pause_point("start.ready")
            try:
                for after in agent.services.hooks.after_start:
                    await after(agent, call, ws, started.state)
            except BaseException:
                await agent.runtime.stop(started.state, grace=2.0)
                raise
        except FetchmlError as exc:
            _release_host_resources(agent, ws)
            ws.status, ws.status_message, ws.runtime_state = "failed", exc.message, None
            await agent.save(ws)
            raise
        except BaseException as exc:
            _release_host_resources(agent, ws)
            if not isinstance(exc, Exception):
                raise
            ws.status, ws.status_message, ws.runtime_state = "failed", f"start failed: {exc}", None
            await agent.save(ws)
            raise
        ws.runtime_state = started.state
        ws.url = started.url
        ws.limits = started.limits
        ws.status, ws.status_message = "running", ""
        ws.started_at = time.time()
        if "port" in started.state:
            ws.port = started.state["port"]
        await agent.save(ws)


async def _stop(agent: AgentContext, ws: Workspace) -> None:
    if ws.runtime_state:
        ws.status = "stopping"
        await agent.save(ws)
        pause_point("stop.stopping")
        await agent.runtime.stop(ws.runtime_state, grace=agent.runtime.stop_grace)
    _release_host_resources(agent, ws)
    ws.status, ws.status_message, ws.runtime_state, ws.url = "stopped", "", None, None
    await agent.save(ws)


_CREATE_SCHEMA: dict[str, Any] = {
    "name": {"type": "string", "required": True},
    "cpu": {"type": ["number", "string"], "nullable": True, "default": None},
    "memory": {"type": ["string", "integer"], "nullable": True, "default": None},
    "gpu": {"type": ["integer", "string"], "nullable": True, "default": None},
    "gpu_type": {"type": "string", "nullable": True, "default": None},
    "disk": {"type": ["string", "integer"], "nullable": True, "default": None},
    "image": {"type": "string", "nullable": True, "default": None},
    "password": {"type": "string", "nullable": True, "default": None},
    "workspace": {"type": "string", "nullable": True, "default": None},
    "experiment": {"type": "string", "nullable": True, "default": None},
    "template": {"type": "string", "nullable": True, "default": None},
    "config": {"type": "dict", "nullable": True, "default": None, "allow_unknown": True},
    "resources": {"type": "dict", "nullable": True, "default": None, "allow_unknown": True},
    "security": {"type": "dict", "nullable": True, "default": None, "allow_unknown": True},
    "environment": {"type": "dict", "nullable": True, "default": None, "allow_unknown": True},
    "packages": {"type": "list", "nullable": True, "default": None},
}


def _load_template(agent: AgentContext, name: str) -> dict[str, Any]:
    import yaml

    tdir = agent.config.raw.get("templates_dir")
    if not tdir:
        raise InvalidArgument(f"template {name!r}: this agent has no templates_dir configured")
    base = Path(tdir)
    if not base.is_absolute() and agent.config.path:
        base = agent.config.path.parent / base
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", name):
        raise InvalidArgument(f"invalid template name {name!r}")
    for candidate in (base / f"{name}.yaml", base / f"{name}.yml", base / name):
        if candidate.is_file():
            doc = yaml.safe_load(candidate.read_text()) or {}
            if not isinstance(doc, dict):
                raise InvalidArgument(f"template {candidate}: the top level must be a mapping")
            return doc
    known = sorted(p.stem for p in base.glob("*.y*ml")) if base.is_dir() else []
    raise InvalidArgument(f"no template named {name!r}", "available: " + (", ".join(known) or "none"))


def _merge_config(agent: AgentContext, args: dict[str, Any]) -> dict[str, Any]:
    """Template, then workspace-config document, then explicit fields: later wins."""
    merged: dict[str, Any] = {}
    layers = []
    if args.get("template"):
        layers.append(_load_template(agent, args["template"]))
    if args.get("config"):
        layers.append(args["config"])
    layers.append({k: args[k] for k in ("resources", "security", "environment", "packages") if args.get(k) is not None})
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
    return merged


def _already_exists(name: str) -> AlreadyExists:
    return AlreadyExists(f"a workspace named {name!r} already exists", "pick another name, or `ml jupyter info " + name + "`")


async def _create(agent: AgentContext, call: Call, args: dict[str, Any], *, seed_start: bool = False) -> Workspace:
    name = validate_name(args["name"])
    # The record is written only after checks that await: until then the name is reserved, so a
    # second create of it answers 0x05 at once, as it does once the first is recorded.
    if name in agent.workspaces or name in agent.creating:
        raise _already_exists(name)
    agent.creating.add(name)
    try:
        return await _create_reserved(agent, call, args, name, seed_start=seed_start)
    finally:
        agent.creating.discard(name)


async def _create_reserved(
    agent: AgentContext, call: Call, args: dict[str, Any], name: str, *, seed_start: bool = False
) -> Workspace:
    if len(agent.workspaces) >= agent.max_workspaces:
        raise InsufficientResources(f"this agent already holds {agent.max_workspaces} workspaces (limits.max_workspaces)")
    _check_single_owner(agent, call.user.name)
    doc = _merge_config(agent, args)
    resources = _resources({k: args.get(k) for k in ("cpu", "memory", "gpu", "gpu_type", "disk")}, doc.get("resources"))
    check_gpu_type(agent, resources)
    beyond = cpu_beyond_host(agent, resources.cpu)
    if beyond:
        await call.progress(f"warning: {beyond}")
    env_doc = doc.get("environment") or {}
    env = {k: str(v) for k, v in env_doc.items() if re.match(r"^[A-Z_][A-Z0-9_]*$", str(k))}
    settings = {k: v for k, v in env_doc.items() if k not in env}
    image = args.get("image") or doc.get("image")
    versions_inside = agent.runtime.check_environment(image, settings)  # raises for what cannot be had
    if args.get("workspace"):
        path = Path(check_path_text(args["workspace"], "--workspace")).expanduser()
        if not path.is_absolute():
            raise InvalidArgument(f"workspace directory must be an absolute path, got {args['workspace']!r}")
        path = await run_blocking(path.resolve)
        _allowed_path(agent, call.user, path)
        managed = False
    else:
        path = (managed_root(agent) / name).resolve()
        managed = True
    now = time.time()
    ws = Workspace(
        id="ws-" + secrets.token_hex(6),
        name=name,
        owner=call.user.name,
        path=str(path),
        runtime=agent.runtime.name,
        token=secrets.token_hex(24),
        index_key=secrets.token_urlsafe(18),
        created_at=now,
        updated_at=now,
        status="starting",
        managed_path=managed,
        password_hash=await run_blocking(hash_password, args["password"]) if args.get("password") else None,
        resources=resources.to_dict(),
        image=image,
        config={
            "env": env,
            "settings": settings,
            "security": doc.get("security") or {},
            "packages": doc.get("packages") or [],
            "template": args.get("template"),
            "experiment": args.get("experiment"),
        },
    )
    for hook in agent.services.hooks.create:
        await hook(agent, call, ws)
    capacity = agent.services.capacity
    if capacity is not None:  # quotas (docs/capacity.md), then a warm pool member (docs/warm-pool.md)
        capacity.check_quota(ws, resources, new=True, running=True)
    member = capacity.reserve(ws, args) if capacity is not None and not seed_start else None
    await run_blocking(Path(ws.path).mkdir, parents=True, exist_ok=True)  # a claimed member's, where it has one
    await agent.store.run(insert_workspace, ws, agent.store.sealer)
    agent.workspaces[name] = ws
    agent.invalidate()
    pause_point("create.recorded")
    try:
        t0 = time.perf_counter()
        if member is None or capacity is None or not await capacity.start_reserved(call, ws, member):
            await _start(agent, call, ws)
            ws.config["start"] = {"kind": "cold", "seconds": round(time.perf_counter() - t0, 4), "at": ws.started_at}
            await agent.save(ws)
        if versions_inside:
            await _check_versions_inside(agent, call, ws, settings)
    except BaseException as exc:
        # A create that did not start leaves nothing behind: no record, no env, no empty dir.
        await _discard(agent, ws)
        await agent.audit(call.user.name, "workspace.create", name, "error", error=str(exc))
        raise
    await agent.audit(call.user.name, "workspace.create", name, resources=ws.resources, runtime=ws.runtime)
    for hook in agent.services.hooks.after_create:
        await hook(agent, call, ws)
    return ws


async def _check_versions_inside(agent: AgentContext, call: Call, ws: Workspace, settings: dict[str, Any]) -> None:
    """The image decides Python's and JupyterLab's versions: read them in the started workspace;
    one that is not what ``environment:`` asks for refuses the create (NotSupported)."""
    await call.progress("checking the image's Python and JupyterLab versions")
    result = await agent.runtime.exec(agent.workspace_spec(ws), ws.runtime_state, VERSION_PROBE, timeout=60)
    try:
        have = json.loads(result.output.decode(errors="replace").strip().splitlines()[-1])
    except (ValueError, IndexError):
        have = {}
    wrong = version_mismatch(settings, have if isinstance(have, dict) else {})
    if wrong is not None:
        key, want, got = wrong
        raise NotSupported(f"environment.{key} {want}: the image {ws.image or 'of this runtime'} has "
                           f"{ENVIRONMENT_VERSIONS[key]} {got}",
                           f"choose an image with {ENVIRONMENT_VERSIONS[key]} {want} (--image), or leave {key} out")


async def _discard(agent: AgentContext, ws: Workspace) -> None:
    try:
        await agent.runtime.remove(agent.workspace_spec(ws), ws.runtime_state)
    except FetchmlError:
        pass
    await agent.store.run(delete_workspace, ws.id)
    agent.workspaces.pop(ws.name, None)
    agent.invalidate()
    if ws.managed_path:
        await run_blocking(_rmdir_if_empty, Path(ws.path))


def _rmdir_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


@operation(Opcode.CREATE_WORKSPACE, routes=[("POST", "/api/v1/jupyter/workspaces")], schema=_CREATE_SCHEMA)
async def create_workspace(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    timer, outcome = time.perf_counter(), "error"  # fetchml_workspace_create_duration_seconds (issue 17)
    try:
        ws = await _create(agent, call, args)
        outcome = "ok"
    finally:
        agent.services.metrics.workspace_create.labels(agent.runtime.name, outcome).observe(time.perf_counter() - timer)
    url = browser_url(ws, agent, call.user)
    return Result(f"workspace {ws.name} is running at {url}", "workspace", workspace_view(agent, ws, call.user), 201)


@operation(
    Opcode.START_JUPYTER,
    routes=[("POST", "/api/v1/jupyter/services")],
    schema={
        "name": {"type": "string", "required": True},
        "workspace": {"type": "string", "default": ""},
        "password": {"type": "string", "default": ""},
    },
)
async def start_service(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    """The seed's 0x0D: start (creating if needed) a service named ``name`` on ``workspace``."""
    name = validate_name(args["name"])
    ws = agent.workspaces.get(name)
    if ws is None:
        ws = await _create(
            agent, call, {"name": name, "workspace": args["workspace"] or None, "password": args["password"] or None}
        )
        return Result(f"service {ws.id} started at {browser_url(ws, agent, call.user)}", "workspace",
                      workspace_view(agent, ws, call.user))
    require(agent, call.user, ws, USE, "starting")
    if args["workspace"] and Path(check_path_text(args["workspace"], "--workspace")).expanduser().resolve() != Path(ws.path):
        raise AlreadyExists(
            f"service {name!r} already exists on another directory ({ws.path})",
            "choose another --name, or delete it first",
        )
    async with agent.lock(name):
        if ws.status == "running":
            return Result(f"service {ws.id} is already running at {browser_url(ws, agent, call.user)}", "workspace",
                          workspace_view(agent, ws, call.user))
        if args["password"]:
            # access: the password logs in as the owner, so only they (or an admin) may set it.
            await require_password_change(agent, call, ws)
            ws.password_hash = await run_blocking(hash_password, args["password"])
            await agent.audit(call.user.name, "workspace.password", ws.name, change="set")
        await _start(agent, call, ws)
    await agent.audit(call.user.name, "workspace.start", name)
    return Result(f"service {ws.id} started at {browser_url(ws, agent, call.user)}", "workspace",
                  workspace_view(agent, ws, call.user))


@operation(
    Opcode.STOP_JUPYTER,
    routes=[("DELETE", "/api/v1/jupyter/services/{service_id}"), ("POST", "/api/v1/jupyter/workspaces/{service_id}/stop")],
    schema={"service_id": {"type": "string", "required": True, "empty": False}},
)
async def stop_service(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    ws = agent.find_workspace(args["service_id"])
    require(agent, call.user, ws, USE, "stopping")
    async with agent.lock(ws.name):
        if ws.status == "stopped":
            return Result(f"workspace {ws.name} ({ws.id}) is already stopped")
        await _stop(agent, ws)
    await agent.audit(call.user.name, "workspace.stop", ws.name)
    return Result(f"stopped workspace {ws.name} ({ws.id})")


@operation(
    Opcode.LIST_JUPYTER,
    routes=[("GET", "/api/v1/jupyter/workspaces"), ("GET", "/api/v1/jupyter/services")],
)
async def list_services(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    cache = agent.list_cache()
    key = f"user:{call.user.name}"  # per person: each URL carries its caller's own token
    cached = cache.get(key)
    if cached is None:
        doc = {"services": [service_view(ws, agent, call.user) for ws in agent.workspaces.values()
                            if visible(agent, call.user, ws)]}
        cached = cache[key] = Result(f"{len(doc['services'])} services", "jupyter_services", doc)
        cached.json_bytes()
    return cached


_NAME_ONLY = {"name": {"type": "string", "required": True, "empty": False}}


@operation(Opcode.WORKSPACE_INFO, routes=[("GET", "/api/v1/jupyter/workspaces/{name}")], schema=_NAME_ONLY)
async def workspace_info(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    ws = agent.find_workspace(args["name"])
    require(agent, call.user, ws, VIEW, "viewing")
    doc = workspace_view(agent, ws, call.user)
    isolation = agent.runtime.describe().get("isolation")
    if isolation:  # what keeps this workspace apart from the others (docs/security.md)
        doc["isolation"] = isolation
    return Result(ws.name, "workspace", doc)


@operation(Opcode.WORKSPACE_STATUS, routes=[("GET", "/api/v1/jupyter/workspaces/{name}/status")], schema=_NAME_ONLY)
async def workspace_status(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    """Live status: asks the runtime now rather than trusting the record."""
    ws = agent.find_workspace(args["name"])
    require(agent, call.user, ws, VIEW, "viewing")
    async with agent.lock(ws.name):
        await _refresh(agent, ws)
    doc: dict[str, Any] = {"name": ws.name, "id": ws.id, "status": ws.status, "message": ws.status_message,
                           "url": browser_url(ws, agent, call.user)}
    if ws.status == "running" and ws.runtime_state:
        doc["stats"] = await agent.runtime.stats(ws.runtime_state)
    return Result(ws.status, "workspace_status", doc)


@operation(Opcode.RESTART_WORKSPACE, routes=[("POST", "/api/v1/jupyter/workspaces/{name}/restart")], schema=_NAME_ONLY)
async def restart_workspace(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    ws = agent.find_workspace(args["name"])
    require(agent, call.user, ws, USE, "restarting")
    async with agent.lock(ws.name):
        was_running = ws.status in ACTIVE
        if ws.status in ("running", "starting", "stopping", "failed", "missing"):
            await call.progress("stopping")
            await _stop(agent, ws)
        pause_point("restart.stopped")
        await _start(agent, call, ws, restart=was_running)
    await agent.audit(call.user.name, "workspace.restart", ws.name)
    return Result(f"restarted workspace {ws.name} at {browser_url(ws, agent, call.user)}", "workspace",
                  workspace_view(agent, ws, call.user))


@operation(Opcode.DELETE_WORKSPACE, routes=[("DELETE", "/api/v1/jupyter/workspaces/{name}")], schema=_NAME_ONLY)
async def delete_workspace_op(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    ws = agent.find_workspace(args["name"])
    require(agent, call.user, ws, OWN, "deleting")
    async with agent.lock(ws.name):
        if ws.status != "stopped":
            await _stop(agent, ws)
        pause_point("delete.stopped")
        await agent.runtime.remove(agent.workspace_spec(ws), None)
        pause_point("delete.removed")
        for hook in agent.services.hooks.delete:
            await hook(agent, call, ws)
        await agent.store.run(delete_workspace, ws.id)
        agent.workspaces.pop(ws.name, None)
        agent.publish_workspace(ws, "deleted")
        agent.services.grants.forget(ws.id)
        agent.invalidate()
        if ws.managed_path:
            await run_blocking(shutil.rmtree, ws.path, True)
    await agent.audit(call.user.name, "workspace.delete", ws.name, files_removed=ws.managed_path)
    kept = "" if ws.managed_path else f" (its directory {ws.path} was not created by the agent and is kept)"
    return Result(f"deleted workspace {ws.name}{kept}")


@operation(Opcode.WORKSPACE_STATS, routes=[("GET", "/api/v1/jupyter/workspaces/{name}/stats")], schema=_NAME_ONLY)
async def workspace_stats(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    ws = agent.find_workspace(args["name"])
    require(agent, call.user, ws, VIEW, "viewing stats of")
    if ws.status != "running" or not ws.runtime_state:
        raise InvalidState(f"workspace {ws.name} is {ws.status}", f"start it first: ml jupyter restart {ws.name}")
    stats = await agent.runtime.stats(ws.runtime_state)
    return Result(ws.name, "workspace_stats", {"name": ws.name, "resources": resources_view(ws.resources), "limits": ws.limits, **stats})


@operation(Opcode.WORKSPACE_LIMITS, routes=[("GET", "/api/v1/jupyter/workspaces/{name}/limits")], schema=_NAME_ONLY)
async def workspace_limits(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    ws = agent.find_workspace(args["name"])
    require(agent, call.user, ws, VIEW, "viewing limits of")
    return Result(ws.name, "workspace_limits", {"name": ws.name, "resources": resources_view(ws.resources),
                                                 "limits": limits_view(agent, ws)})


@operation(Opcode.AGENT_STATUS, routes=[("GET", "/api/v1/status")])
async def agent_status(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    live_seq = agent.live.seq  # first: what changes after it, a subscriber asks for (after=live_seq)
    counts: dict[str, int] = {}
    for ws in agent.workspaces.values():
        if visible(agent, call.user, ws):
            counts[ws.status] = counts.get(ws.status, 0) + 1
    doc: dict[str, Any] = {
        "live_seq": live_seq,
        "agent": {
            "version": agent.version,
            "uptime_s": round(time.time() - agent.started_at, 1),
            "pid": os.getpid(),
            "user": call.user.name,
            "role": call.user.role,
        },
        "runtime": agent.runtime.describe(),
        "workspaces": counts,
    }
    for hook in agent.services.hooks.status:
        doc.update(await hook(agent, call))
    return Result("ok", "agent_status", doc)


# -- reconcile ----------------------------------------------------------------------------------


async def _refresh(agent: AgentContext, ws: Workspace) -> None:
    if ws.status not in ACTIVE or not ws.runtime_state:
        return
    await apply_status(agent, ws, await agent.runtime.poll(ws.runtime_state))


async def apply_status(agent: AgentContext, ws: Workspace, status: Status, state: State | None = None) -> bool:
    """Take the runtime's word for a workspace the agent holds as active (polled, or reported by
    the runtime's feed): ``running`` (with ``state``'s changes: a workload that moved), ``starting``
    (coming back: a restart in place; its message says why), else it ended: ``stopped``, or
    ``failed`` when it failed or vanished, with the runtime's message. Returns whether the record
    changed (it is then saved, which tells subscribers)."""
    if ws.status not in ACTIVE or not ws.runtime_state:
        return False
    if status.state in ("running", "starting"):
        new_state = {**ws.runtime_state, **{k: v for k, v in (state or {}).items() if v is not None}}
        message = "" if status.state == "running" else status.message
        url = (state or {}).get("url") or ws.url
        if (ws.status, ws.status_message, ws.runtime_state, ws.url) == (status.state, message, new_state, url):
            return False
        ws.status, ws.status_message, ws.runtime_state, ws.url = status.state, message, new_state, url
        await agent.save(ws)
        return True
    _release_host_resources(agent, ws)
    ws.status = "failed" if status.state in ("failed", "missing") else "stopped"
    ws.status_message = status.message
    ws.runtime_state, ws.url = None, None
    await agent.save(ws)
    return True


def _same_workload(a: State, b: State) -> bool:
    """Whether two runtime states name one workload (its pid and start, container or job)."""
    keys = ("pid", "start_time", "container_id", "job_id")
    return any(a.get(k) is not None for k in keys) and all(a.get(k) == b.get(k) for k in keys)


async def _end_workloads(agent: AgentContext, states: list[State]) -> None:
    for state in states:
        try:
            await agent.runtime.stop(state, grace=agent.runtime.stop_grace)
        except FetchmlError as exc:
            log.warning("could not end a workload (%s): %s", state, exc.message)


async def adopt_all(agent: AgentContext) -> None:
    """After a (re)start: keep what still runs, end what was half done, report what nobody knows.

    A workspace the agent left ``starting`` or ``stopping`` (it was killed in between) has every
    workload found for it ended (the recorded one and any the runtime discovers, such as a server
    spawned but not yet recorded) and says so: ``failed`` (start it again) or ``stopped``. A
    workload of a known workspace that is not its recorded one is ended too, so a restart never
    leaves two servers for one workspace.
    """
    known = {ws.id for ws in agent.workspaces.values()}
    discovered = await agent.runtime.discover()
    strays: dict[str, list[State]] = {}
    for wid, state in discovered:
        strays.setdefault(wid, []).append(state)
    for ws in agent.workspaces.values():
        if ws.status == "running" and ws.runtime_state:
            _hold_host_resources(agent, ws)
    for ws in list(agent.workspaces.values()):
        found = strays.get(ws.id, [])
        recorded = ws.runtime_state
        if ws.status in ("starting", "stopping"):
            before = ws.status
            await _end_workloads(agent, ([recorded] if recorded else [])
                                 + [s for s in found if not (recorded and _same_workload(s, recorded))])
            _release_host_resources(agent, ws)
            if before == "starting":
                ws.status = "failed"
                ws.status_message = (f"the agent stopped while this workspace was starting; "
                                     f"start it again: ml jupyter restart {ws.name}")
            else:
                ws.status, ws.status_message = "stopped", ""
            ws.runtime_state, ws.url = None, None
            await agent.save(ws)
            await agent.audit("agent", "workspace.ended", ws.name, was=before, workloads=len(found) + bool(recorded))
            continue
        extra = [s for s in found if not (ws.status == "running" and recorded and _same_workload(s, recorded))]
        if extra:
            await _end_workloads(agent, extra)
            await agent.audit("agent", "workspace.stray_ended", ws.name, workloads=len(extra))
        if ws.status not in ACTIVE:
            continue
        before = ws.status
        try:
            await _refresh(agent, ws)
        except FetchmlError as exc:
            ws.status_message = f"could not check after agent restart: {exc.message}"
            await agent.save(ws)
            continue
        if ws.status == "running":
            await agent.audit("agent", "workspace.adopt", ws.name, was=before)
        else:
            ws.status_message = ws.status_message or "was not running when the agent restarted"
            await agent.save(ws)
            await agent.audit("agent", "workspace.lost", ws.name, "error", reason=ws.status_message)
    agent.orphans = [wid for wid, _ in discovered if wid not in known]


async def reconcile_once(agent: AgentContext) -> None:
    """Poll each running workspace; nothing while the runtime's change feed is followed
    (:mod:`.live`: it reports every change)."""
    if agent.services.live is not None and agent.services.live.follows_runtime:
        return
    for ws in list(agent.workspaces.values()):
        lock = agent.lock(ws.name)
        if ws.status == "running" and not lock.locked():
            async with lock:
                try:
                    await _refresh(agent, ws)
                except FetchmlError:
                    continue

