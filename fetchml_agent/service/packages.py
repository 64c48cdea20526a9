"""Packages: install, list, check, request/review/approve/deny, clear-cache, security-scan.

Opcodes ``0x30``–``0x38`` (and their HTTP routes) on top of the policy engine
(:mod:`fetchml_agent.policy`). Per agent, :class:`PackageService` holds the global policy
(agent.yaml ``package_management:`` with the ``FETCHML_JUPYTER_*`` overrides), each workspace's
effective policy (tightened by its ``security:`` and by a ``workspace-security.yaml`` in its
directory), the approved requests, and the filtering package index mounted at ``/index``.

Every workspace's installers point at its own index,
``{base}/index/{ws.index_key}/simple/``, where ``base`` is the runtime's
:class:`~fetchml_agent.runtimes.base.PackageIndexReach` base URL when it has one (the docker and
nomad runtimes: an address their workspaces can reach), else agent.yaml ``public_url``, else the
listen address. The variables
(``PIP_INDEX_URL``, uv's, ``PIP_CONFIG_FILE``, ``CONDARC``, ``PIP_CACHE_DIR``) come from a
``workspace_env_hooks`` entry; the files they name are written under
``DATA_DIR/packages/<workspace id>/`` on the agent's host: a runtime whose workspaces run
elsewhere mounts that directory at the same path (or rewrites the variables).

Hooks registered in :func:`setup`: the startup scan (a blocked package already in the environment
stops the start: ``before_start_hooks`` where the runtime can look before the workload runs
(``capabilities.package_scan``), else ``after_start_hooks``, which stop the workload again), validation of a new workspace's ``security:`` and
``environment:`` (``create_hooks``), cleanup on delete and ``reset --hard``, the ``ml status``
section, and the index's start/shutdown. Every decision, allow or deny, writes one audit event
(``package.decision``; ``package.index`` for what the index decides while pip runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import re
import secrets
import shlex
import shutil
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..aio import run_blocking
from ..errors import (
    ApprovalRequired,
    BackendError,
    FetchmlError,
    InvalidArgument,
    InvalidState,
    NotFound,
    NotSupported,
    PermissionDenied,
    PolicyDenied,
)
from ..policy.engine import (
    ALLOW,
    APPROVAL_REQUIRED,
    DENY,
    Approvals,
    Decision,
    check_requirements,
    decide,
    decide_name,
)
from ..policy.index import (
    IndexContext,
    IndexService,
    default_upstream,
    make_index_app,
    workspace_index_config,
)
from ..policy.names import normalize_name
from ..policy.scan import (
    SCAN_ARGV,
    blocked_installed,
    check_startup,
    installed_from_json,
)
from ..policy.schema import (
    STARTUP_BLOCKED_ENV,
    PackagePolicy,
    WorkspaceSecurity,
    apply_environ,
    effective_policy,
    load_workspace_security_file,
    policy_from_document,
    workspace_security_from_document,
)
from ..policy.specs import PackageSpec, SpecKind, parse_spec
from ..protocol.opcodes import Opcode
from ..runtimes.base import PackageIndexReach, PackageInventory, capability, find_capability
from ..store.packages import (
    InstallRecord,
    add_request,
    approved_requests,
    clear_installs,
    decide_request,
    list_installs,
    list_requests,
    record_installs,
)
from . import Call, Result, operation
from .access import EDIT, USE, VIEW, require

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from ..agent import Agent
    from ..store.workspaces import Workspace

__all__ = ["SECURITY_FILE", "PackageService", "service", "setup"]

log = logging.getLogger("fetchml.packages")

#: A workspace's own tightening of the policy, read from its directory when present.
SECURITY_FILE = "workspace-security.yaml"
INSTALL_TIMEOUT = 3600.0
SCAN_TIMEOUT = 120.0
#: Rules an admin's ``--force`` overrides: the package lists, never the install source or channel.
FORCEABLE = frozenset({"blocked_packages", "approval_required", "allowlist"})
#: Variables a workspace's ``environment:`` may not set: they choose where installers fetch from.
_INSTALLER_VARIABLES = ("PIP_", "UV_", "CONDA")
_INDEX_AUDIT_TTL = 60.0

_REPORT_MARK = b"@@fetchml-pip-report@@ "
# Runs inside the workspace with its Python: ``python -m pip install --report FILE ...`` in this same
# process (one interpreter start, not two), then one marker line with what pip installed, so the
# agent records exactly that.
_PIP_WRAPPER = (
    "import json, os, runpy, sys, tempfile\n"
    "fd, path = tempfile.mkstemp(prefix='fetchml-pip-report-', suffix='.json')\n"
    "os.close(fd)\n"
    "sys.argv = ['pip', 'install', '--report', path] + sys.argv[1:]\n"
    "code = 0\n"
    "try:\n"
    "    runpy.run_module('pip', run_name='__main__', alter_sys=True)\n"
    "except SystemExit as exc:\n"
    "    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)\n"
    "try:\n"
    "    if code == 0:\n"
    "        with open(path, encoding='utf-8') as fh:\n"
    "            report = json.load(fh)\n"
    "        items = [{'name': i['metadata']['name'], 'version': i['metadata']['version'],\n"
    "                  'requested': bool(i.get('requested'))} for i in report.get('install', [])]\n"
    "        sys.stdout.write('\\n@@fetchml-pip-report@@ ' + json.dumps(items) + '\\n')\n"
    "        sys.stdout.flush()\n"
    "finally:\n"
    "    os.unlink(path)\n"
    "sys.exit(code)\n"
)
_CONDA_SCRIPT = ('command -v conda >/dev/null 2>&1 || { echo "conda: command not found" >&2; exit 127; }; '
                 'exec conda install --yes "$@"')


def service(agent: Agent) -> PackageService:
    """The agent's :class:`PackageService` (made by :func:`setup`)."""
    svc: PackageService = agent.extensions["packages"]
    return svc


def _outcome(d: Decision) -> str:
    return "dry_run" if d.would_have is not None else d.decision


class PackageService:
    """Per-agent package state: policies, approvals, the index, forced installs in progress."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        config = agent.config
        source = str(config.path) if config.path else "agent.yaml"
        self.global_policy = apply_environ(
            policy_from_document(config.raw.get("package_management"), source=source), config.environ)
        section = config.section("package_index")
        self.configured_upstream: str | None = section.get("upstream")
        cache = Path(section.get("cache_dir") or config.data_dir / "index-cache").expanduser()
        if not cache.is_absolute():
            cache = (config.path.parent if config.path else Path.cwd()) / cache
        self.cache_dir = cache
        self._app: Starlette | None = None
        self._app_lock = asyncio.Lock()
        self._app_task: asyncio.Task[Any] | None = None
        self._security: dict[str, WorkspaceSecurity] = {}
        # ws.id -> (mtime_ns of workspace-security.yaml or None, last good overlay, error)
        self._files: dict[str, tuple[int | None, WorkspaceSecurity | None, InvalidArgument | None]] = {}
        self._policies: dict[str, tuple[int | None, PackagePolicy]] = {}
        self._approvals: dict[tuple[str, bool], Approvals] = {}
        self._approved_rows: dict[tuple[str, bool], list[tuple[str, str]]] = {}
        self._forced: dict[str, frozenset[str]] = {}
        self._watch: dict[str, list[Decision]] = {}
        self._by_key: dict[str, str] = {}
        self._build_keys: set[str] = set()  # live keys of build_index_url()
        self._audited: dict[tuple[str | None, str | None, str, str], float] = {}
        # The index's upstream client logs every request at INFO; the index logs its refusals itself.
        logging.getLogger("httpx").setLevel(logging.WARNING)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        rows = await self.agent.store.run(approved_requests)
        for ws_id, package, specifier, conda in rows:
            self._approved_rows.setdefault((ws_id, conda), []).append((package, specifier))
        # Build the index in the background: finding the default upstream asks pip (~0.5 s).
        self._app_task = asyncio.create_task(self.index_app(), name="package-index")

    async def close(self) -> None:
        if self._app_task is not None and not self._app_task.done():
            self._app_task.cancel()
        if self._app is not None:
            await self._app.state.index.aclose()

    # -- the index ------------------------------------------------------------------------------

    async def index_app(self) -> Starlette:
        """The filtering index app, made on first use (see :meth:`start`)."""
        if self._app is None:
            async with self._app_lock:
                if self._app is None:
                    upstream = self.configured_upstream
                    if not upstream:
                        # pip's own configuration decides the default, so pip must see this
                        # process's real environment (HOME, PIP_*), not only the seed's variables.
                        upstream = await run_blocking(default_upstream, dict(os.environ))
                    self._app = make_index_app(upstream=upstream, cache_dir=self.cache_dir, resolve=self._resolve,
                                               on_decision=self._on_decision)
        return self._app

    async def index(self) -> IndexService:
        service_: IndexService = (await self.index_app()).state.index
        return service_

    def mount(self) -> Callable[[dict[str, Any], Any, Any], Awaitable[None]]:
        """The ASGI app mounted at ``/index``: forwards to the index once it is made."""

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            await (await self.index_app())(scope, receive, send)

        return app

    def base_url(self) -> str:
        """Where workspaces reach the agent: the runtime's :class:`PackageIndexReach` base URL,
        else agent.yaml ``public_url``, else the listen address (a wildcard becomes 127.0.0.1)."""
        config = self.agent.config
        reach = find_capability(self.agent.runtime, PackageIndexReach)
        url = reach.index_base_url(config.scheme) if reach is not None else None
        if url:
            return str(url).rstrip("/")
        if config.raw.get("public_url"):
            return str(config.raw["public_url"]).rstrip("/")
        host = config.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"{config.scheme}://{host}:{config.port}"

    def index_url(self, ws: Workspace) -> str:
        return f"{self.base_url()}/index/{ws.index_key}/simple/"

    def files_dir(self, ws: Workspace) -> Path:
        return self.agent.data_dir / "packages" / ws.id

    def shares_files(self) -> bool:
        """Whether workspaces see the agent's files (``capabilities.host_files``: local): then their
        environment also names the pip.conf, .condarc and pip cache under :meth:`files_dir`."""
        return self.agent.runtime.capabilities.host_files

    def workspace_env(self, ws: Workspace) -> dict[str, str]:
        """The variables that point a workspace's pip, uv and conda at its index."""
        if not self.shares_files():
            return workspace_index_config(self.index_url(ws), self.global_policy).env
        d = self.files_dir(ws)
        # Only the .condarc depends on the policy, and it is written by write_index_files.
        cfg = workspace_index_config(self.index_url(ws), self.global_policy, pip_conf_path=str(d / "pip.conf"),
                                     condarc_path=str(d / "condarc"))
        return {**cfg.env, "PIP_CACHE_DIR": str(d / "pip-cache")}

    def write_index_files(self, ws: Workspace, policy: PackagePolicy) -> None:
        """Writes the workspace's pip.conf and .condarc (blocking: run it off the loop)."""
        if not self.shares_files():
            return
        d = self.files_dir(ws)
        cfg = workspace_index_config(self.index_url(ws), policy, pip_conf_path=str(d / "pip.conf"),
                                     condarc_path=str(d / "condarc"))
        d.mkdir(parents=True, exist_ok=True)
        for name, text in (("pip.conf", cfg.pip_conf), ("condarc", cfg.condarc)):
            path = d / name
            if not path.is_file() or path.read_text() != text:
                tmp = path.with_suffix(".tmp")
                tmp.write_text(text)
                os.replace(tmp, path)

    def _workspace_by_key(self, key: str) -> Workspace | None:
        name = self._by_key.get(key)
        ws = self.agent.workspaces.get(name) if name else None
        if ws is None or ws.index_key != key:
            self._by_key = {w.index_key: w.name for w in self.agent.workspaces.values()}
            name = self._by_key.get(key)
            ws = self.agent.workspaces.get(name) if name else None
        return ws

    @contextlib.contextmanager
    def build_index_url(self) -> Iterator[str]:
        """An index URL for one image build (``ml jupyter build``): the agent-wide policy, no
        workspace's approvals; its key is random and stops working when the block ends."""
        key = "build-" + secrets.token_urlsafe(16)
        self._build_keys.add(key)
        try:
            yield f"{self.base_url()}/index/{key}/simple/"
        finally:
            self._build_keys.discard(key)

    async def _resolve(self, key: str) -> IndexContext | None:
        if key in self._build_keys:
            return IndexContext(self.global_policy, Approvals(), None)
        ws = self._workspace_by_key(key)
        if ws is None:
            return None
        policy = self.policy_for(ws, strict=False)
        forced = self._forced.get(ws.id)
        if forced:
            policy = _without(policy, forced)
        return IndexContext(policy, self.approvals(ws), ws.name)

    async def _on_decision(self, ctx: IndexContext, decision: Decision) -> None:
        ws = self.agent.workspaces.get(ctx.workspace or "")
        if ws is not None and ws.id in self._watch and (decision.decision != ALLOW or decision.would_have):
            self._watch[ws.id].append(decision)
        # A page and then its files ask about the same name: one audit event per minute is enough.
        key = (ctx.workspace, decision.package, decision.decision, decision.rule)
        now = time.monotonic()
        if now - self._audited.get(key, -_INDEX_AUDIT_TTL) < _INDEX_AUDIT_TTL:
            return
        if len(self._audited) > 10000:
            self._audited = {k: t for k, t in self._audited.items() if now - t < _INDEX_AUDIT_TTL}
        self._audited[key] = now
        await self.agent.audit("index", "package.index", ctx.workspace, _outcome(decision), via="index",
                               **_decision_details(decision))

    # -- policy ---------------------------------------------------------------------------------

    def security(self, ws: Workspace) -> WorkspaceSecurity:
        """The workspace's ``security:`` overlay (validated when it was created)."""
        overlay = self._security.get(ws.id)
        if overlay is None:
            overlay = workspace_security_from_document(ws.config.get("security") or None,
                                                       source=f"workspace {ws.name}", key="security")
            self._security[ws.id] = overlay
        return overlay

    def _file_overlay(self, ws: Workspace) -> tuple[int | None, WorkspaceSecurity | None, InvalidArgument | None]:
        path = Path(ws.path) / SECURITY_FILE
        try:
            mtime: int | None = path.stat().st_mtime_ns
        except OSError:
            mtime = None
        hit = self._files.get(ws.id)
        if hit is not None and hit[0] == mtime:
            return hit
        entry: tuple[int | None, WorkspaceSecurity | None, InvalidArgument | None] = (None, None, None)
        if mtime is not None:
            # A small file in the workspace, read only when it changes.
            try:
                entry = (mtime, load_workspace_security_file(path), None)
            except InvalidArgument as exc:
                entry = (mtime, hit[1] if hit else None, exc)
        self._files[ws.id] = entry
        return entry

    def policy_for(self, ws: Workspace, *, strict: bool = True) -> PackagePolicy:
        """The effective policy of ``ws``: global, tightened by ``security:`` and its file.

        ``strict``: an invalid ``workspace-security.yaml`` raises :class:`InvalidArgument` naming
        the file and key; otherwise (the index) the last valid version of the file applies.
        """
        mtime, overlay, error = self._file_overlay(ws)
        if error is not None and strict:
            raise error
        hit = self._policies.get(ws.id)
        if hit is not None and hit[0] == mtime:
            return hit[1]
        policy = effective_policy(self.global_policy, self.security(ws), overlay)
        self._policies[ws.id] = (mtime, policy)
        return policy

    def approvals(self, ws: Workspace, conda: bool = False) -> Approvals:
        key = (ws.id, conda)
        found = self._approvals.get(key)
        if found is None:
            found = self._approvals[key] = Approvals(self._approved_rows.get(key, ()))
        return found

    def add_approval(self, ws_id: str, package: str, specifier: str, conda: bool) -> None:
        self._approved_rows.setdefault((ws_id, conda), []).append((package, specifier))
        self._approvals.pop((ws_id, conda), None)

    def forget(self, ws: Workspace) -> None:
        caches: tuple[dict[str, Any], ...] = (self._security, self._files, self._policies, self._forced, self._watch)
        for cache in caches:
            cache.pop(ws.id, None)
        for conda in (False, True):
            self._approvals.pop((ws.id, conda), None)
            self._approved_rows.pop((ws.id, conda), None)
        self._by_key.pop(ws.index_key, None)

    # -- what is installed ----------------------------------------------------------------------

    async def scan_environment(self, ws: Workspace, state: dict[str, Any] | None = None) -> list[tuple[str, str]]:
        """Every distribution the workspace's Python sees, from inside the workspace."""
        from .workspaces import spec_for

        result = await self.agent.runtime.exec(spec_for(self.agent, ws), state or ws.runtime_state,
                                               ["python3", *SCAN_ARGV], None, None, SCAN_TIMEOUT)
        text = result.output.decode("utf-8", errors="replace")
        if result.exit_code != 0:
            raise BackendError(f"could not list the packages of workspace {ws.name} (exit code {result.exit_code})",
                               text[-1500:])
        return installed_from_json(text.strip().splitlines()[-1] if text.strip() else "")

    def scans_before_start(self) -> bool:
        """Whether the startup scan can run before the workload starts (``capabilities.package_scan``:
        the workspace's own layer on this host, or its image). Otherwise it runs inside the started
        workspace."""
        return self.agent.runtime.capabilities.package_scan != "workload"

    async def startup_installed(self, ws: Workspace, state: dict[str, Any] | None = None) -> tuple[list[tuple[str, str]], str]:
        """What the startup scan looks at, and its scope: what the runtime's
        :class:`PackageInventory` lists before the start (the workspace's own layer: local; its
        image: docker), or the environment of the workload just started (``state``)."""
        from .workspaces import spec_for

        if self.scans_before_start():
            found = await capability(self.agent.runtime, PackageInventory).inventory(spec_for(self.agent, ws))
            return found.packages, found.scope
        return await self.scan_environment(ws, state), "environment"

    async def inventory(self, ws: Workspace) -> dict[str, Any]:
        """Installed packages with where they are and who installed them (``ml jupyter packages``)."""
        from .workspaces import spec_for

        records = {r.name: r for r in await self.agent.store.run(list_installs, ws.id)}
        whole = await self.scan_environment(ws)
        # On a runtime whose workspaces are their own layer over a shared base (package_scan
        # "host": the local venv), that layer is listed apart from the base.
        over_base = self.agent.runtime.capabilities.package_scan == "host"
        layer: dict[str, tuple[str, str]] = {}
        if over_base:
            own = await capability(self.agent.runtime, PackageInventory).inventory(spec_for(self.agent, ws))
            for n, v in own.packages:
                layer.setdefault(normalize_name(n), (n, v))
        rows: dict[str, dict[str, Any]] = {}
        for key, (n, v) in layer.items():
            rows[key] = {"name": n, "version": v, "location": "workspace"}
        for n, v in whole:  # sys.path order: the first one found is the one imported
            key = normalize_name(n)
            if key not in rows:
                rows[key] = {"name": n, "version": v, "location": "base" if over_base else "environment"}
        for key, row in rows.items():
            rec = records.get(key)
            row["normalized"] = key
            row.update({"installed_by": None, "installed_at": None, "spec": None, "forced": False,
                        "installer": None, "requested": None})
            if rec is not None and (rec.version in ("", row["version"])):
                row.update({"installed_by": rec.installed_by, "installed_at": rec.installed_at, "spec": rec.spec or None,
                            "forced": rec.forced, "installer": rec.installer, "requested": rec.requested})
        scope = "workspace layer over a shared base" if over_base else "environment"
        return {"workspace": ws.name, "scope": scope, "runtime": self.agent.runtime.name,
                "packages": sorted(rows.values(), key=lambda r: r["normalized"])}


def _without(policy: PackagePolicy, names: frozenset[str]) -> PackagePolicy:
    """``policy`` with ``names`` taken off its lists (an admin's ``--force``, for one install)."""
    allowlist = None if policy.allowlist is None else policy.allowlist | names
    return dataclasses.replace(policy, blocked_packages=policy.blocked_packages - names,
                               approval_required=policy.approval_required - names, allowlist=allowlist)


def _decision_details(d: Decision) -> dict[str, Any]:
    out: dict[str, Any] = {"spec": d.spec, "package": d.package, "decision": d.decision, "rule": d.rule,
                           "reason": d.reason}
    if d.would_have is not None:
        out["would_have"] = d.would_have
    return out


async def _audit_decision(agent: Agent, call: Call, ws: Workspace | None, d: Decision, via: str,
                          **extra: Any) -> None:
    await agent.audit(call.user.name, "package.decision", ws.name if ws else None, _outcome(d), via=via,
                      **_decision_details(d), **extra)


def _refusal(refused: list[Decision], what: str) -> FetchmlError:
    """One error for the refused decisions: a denial wins over a needed approval."""
    denied = [d for d in refused if d.decision == DENY]
    first = (denied or refused)[0]
    others = [d for d in refused if d is not first]
    details = "; ".join(f"{d.spec}: {d.reason}" for d in others)
    cls = PolicyDenied if first.decision == DENY else ApprovalRequired
    return cls(f"{what}: {first.reason}", details, package=first.package, rule=first.rule, spec=first.spec)


# -- hooks ----------------------------------------------------------------------------------------


async def _validate_new_workspace(agent: Agent, call: Call, ws: Workspace) -> None:
    workspace_security_from_document(ws.config.get("security") or None, source=f"workspace {ws.name}", key="security")
    bad = sorted(k for k in (ws.config.get("env") or {}) if k.startswith(_INSTALLER_VARIABLES))
    if bad:
        raise InvalidArgument(
            f"environment: {', '.join(bad)} would change where installers fetch packages from",
            "the agent points pip, uv and conda at the workspace's own package index; remove these from the "
            "workspace config's or template's environment:")


async def _startup_scan(agent: Agent, call: Call, ws: Workspace) -> None:
    svc = service(agent)
    policy = svc.policy_for(ws)
    await run_blocking(svc.write_index_files, ws, policy)
    if svc.scans_before_start():
        await _check_startup(agent, call, ws, policy, None)


async def _startup_scan_inside(agent: Agent, call: Call, ws: Workspace, state: dict[str, Any]) -> None:
    svc = service(agent)
    if not svc.scans_before_start():
        await _check_startup(agent, call, ws, svc.policy_for(ws), state)


async def _check_startup(agent: Agent, call: Call, ws: Workspace, policy: PackagePolicy,
                         state: dict[str, Any] | None) -> None:
    if not policy.startup_scan_list:
        return
    installed, scope = await service(agent).startup_installed(ws, state)
    try:
        check_startup(installed, policy, workspace=ws.name)
    except PolicyDenied as exc:
        await agent.audit(call.user.name, "package.startup_scan", ws.name, "denied", scope=scope,
                          packages=exc.fields.get("packages"), variable=STARTUP_BLOCKED_ENV)
        raise


async def _forget_workspace(agent: Agent, call: Call, ws: Workspace) -> None:
    svc = service(agent)
    svc.forget(ws)
    await run_blocking(shutil.rmtree, svc.files_dir(ws), True)


async def _reset_hard(agent: Agent, call: Call, ws: Workspace) -> None:
    await agent.store.run(clear_installs, ws.id)


async def _status(agent: Agent, call: Call) -> dict[str, Any]:
    svc = service(agent)
    doc: dict[str, Any] = {
        "mode": svc.global_policy.mode,
        "blocked_packages": len(svc.global_policy.blocked_packages),
        "startup_scan": sorted(svc.global_policy.startup_scan_list) if svc.global_policy.startup_scan else "off",
        "upstream": svc._app.state.index.upstream if svc._app is not None else svc.configured_upstream,
    }
    if call.user.is_admin:
        doc["pending_requests"] = len(await agent.store.run(lambda c: list_requests(c, status="pending")))
    return {"packages": doc}


async def _start(agent: Agent) -> None:
    await service(agent).start()


async def _close(agent: Agent) -> None:
    await service(agent).close()


def setup(agent: Agent) -> None:
    """Makes the agent's :class:`PackageService` and registers its hooks and the ``/index`` mount.

    Raises :class:`InvalidArgument` when agent.yaml's ``package_management:`` or a
    ``FETCHML_JUPYTER_*`` variable is invalid (the message names the file and key, or the variable).
    """
    svc = PackageService(agent)
    ext = agent.extensions
    ext["packages"] = svc
    ext.setdefault("mounts", []).append(("/index", svc.mount()))
    ext.setdefault("create_hooks", []).append(_validate_new_workspace)
    ext.setdefault("before_start_hooks", []).append(_startup_scan)
    ext.setdefault("after_start_hooks", []).append(_startup_scan_inside)
    ext.setdefault("workspace_env_hooks", []).append(lambda a, ws: service(a).workspace_env(ws))
    ext.setdefault("delete_hooks", []).append(_forget_workspace)
    ext.setdefault("reset_hooks", []).append(_reset_hard)
    ext.setdefault("status_hooks", []).append(_status)
    ext.setdefault("start_hooks", []).append(_start)
    ext.setdefault("shutdown_hooks", []).append(_close)


# -- arguments ------------------------------------------------------------------------------------


def _flag(value: Any) -> Any:
    """Booleans from JSON, or from an HTTP query string (``?pending=true``)."""
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off", ""):
            return False
    return value


def _text(value: Any) -> Any:
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


_NAME = {"name": {"type": "string", "required": True, "empty": False}}
_BOOL = {"type": "boolean", "coerce": _flag, "default": False}
_SPEC_KEYS: dict[str, Any] = {
    "spec": {"type": "string", "nullable": True, "default": None},
    "package": {"type": "string", "nullable": True, "default": None},
    "version": {"type": "string", "coerce": _text, "nullable": True, "default": None},
    "conda": _BOOL,
    "channels": {"type": "list", "schema": {"type": "string"}, "default": []},
}


def _package_and_version(args: dict[str, Any]) -> str | None:
    """The seed's HTTP body ``{"package": "numpy", "version": "1.24.0"}`` as one spec."""
    package = (args.get("package") or "").strip()
    version = (args.get("version") or "").strip()
    if not package:
        if version:
            raise InvalidArgument("version given without a package", 'send {"package": "numpy", "version": "1.24.0"}')
        return None
    if version:
        if re.search(r"[<>=!~@]", package):
            raise InvalidArgument(f"{package!r} already has a version: give it either in package or in version")
        package += version if version[0] in "<>=!~" else f"=={version}"
    return package


def _one_spec(args: dict[str, Any], example: str) -> str:
    specs = [s for s in (args.get("spec"), _package_and_version(args)) if s]
    if len(specs) != 1:
        raise InvalidArgument("name exactly one package" if specs else "name a package", f"e.g. {example}")
    return specs[0]


def _pip_argv(parsed: list[PackageSpec]) -> list[str]:
    out: list[str] = []
    for p in parsed:
        out.extend([p.raw.strip()] if p.kind is SpecKind.NAME else shlex.split(p.raw))
    return out


class _PipOutput:
    """Forwards pip's output line by line as log packets, keeping back the report marker line."""

    def __init__(self, forward: Callable[[bytes], Awaitable[None]]) -> None:
        self.forward = forward
        self.partial = b""
        self.report: list[dict[str, Any]] | None = None

    async def __call__(self, chunk: bytes) -> None:
        lines = (self.partial + chunk).split(b"\n")
        self.partial = lines.pop()
        await self._emit(lines)

    async def flush(self) -> None:
        if self.partial:
            lines, self.partial = [self.partial], b""
            await self._emit(lines, final=True)

    async def _emit(self, lines: list[bytes], final: bool = False) -> None:
        out = []
        for line in lines:
            if line.startswith(_REPORT_MARK):
                try:
                    self.report = json.loads(line[len(_REPORT_MARK):])
                except ValueError:
                    log.warning("unreadable pip report line")
            else:
                out.append(line if final else line + b"\n")
        if out:
            await self.forward(b"".join(out))


def _tail(output: bytes, lines: int = 25) -> str:
    text = output.decode("utf-8", errors="replace")
    kept = [ln for ln in text.splitlines() if not ln.startswith(_REPORT_MARK.decode())]
    return "\n".join(kept[-lines:])


# -- 0x30 install ---------------------------------------------------------------------------------


@operation(
    Opcode.INSTALL_PACKAGE,
    routes=[("POST", "/api/v1/jupyter/workspaces/{name}/packages")],
    schema={**_NAME, **_SPEC_KEYS, "packages": {"type": "list", "schema": {"type": "string"}, "default": []},
            "force": _BOOL},
)
async def install_package(agent: Agent, call: Call, args: dict[str, Any]) -> Result:
    """Checks every spec against the workspace's policy, then runs pip (or conda) in the workspace
    with its own index, streaming pip's output. Records what pip installed, only once pip succeeded."""
    svc = service(agent)
    ws = agent.find_workspace(args["name"])
    require(agent, call.user, ws, EDIT, "installing packages")
    raw_specs = [*args["packages"], *([s] if (s := _package_and_version(args)) else []),
                 *([args["spec"]] if args.get("spec") else [])]
    if not raw_specs:
        raise InvalidArgument("name at least one package to install", f"e.g. ml jupyter install {ws.name} numpy 'pandas==2.0.0'")
    conda, force = args["conda"], args["force"]
    if force and not call.user.is_admin:
        await agent.audit(call.user.name, "package.install", ws.name, "denied", specs=raw_specs, force=True,
                          reason="--force needs the admin role")
        raise PermissionDenied("permission denied: --force installs against the package policy and needs the admin role",
                               f"ask for approval instead: ml jupyter request {ws.name} SPEC --reason='...'")
    if args["channels"] and not conda:
        raise InvalidArgument("--channel is for conda installs", "add --conda, or leave the channel out for pip")
    policy = svc.policy_for(ws)
    approvals = svc.approvals(ws, conda)
    parsed: list[PackageSpec] = []
    decisions: list[Decision] = []
    await call.progress(f"checking {len(raw_specs)} spec{'s' if len(raw_specs) != 1 else ''} against the package "
                        f"policy of {ws.name}")
    for raw in raw_specs:
        try:
            spec = parse_spec(raw, conda=conda)
        except InvalidArgument as exc:
            await agent.audit(call.user.name, "package.decision", ws.name, "invalid", via="install", spec=raw,
                              error=exc.message)
            raise
        d = decide(spec, policy, conda=conda, approved=approvals, channels=args["channels"], workspace=ws.name)
        await _audit_decision(agent, call, ws, d, "install", conda=conda, force=force)
        parsed.append(spec)
        decisions.append(d)
    refused = [d for d in decisions if not d.allowed]
    forced: frozenset[str] = frozenset()
    if refused:
        if not force:
            raise _refusal(refused, f"cannot install into {ws.name}")
        fixed = [d for d in refused if d.rule not in FORCEABLE or not d.package]
        if fixed:
            raise PolicyDenied(f"--force overrides the package lists, not where packages come from: {fixed[0].reason}",
                               package=fixed[0].package, rule=fixed[0].rule, spec=fixed[0].spec)
        forced = frozenset(d.package for d in refused if d.package)
        await agent.audit(call.user.name, "package.force", ws.name, "forced", packages=sorted(forced),
                          rules=sorted({d.rule for d in refused}), specs=[d.spec for d in refused])
        await call.progress(f"--force: installing {', '.join(sorted(forced))} against the policy (audited)")
    for d in decisions:
        if d.would_have is not None:
            await call.progress(f"dry run: {d.reason}")
    names = [p.name for p in parsed if p.kind is SpecKind.NAME and p.name]
    if not conda:
        index = await svc.index()
        for name in names:  # fails fast on an unreachable upstream; pip then finds the page cached
            if await index.project(name) is None:
                raise NotFound(f"{name} is not on the package index ({index.upstream})",
                               "check the name's spelling; the upstream is package_index.upstream in agent.yaml")
    return await _run_installer(agent, call, ws, parsed, args["channels"], conda, forced, policy)


async def _run_installer(agent: Agent, call: Call, ws: Workspace, parsed: list[PackageSpec], channels: list[str],
                         conda: bool, forced: frozenset[str], policy: PackagePolicy) -> Result:
    from .workspaces import spec_for

    svc = service(agent)
    tool = "conda" if conda else "pip"
    if conda:
        argv = ["sh", "-c", _CONDA_SCRIPT, "fetchml-conda"]
        for channel in channels:
            argv += ["-c", channel]
        argv += _pip_argv(parsed)
    else:
        argv = ["python3", "-c", _PIP_WRAPPER, "--no-input", "--progress-bar", "off", *_pip_argv(parsed)]
    output = _PipOutput(call.log)
    async with agent.lock(f"{ws.name}#packages"):
        await run_blocking(svc.write_index_files, ws, policy)
        await call.progress(f"installing with {tool} in {ws.name}" + ("" if conda else " from its package index"))
        svc._watch[ws.id] = []
        if forced:
            svc._forced[ws.id] = forced
        try:
            result = await agent.runtime.exec(spec_for(agent, ws), ws.runtime_state, argv, output,
                                              {"PYTHONUNBUFFERED": "1"}, INSTALL_TIMEOUT)
        finally:
            await output.flush()
            svc._forced.pop(ws.id, None)
            refused_by_index = svc._watch.pop(ws.id, [])
    specs_text = " ".join(p.raw.strip() for p in parsed)
    shown: set[str | None] = set()
    for d in refused_by_index:  # dry run: what the index let through that enforcement would refuse
        if d.would_have is not None and d.package not in shown:
            shown.add(d.package)
            await call.progress(f"dry run (package index): {d.reason}")
    if result.exit_code != 0:
        error: FetchmlError
        refused = [d for d in refused_by_index if d.decision != ALLOW]
        if refused:
            error = _refusal(refused, f"{tool} could not install {specs_text}: a package it needs is refused")
        elif result.exit_code == 127:
            error = NotSupported(f"{tool} is not available in workspace {ws.name}'s environment",
                                 "the local runtime's workspaces are Python venvs: install with pip, or use an image "
                                 "that ships conda" if conda else _tail(result.output))
        else:
            error = BackendError(f"{tool} install failed in {ws.name} with exit code {result.exit_code}; "
                                 "nothing was recorded as installed", _tail(result.output))
        await agent.audit(call.user.name, "package.install", ws.name, "error", specs=[p.raw for p in parsed],
                          installer=tool, exit_code=result.exit_code, error=error.message)
        raise error
    now = time.time()
    by_name = {p.name: p for p in parsed if p.name}
    records: list[InstallRecord] = []
    if output.report is not None:
        for item in output.report:
            key = normalize_name(item["name"])
            requested = key in by_name
            records.append(InstallRecord(key, item["name"], item["version"], by_name[key].raw.strip() if requested else "",
                                         requested, tool, key in forced, call.user.name, now))
    else:  # conda (or a pip without --report): what was asked for
        records = [InstallRecord(n, n, "", p.raw.strip(), True, tool, n in forced, call.user.name, now)
                   for n, p in by_name.items()]
    if records:
        await agent.store.run(record_installs, ws.id, records)
    installed = [r.to_dict() for r in records]
    await agent.audit(call.user.name, "package.install", ws.name, "ok", specs=[p.raw for p in parsed], installer=tool,
                      installed=[f"{r.display_name}=={r.version}" if r.version else r.display_name for r in records],
                      forced=sorted(forced))
    if records:
        listed = ", ".join(f"{r.display_name} {r.version}".strip() for r in records)
        message = f"installed {listed} into {ws.name}"
    else:
        message = f"nothing new to install in {ws.name}: {specs_text} already satisfied"
    return Result(message, "package_install", {"workspace": ws.name, "installer": tool, "installed": installed,
                                               "forced": sorted(forced)})


# -- 0x31 list ------------------------------------------------------------------------------------


@operation(Opcode.LIST_PACKAGES, routes=[("GET", "/api/v1/jupyter/workspaces/{name}/packages")], schema=_NAME)
async def list_packages(agent: Agent, call: Call, args: dict[str, Any]) -> Result:
    """Installed packages: where each lives and, for ``ml jupyter install``s, who and when."""
    ws = agent.find_workspace(args["name"])
    require(agent, call.user, ws, VIEW, "listing packages")
    doc = await service(agent).inventory(ws)
    return Result(f"{len(doc['packages'])} packages", "package_list", doc)


# -- 0x32 check -----------------------------------------------------------------------------------


@operation(
    Opcode.CHECK_PACKAGE,
    routes=[("POST", "/api/v1/jupyter/packages/check"), ("GET", "/api/v1/jupyter/packages/check")],
    schema={**_SPEC_KEYS, "workspace": {"type": "string", "nullable": True, "default": None},
            "requirements": {"type": "string", "nullable": True, "default": None}},
)
async def check_package(agent: Agent, call: Call, args: dict[str, Any]) -> Result:
    """The decision for one spec (or each line of a requirements text), against the global policy
    or a workspace's. Answers with the decision; ``ml`` turns it into its exit code."""
    svc = service(agent)
    ws = None
    if args.get("workspace"):
        ws = agent.find_workspace(args["workspace"])
        require(agent, call.user, ws, VIEW, "checking packages")
    policy = svc.policy_for(ws) if ws else svc.global_policy
    conda = args["conda"]
    approvals = svc.approvals(ws, conda) if ws else None
    where = ws.name if ws else None
    if args.get("requirements") is not None:
        lines = check_requirements(args["requirements"], policy, conda=conda, approved=approvals, workspace=where)
        refused = [ln.to_dict() for ln in lines if not ln.allowed]
        summary = {ALLOW: 0, DENY: 0, APPROVAL_REQUIRED: 0, "invalid": 0}
        for ln in lines:
            summary["invalid" if ln.decision is None else ln.decision.decision] += 1
        await agent.audit(call.user.name, "package.check_list", where, "ok" if not refused else "refused",
                          summary=summary, refused=refused[:100])
        return Result(f"{len(lines)} specs checked", "package_check_list",
                      {"workspace": where, "lines": [ln.to_dict() for ln in lines], "summary": summary})
    raw = _one_spec(args, "ml jupyter check-package numpy")
    try:
        d = decide(raw, policy, conda=conda, approved=approvals, channels=args["channels"], workspace=where)
    except InvalidArgument as exc:
        await agent.audit(call.user.name, "package.decision", where, "invalid", via="check", spec=raw, error=exc.message)
        raise
    await _audit_decision(agent, call, ws, d, "check", conda=conda)
    return Result(d.reason, "package_check", {**d.to_dict(), "workspace": where})


# -- 0x33 request, 0x34 review, 0x35 approve, 0x36 deny ---------------------------------------------


@operation(
    Opcode.REQUEST_PACKAGE,
    routes=[("POST", "/api/v1/jupyter/workspaces/{name}/package-requests")],
    schema={**_NAME, **_SPEC_KEYS, "reason": {"type": "string", "coerce": lambda v: (v or "").strip(), "default": ""}},
)
async def request_package(agent: Agent, call: Call, args: dict[str, Any]) -> Result:
    """Asks an admin to approve a package (and version range) for one workspace. A second request
    for the same one adds its requester and reason to the open request."""
    svc = service(agent)
    ws = agent.find_workspace(args["name"])
    require(agent, call.user, ws, USE, "requesting packages")
    raw = _one_spec(args, f"ml jupyter request {ws.name} custom-package --reason='...'")
    conda = args["conda"]
    spec = parse_spec(raw, conda=conda)
    if spec.kind is not SpecKind.NAME or spec.name is None:
        raise InvalidArgument(f"{raw!r}: only a package by name (and version range) can be requested",
                              "approvals are per package and version range: e.g. custom-package or 'custom-package>=1,<2'")
    policy = dataclasses.replace(svc.policy_for(ws), mode="enforce")  # what a request is for, even in dry run
    d = decide(spec, policy, conda=conda, approved=svc.approvals(ws, conda), channels=args["channels"],
               workspace=ws.name)
    await _audit_decision(agent, call, ws, d, "request", conda=conda)
    if d.decision == DENY:
        raise PolicyDenied(f"{d.reason}; a request cannot change that",
                           "blocked packages and untrusted channels are not approved per workspace: an admin installs "
                           "with --force or changes the policy", package=d.package, rule=d.rule, spec=d.spec)
    if d.decision == ALLOW:
        why = "it is already approved" if d.rule == "approved_request" else "it needs no approval"
        message = f"{spec.name} can be installed in {ws.name}: {why} (ml jupyter install {ws.name} {shlex.quote(raw)})"
        return Result(message, "package_request", {"message": message, "workspace": ws.name, "package": spec.name,
                                                   "decision": d.to_dict(), "request": None})
    specifier = "" if conda else spec.specifier
    doc, created = await agent.store.run(add_request, ws.id, ws.name, spec.name, specifier, conda, call.user.name,
                                         raw, args["reason"])
    await agent.audit(call.user.name, "package.request", ws.name, "created" if created else "joined",
                      request_id=doc["id"], spec=raw, package=spec.name, specifier=specifier, reason=args["reason"])
    what = f"{spec.name}{specifier}"
    if created:
        message = f"request {doc['id']} for {what} in {ws.name} is waiting for an admin (ml jupyter review shows it)"
    else:
        message = (f"added your reason to request {doc['id']} for {what} in {ws.name} "
                   f"({len(doc['requesters'])} requests so far)")
    return Result(message, "package_request", {"message": message, "workspace": ws.name, "package": spec.name,
                                               "decision": d.to_dict(), "request": doc})


@operation(
    Opcode.REVIEW_REQUESTS,
    routes=[("GET", "/api/v1/jupyter/package-requests")],
    schema={"pending": _BOOL, "workspace": {"type": "string", "nullable": True, "default": None},
            "status": {"type": "string", "nullable": True, "default": None, "allowed": ["pending", "approved", "denied"]}},
)
async def review_requests(agent: Agent, call: Call, args: dict[str, Any]) -> Result:
    """Admins: every request (``pending`` for the queue). Others: the requests they made, with
    the decisions (``pending`` needs the admin role)."""
    status = "pending" if args["pending"] else args["status"]
    ws_id = agent.find_workspace(args["workspace"]).id if args.get("workspace") else None
    if call.user.is_admin:
        requester = None
    elif args["pending"]:
        raise PermissionDenied("permission denied: reviewing pending requests needs the admin role",
                               "ml jupyter review (without --pending) shows your own requests and their decisions")
    else:
        requester = call.user.name
    requests = await agent.store.run(lambda c: list_requests(c, status=status, requester=requester, workspace_id=ws_id))
    return Result(f"{len(requests)} requests", "package_requests", {"requests": requests, "mine": requester is not None})


async def _decide(agent: Agent, call: Call, request_id: str, status: str, reason: str) -> dict[str, Any]:
    doc, changed = await agent.store.run(decide_request, request_id, status, call.user.name, reason)
    if doc is None:
        raise NotFound(f"no package request {request_id!r}", "ml jupyter review --pending lists the open requests")
    if not changed:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(doc["decided_at"])) if doc["decided_at"] else "?"
        raise InvalidState(f"request {request_id} was already {doc['status']} by {doc['decided_by']} at {when}",
                           doc.get("decision_reason") or "a new request can be made with ml jupyter request")
    return doc


def _admin(call: Call, what: str) -> None:
    if not call.user.is_admin:
        raise PermissionDenied(f"permission denied: {what} package requests needs the admin role",
                               "ml jupyter review shows your requests and their decisions")


@operation(
    Opcode.APPROVE_REQUEST,
    routes=[("POST", "/api/v1/jupyter/package-requests/{request_id}/approve")],
    schema={"request_id": {"type": "string", "required": True, "empty": False},
            "reason": {"type": "string", "coerce": lambda v: (v or "").strip(), "default": ""}},
)
async def approve_request(agent: Agent, call: Call, args: dict[str, Any]) -> Result:
    _admin(call, "approving")
    doc = await _decide(agent, call, args["request_id"], "approved", args["reason"])
    service(agent).add_approval(doc["workspace_id"], doc["package"], doc["specifier"], doc["conda"])
    await agent.audit(call.user.name, "package.approve", doc["workspace"], "approved", request_id=doc["id"],
                      package=doc["package"], specifier=doc["specifier"], reason=args["reason"],
                      requesters=sorted({r["requester"] for r in doc["requesters"]}))
    what = doc["package"] + doc["specifier"]
    message = (f"approved {doc['id']}: {what} can now be installed in {doc['workspace']} "
               f"(ml jupyter install {doc['workspace']} {shlex.quote(what)})")
    return Result(message, "package_request", {"message": message, "request": doc})


@operation(
    Opcode.DENY_REQUEST,
    routes=[("POST", "/api/v1/jupyter/package-requests/{request_id}/deny")],
    schema={"request_id": {"type": "string", "required": True, "empty": False},
            "reason": {"type": "string", "nullable": True, "coerce": lambda v: (v or "").strip(), "default": ""}},
)
async def deny_request(agent: Agent, call: Call, args: dict[str, Any]) -> Result:
    _admin(call, "denying")
    if not args["reason"]:
        raise InvalidArgument("a denial needs a reason the requester will see", "--reason='Security concern'")
    doc = await _decide(agent, call, args["request_id"], "denied", args["reason"])
    await agent.audit(call.user.name, "package.deny", doc["workspace"], "denied", request_id=doc["id"],
                      package=doc["package"], specifier=doc["specifier"], reason=args["reason"],
                      requesters=sorted({r["requester"] for r in doc["requesters"]}))
    message = f"denied {doc['id']} ({doc['package']}{doc['specifier']} in {doc['workspace']}): {args['reason']}"
    return Result(message, "package_request", {"message": message, "request": doc})


# -- 0x37 clear-cache, 0x38 security-scan ---------------------------------------------------------


@operation(Opcode.CLEAR_CACHE, routes=[("POST", "/api/v1/jupyter/workspaces/{name}/clear-cache")], schema=_NAME)
async def clear_cache(agent: Agent, call: Call, args: dict[str, Any]) -> Result:
    """Forgets the index's cached pages and files (new upstream releases show at once) and empties
    the workspace's pip cache."""
    from .workspaces import spec_for

    ws = agent.find_workspace(args["name"])
    require(agent, call.user, ws, EDIT, "clearing the package cache")
    removed = (await service(agent).index()).clear_cache()
    result = await agent.runtime.exec(spec_for(agent, ws), ws.runtime_state, ["python3", "-m", "pip", "cache", "purge"],
                                      None, None, SCAN_TIMEOUT)
    pip_text = _tail(result.output, 3)
    await agent.audit(call.user.name, "package.cache_clear", ws.name, "ok", index_files_removed=removed,
                      pip_exit_code=result.exit_code)
    message = f"cleared the package index cache ({removed} files) and {ws.name}'s pip cache"
    return Result(message, "package_cache", {"message": message, "workspace": ws.name, "index_files_removed": removed,
                                             "pip": pip_text, "pip_exit_code": result.exit_code})


@operation(
    Opcode.SECURITY_SCAN,
    routes=[("POST", "/api/v1/jupyter/workspaces/{name}/security-scan"),
            ("GET", "/api/v1/jupyter/workspaces/{name}/security-scan")],
    schema=_NAME,
)
async def security_scan(agent: Agent, call: Call, args: dict[str, Any]) -> Result:
    """The startup scan, now, plus a policy decision for every installed package."""
    svc = service(agent)
    ws = agent.find_workspace(args["name"])
    require(agent, call.user, ws, VIEW, "scanning packages")
    policy = svc.policy_for(ws)
    inventory = await svc.inventory(ws)
    approvals = svc.approvals(ws)
    scanned = [(p["name"], p["version"]) for p in inventory["packages"] if p["location"] != "base"]
    startup_hits = blocked_installed(scanned, policy.startup_scan_list)
    findings = []
    for p in inventory["packages"]:
        d = decide_name(p["name"], policy, approved=approvals, workspace=ws.name)
        if d.decision == ALLOW and d.would_have is None:
            continue
        findings.append({"name": p["name"], "version": p["version"], "location": p["location"],
                         "decision": d.decision, "would_have": d.would_have, "rule": d.rule, "reason": d.reason,
                         "installed_by": p["installed_by"], "forced": p["forced"]})
    failing = [f for f in findings if f["location"] != "base" and f["decision"] != ALLOW]
    ok = not startup_hits and not failing
    doc = {
        "workspace": ws.name,
        "ok": ok,
        "scope": inventory["scope"],
        "packages_checked": len(inventory["packages"]),
        "startup_scan": {"variable": STARTUP_BLOCKED_ENV,
                         "list": sorted(policy.startup_scan_list) if policy.startup_scan else "off",
                         "found": [f"{n}=={v}" for n, v in startup_hits]},
        "findings": findings,
        "policy": policy.to_dict(),
    }
    if inventory["scope"] != "environment":
        doc["note"] = ("packages in the shared base (the agent's own environment, which JupyterLab needs) are "
                       "listed with location 'base' and do not fail the scan; installs of blocked packages stay "
                       "refused")
    await agent.audit(call.user.name, "package.scan", ws.name, "ok" if ok else "findings",
                      startup_found=doc["startup_scan"]["found"], findings=[f["name"] for f in failing])
    summary = "no findings" if ok else f"{len(startup_hits) + len(failing)} findings"
    return Result(f"security scan of {ws.name}: {summary}", "security_scan", doc)
