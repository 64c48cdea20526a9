"""Day-two operations on a workspace: scale, reset, monitor, logs, git, notebook versions, optimize.

All of them go through the runtime interface (stop/start, stats, exec), so they work the same on
every runtime. Notebook versions live inside the workspace, under ``.fetchml/versions/``, so they
travel with its files.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

from ..errors import BackendError, InvalidArgument, InvalidState, NotFound
from ..protocol.opcodes import Opcode
from ..runtimes.base import Resources
from .access import EDIT, USE, VIEW, require
from .calls import Call, Result
from .context import AgentContext
from .registry import operation
from .views import browser_url, cpu_beyond_host, workspace_view
from .workspaces import ACTIVE, _resources, _start, _stop

if TYPE_CHECKING:
    from ..store.workspaces import Workspace

__all__ = ["GIT_VERBS"]

_NAME = {"name": {"type": "string", "required": True, "empty": False}}


def _running(ws: Workspace, what: str) -> None:
    if ws.status != "running" or not ws.runtime_state:
        raise InvalidState(f"workspace {ws.name} is {ws.status}: {what} needs it running", f"ml jupyter restart {ws.name}")


@operation(
    Opcode.SCALE_WORKSPACE,
    routes=[("POST", "/api/v1/jupyter/workspaces/{name}/scale")],
    schema={**_NAME, "cpu": {"type": ["number", "string"], "nullable": True, "default": None},
            "memory": {"type": ["string", "integer"], "nullable": True, "default": None},
            "gpu": {"type": ["integer", "string"], "nullable": True, "default": None},
            "disk": {"type": ["string", "integer"], "nullable": True, "default": None}},
)
async def scale_workspace(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    """New resources; a running workspace restarts so that its limits take effect."""
    ws = agent.find_workspace(args["name"])
    require(agent, call.user, ws, EDIT, "scaling")
    asked = {k: args[k] for k in ("cpu", "memory", "gpu", "disk") if args[k] is not None}
    if not asked:
        raise InvalidArgument("nothing to scale: give --cpu, --memory, --gpu or --disk")
    current = Resources.from_dict(ws.resources)
    base: dict[str, Any] = {"cpu": current.cpu, "memory": current.memory_mb, "gpu": current.gpu, "disk": current.disk_mb}
    if str(asked.get("gpu", current.gpu)) != "0":
        base["gpu_type"] = current.gpu_type  # scaling to no GPU drops the type  (issue #18)
    new = _resources(asked, base)
    beyond = cpu_beyond_host(agent, new.cpu)
    if beyond:
        await call.progress(f"warning: {beyond}")
    async with agent.lock(ws.name):
        old = dict(ws.resources)
        was_running = ws.status == "running"
        if agent.services.capacity is not None:  # refused before anything stops (docs/capacity.md)
            agent.services.capacity.check_quota(ws, new, new=False, running=was_running)
        ws.resources = new.to_dict()
        await agent.save(ws)
        if was_running:
            await call.progress("restarting with the new resources")
            await _stop(agent, ws)
            try:
                await _start(agent, call, ws, restart=True)
            except Exception:
                ws.resources = old  # keep what worked; the start error says why
                await agent.save(ws)
                raise
    await agent.audit(call.user.name, "workspace.scale", ws.name, before=old, after=ws.resources)
    return Result(f"scaled workspace {ws.name}", "workspace", workspace_view(agent, ws, call.user))


@operation(
    Opcode.RESET_WORKSPACE,
    routes=[("POST", "/api/v1/jupyter/workspaces/{name}/reset")],
    schema={**_NAME, "hard": {"type": "boolean", "default": False}},
)
async def reset_workspace(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    """Soft: stop everything (kernels included) and start clean. Hard: also discard every package
    installed into the workspace's environment. Files are kept either way."""
    ws = agent.find_workspace(args["name"])
    require(agent, call.user, ws, EDIT, "resetting")
    async with agent.lock(ws.name):
        await call.progress("stopping JupyterLab and its kernels")
        was_running = ws.status in ACTIVE
        await _stop(agent, ws)
        if args["hard"]:
            await call.progress("discarding the workspace's installed packages")
            await agent.runtime.reset_environment(agent.workspace_spec(ws), None)
            for hook in agent.services.hooks.reset:
                await hook(agent, call, ws)
        await _start(agent, call, ws, restart=was_running)
    await agent.audit(call.user.name, "workspace.reset", ws.name, hard=args["hard"])
    return Result(f"reset workspace {ws.name}{' (hard)' if args['hard'] else ''}", "workspace", workspace_view(agent, ws, call.user))


@operation(
    Opcode.MONITOR_WORKSPACE,
    routes=[],
    schema={**_NAME, "interval": {"type": "number", "coerce": float, "min": 0.2, "max": 3600, "default": 2.0},
            "count": {"type": "integer", "coerce": int, "min": 1, "max": 100000, "default": 10}},
)
async def monitor_workspace(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    """``count`` samples of resource use, one log packet (a JSON line) every ``interval`` s."""
    ws = agent.find_workspace(args["name"])
    require(agent, call.user, ws, VIEW, "monitoring")
    for i in range(args["count"]):
        _running(ws, "monitoring")
        sample = await agent.runtime.stats(ws.runtime_state or {})
        sample = {"t": round(time.time(), 3), "name": ws.name, **sample}
        await call.log((json.dumps(sample, sort_keys=True) + "\n").encode())
        if i + 1 < args["count"]:
            await asyncio.sleep(args["interval"])
    return Result(f"{args['count']} samples")


@operation(
    Opcode.WORKSPACE_LOGS,
    routes=[("GET", "/api/v1/jupyter/workspaces/{name}/logs")],
    schema={**_NAME, "lines": {"type": "integer", "coerce": int, "min": 1, "max": 10000, "default": 100}},
)
async def workspace_logs(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    ws = agent.find_workspace(args["name"])
    require(agent, call.user, ws, USE, "reading the server log of")
    path = (ws.runtime_state or {}).get("log") or str(agent.data_dir / "logs" / f"{ws.id}.log")
    try:
        with open(path, "rb") as fh:
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        text = ""
    lines = text.splitlines()[-args["lines"]:]
    return Result(ws.name, "workspace_logs", {"name": ws.name, "lines": lines})


GIT_VERBS = {"init", "add", "commit", "status", "log", "diff", "branch", "checkout", "restore", "show"}


@operation(
    Opcode.WORKSPACE_GIT,
    routes=[("POST", "/api/v1/jupyter/workspaces/{name}/git")],
    schema={**_NAME, "args": {"type": "list", "required": True, "minlength": 1, "schema": {"type": "string"}}},
)
async def workspace_git(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    """``ml jupyter git WS VERB ...``: git inside the workspace's directory, in its environment."""
    ws = agent.find_workspace(args["name"])
    git_args: list[str] = args["args"]
    verb = git_args[0]
    if verb not in GIT_VERBS:
        raise InvalidArgument(f"git {verb} is not available here", "allowed: " + ", ".join(sorted(GIT_VERBS)))
    if any(a.startswith(("--exec-path", "-c", "--config-env", "--upload-pack", "--receive-pack")) for a in git_args):
        raise InvalidArgument("git options that run other programs or change git's configuration are refused")
    require(agent, call.user, ws, VIEW if verb in ("status", "log", "diff", "show") else EDIT, f"git {verb}")
    argv = ["git", "-c", f"user.name={call.user.name}", "-c", f"user.email={call.user.name}@fetchml.local", *git_args]
    result = await agent.runtime.exec(agent.workspace_spec(ws), ws.runtime_state, argv, None, {"GIT_TERMINAL_PROMPT": "0"}, 120)
    output = result.output.decode("utf-8", errors="replace")
    if verb not in ("status", "log", "diff", "show"):
        await agent.audit(call.user.name, f"git.{verb}", ws.name, "ok" if result.exit_code == 0 else "error", args=git_args)
    if result.exit_code != 0:
        raise BackendError(f"git {verb} failed with exit code {result.exit_code}", output[-2000:])
    return Result(output, "git", {"name": ws.name, "exit_code": result.exit_code, "output": output})


_VERSION_SCRIPT = r"""
import hashlib, json, os, shutil, sys, time
action, notebook, arg = sys.argv[1], sys.argv[2], sys.argv[3]
root = os.path.realpath(".")
src = os.path.realpath(notebook)
if not src.startswith(root + os.sep):
    print(json.dumps({"error": "the notebook must be inside the workspace"})); sys.exit(3)
rel = os.path.relpath(src, root)
vdir = os.path.join(root, ".fetchml", "versions", rel)
os.makedirs(vdir, exist_ok=True)
index_path = os.path.join(vdir, "index.json")
index = json.load(open(index_path)) if os.path.exists(index_path) else []
def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()
def save(note):
    if not os.path.exists(src):
        print(json.dumps({"error": "no such notebook: " + rel})); sys.exit(4)
    h = digest(src)
    if index and index[-1]["sha256"] == h:
        return index[-1], False
    n = (index[-1]["version"] + 1) if index else 1
    shutil.copy2(src, os.path.join(vdir, "%d.ipynb" % n))
    entry = {"version": n, "sha256": h, "saved_at": time.time(), "size": os.path.getsize(src), "note": note}
    index.append(entry)
    json.dump(index, open(index_path, "w"), indent=1)
    return entry, True
if action == "save":
    entry, new = save(arg)
    print(json.dumps({"notebook": rel, "saved": new, "version": entry}))
elif action == "list":
    print(json.dumps({"notebook": rel, "versions": index}))
elif action == "restore":
    want = int(arg)
    match = [e for e in index if e["version"] == want]
    if not match:
        print(json.dumps({"error": "no version %d of %s" % (want, rel)})); sys.exit(4)
    if os.path.exists(src):
        save("before restoring version %d" % want)
    shutil.copy2(os.path.join(vdir, "%d.ipynb" % want), src)
    print(json.dumps({"notebook": rel, "restored": want, "versions": index}))
"""


@operation(
    Opcode.NOTEBOOK_VERSION,
    routes=[("POST", "/api/v1/jupyter/workspaces/{name}/versions")],
    schema={**_NAME, "notebook": {"type": "string", "required": True, "empty": False},
            "action": {"type": "string", "allowed": ["save", "list", "restore"], "default": "save"},
            "version": {"type": "integer", "coerce": int, "nullable": True, "default": None},
            "note": {"type": "string", "default": ""}},
)
async def notebook_version(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    """Save, list or restore versions of a notebook (``ml jupyter version WS nb.ipynb``)."""
    ws = agent.find_workspace(args["name"])
    action = args["action"]
    require(agent, call.user, ws, VIEW if action == "list" else EDIT, f"notebook version {action}")
    if action == "restore" and args["version"] is None:
        raise InvalidArgument("say which version to restore: --restore N")
    arg = str(args["version"]) if action == "restore" else args["note"]
    argv = ["python", "-c", _VERSION_SCRIPT, action, args["notebook"], arg]
    result = await agent.runtime.exec(agent.workspace_spec(ws), ws.runtime_state, argv, None, None, 60)
    try:
        doc = json.loads(result.output.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise BackendError("notebook versioning failed", result.output.decode(errors="replace")[-1000:]) from None
    if "error" in doc:
        raise (InvalidArgument if result.exit_code == 3 else NotFound)(doc["error"])
    if action != "list":
        await agent.audit(call.user.name, f"notebook.{action}", ws.name, notebook=doc["notebook"],
                          version=doc.get("version", {}).get("version") if action == "save" else args["version"])
    return Result(json.dumps(doc), "notebook_versions", doc)


@operation(
    Opcode.OPTIMIZE_WORKSPACE,
    routes=[("POST", "/api/v1/jupyter/workspaces/{name}/optimize")],
    schema={**_NAME, "apply": {"type": "boolean", "default": False},
            "idle_minutes": {"type": "number", "coerce": float, "min": 0, "default": 60}},
)
async def optimize_workspace(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    """Compare use with limits and find idle kernels; with ``apply``, shut the idle kernels down."""
    ws = agent.find_workspace(args["name"])
    require(agent, call.user, ws, EDIT if args["apply"] else VIEW, "optimizing")
    _running(ws, "optimize")
    stats = await agent.runtime.stats(ws.runtime_state or {})
    res = Resources.from_dict(ws.resources)
    advice: list[str] = []
    mem = stats.get("memory_bytes")
    if mem and res.memory_mb:
        used = mem / (res.memory_mb * 1024 * 1024)
        if used > 0.9:
            advice.append(f"memory is {used:.0%} of the limit: ml jupyter scale {ws.name} --memory={int(res.memory_mb * 2 / 1024) or 1}g")
        elif used < 0.2 and res.memory_mb >= 2048:
            advice.append(f"memory use is {used:.0%} of the limit: a smaller --memory would free capacity for others")
    elif mem and not res.memory_mb:
        advice.append("no memory limit is set: ml jupyter scale " + ws.name + " --memory=... protects the host")
    kernels = await _kernels(ws)
    cutoff = time.time() - args["idle_minutes"] * 60
    idle = [k for k in kernels if k.get("execution_state") == "idle" and _ts(k.get("last_activity")) < cutoff]
    shut: list[str] = []
    if idle:
        advice.append(f"{len(idle)} kernel(s) idle for more than {args['idle_minutes']:.0f} min")
        if args["apply"]:
            for k in idle:
                await _kernel_delete(ws, k["id"])
                shut.append(k["id"])
            await agent.audit(call.user.name, "workspace.optimize", ws.name, kernels_shut_down=len(shut))
    advice = advice or ["nothing to do"]
    doc = {"name": ws.name, "stats": stats, "kernels": len(kernels), "idle_kernels": [k["id"] for k in idle],
           "shut_down": shut, "advice": advice}
    return Result("; ".join(advice), "optimize", doc)


def _ts(value: Any) -> float:
    import datetime

    if not value:
        return 0.0
    try:
        return datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


async def _kernels(ws: Workspace) -> list[dict[str, Any]]:
    import httpx

    if not ws.url or not browser_url(ws) or ws.password_hash:
        return []  # a password-only server gives the agent no API access: nothing to inspect
    headers = {"Authorization": f"token {ws.token}"}
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            r = await client.get(ws.url + "api/kernels", headers=headers)
            r.raise_for_status()
            return list(r.json())
    except httpx.HTTPError as exc:
        raise BackendError(f"could not list the kernels of {ws.name}", str(exc)) from None


async def _kernel_delete(ws: Workspace, kernel_id: str) -> None:
    import httpx

    async with httpx.AsyncClient(timeout=10) as client:
        await client.delete(f"{ws.url}api/kernels/{kernel_id}", headers={"Authorization": f"token {ws.token}"})
