"""The agent process: configuration, store, runtime and services wired together.

One :class:`Agent` lives in the asyncio process started by ``fetchml-agent serve``. It owns the
in-memory view of workspaces (written through to SQLite on every change), the runtime, the audit
log and the reconcile loop that notices workspaces that died or were adopted after a restart.
Its services are built here, in one place (:func:`build_services`): every concern's hooks are
listed below, in the order they run; nothing registers itself when imported.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from pathlib import Path
from typing import Any

from . import __version__
from .access import guard as access_guard
from .access import ops as access_ops
from .access.http import build_access_app
from .access.service import AccessService
from .auth import KeyTable
from .datadir import prepare_data_dir
from .errors import AuthenticationFailed, Overloaded
from .experiments.executor import Executor
from .governance.service import Governance
from .live import LiveHub
from .metrics import Metrics
from .protocol.packets import api_key_hash
from .runtimes.base import Resources, Runtime, WorkspaceSpec
from .service import devices as device_ops
from .service import experiments as experiment_ops
from .service.access import not_found
from .service.capacity.service import CapacityService
from .service.context import Hooks, Services
from .service.grants import Grants
from .service.live import LiveService
from .service.packages import PackageService
from .service.packages import hooks as package_hooks
from .service.packages import install as package_install
from .service.packages import scans as package_scans
from .service.packages.vulnerabilities import VulnerabilityData
from .service.workspaces import adopt_all, reconcile_once
from .settings import AgentConfig, ConfigError, User
from .store import Store
from .store.sealed import SealError, key_path
from .store.workspaces import Workspace, load_workspaces, update_workspace
from .usage import collector as usage_collector
from .usage.config import MetricsSettings
from .usage.service import Usage
from .web.app import build_routes
from .webhooks import Webhooks

__all__ = ["Agent", "build_services", "make_runtime"]

log = logging.getLogger("fetchml.agent")

RECONCILE_INTERVAL = 5.0


def check_privilege(config: AgentConfig) -> None:
    """Before the agent binds anything: ``local.isolation: users`` set on an agent that may not
    switch users (or load its firewall) is a configuration error (runtimes/local/users.py)."""
    if config.runtime != "local" or config.section("local").get("isolation") != "users":
        return
    from .privilege import FIREWALL, SWITCH_USERS
    from .runtimes.local.users import require

    require(SWITCH_USERS + (FIREWALL if config.section("local").get("firewall", True) else ()))


def make_runtime(config: AgentConfig) -> Runtime:
    """The runtime named by ``runtime:``. Each is imported only when chosen: the docker SDK and
    python-nomad cost an agent on another runtime nothing."""
    if config.runtime == "local":
        from .privilege import FIREWALL, SWITCH_USERS, missing
        from .runtimes.local import LocalRuntime
        from .runtimes.local.users import WorkspaceUsers, default_python

        local = config.section("local")
        root = config.local_workspaces_dir
        users = None
        want_firewall = bool(local.get("firewall", True))
        firewall_off = None
        if root is not None and want_firewall and not local.get("isolation") and missing(FIREWALL):
            # isolation by default (not asked for): users without the network rules, and info says so
            want_firewall = False
            firewall_off = "the agent lacks CAP_NET_ADMIN for its nftables rules"
            log.warning("local.isolation: users (the default here) without its firewall: %s; workspaces may reach "
                        "each other's ports, the agent's API and the internet", firewall_off)
        if root is not None:
            lo, hi = local.get("uid_range", [61000, 61999])
            users = WorkspaceUsers(root, python=local.get("python") or default_python(), uid_range=(lo, hi),
                                   prefix=local.get("user_prefix", "fml-"),
                                   needs=SWITCH_USERS + (FIREWALL if want_firewall else ()))
        firewall = None
        port_base = local.get("port_base", 8888)
        index_port = local.get("index_port") or port_base - 1
        if users is not None and want_firewall:
            from .netpolicy import Firewall, NetPolicy

            firewall = Firewall(NetPolicy.from_config({
                "table": local.get("firewall_table"), "index": f"127.0.0.1:{index_port}",
                "dns": local.get("dns"), "allow": local.get("allow")}))
        return LocalRuntime(
            config.data_dir,
            port_base=port_base,
            start_timeout=float(local.get("start_timeout", 120)),
            use_cgroups=bool(local.get("cgroup", True)),
            stop_grace=float(local.get("stop_grace", 5)),
            users=users,
            shared=config.local_isolation == "none",
            firewall=firewall,
            index_port=index_port,
            firewall_off=firewall_off,
        )
    if config.runtime == "docker":
        from .runtimes.docker import DockerRuntime

        return DockerRuntime.from_config(config)
    if config.runtime == "nomad":
        from .runtimes.nomad import NomadRuntime

        return NomadRuntime.from_config(config)
    raise ValueError(f"unknown runtime {config.runtime!r}")


def build_services(agent: Agent) -> Services:
    """The agent's services and every concern's hooks, in the order they run."""
    hooks = Hooks()
    packages = PackageService(agent)
    webhooks = Webhooks.from_config(agent.config)
    access = AccessService(agent)
    governance = Governance(agent.config)
    vulnerabilities = VulnerabilityData()
    live = LiveService()
    metrics = Metrics(workspace_labels=MetricsSettings.from_section(agent.config.raw.get("metrics")).workspace_labels)
    services = Services(
        hooks=hooks,
        packages=packages,
        experiments=Executor(agent, finished_hooks=hooks.run_finished),
        grants=Grants(agent.store),
        audit_trail=governance,
        webhooks=webhooks,
        access=access,
        server_binder=access,
        live=live,
        mounts=[("/index", packages.index.mount()), ("/access", build_access_app(access))],
        middleware=[lambda app: access_guard.AllowlistMiddleware(app, access)],
        metrics=metrics,
    )
    # Access to JupyterLab (docs/access.md): started before anything that may serve requests; the
    # allowlists and the admin second factor before every call; how a workspace's server reaches
    # the agent; a revoke or a deletion ends the affected credentials.
    hooks.start.append(access_ops.start)
    hooks.call_checks.append(functools.partial(access_guard.check_call, access))
    # The package policy (docs/package-policy.md): a new workspace's security: and environment:,
    # its index variables, the startup scan (before the start where the runtime can look, else
    # inside the started workload), cleanup on delete and reset --hard, the ml status section;
    # the vulnerability data kept loaded.
    hooks.create.append(package_hooks.validate_new_workspace)
    hooks.create.append(package_install.check_config_packages)
    hooks.workspace_env.append(lambda a, ws: a.services.packages.index.workspace_env(ws))
    hooks.before_start.append(package_scans.scan_before_start)
    hooks.after_start.append(package_scans.scan_after_start)
    hooks.delete.append(package_hooks.forget_workspace)
    hooks.reset.append(package_hooks.reset_hard)
    hooks.status.append(package_hooks.status_section)
    hooks.start.append(package_hooks.start)
    hooks.shutdown.append(package_hooks.close)
    hooks.start.append(vulnerabilities.start)
    hooks.shutdown.append(vulnerabilities.stop)
    hooks.status.append(vulnerabilities.status_section)
    # Webhooks (the seed's workspace-webhooks.yaml): every audit event, delivered in the background.
    if webhooks is not None:
        hooks.audit.append(webhooks.listener)
        hooks.status.append(webhooks.status_section)
        hooks.shutdown.append(webhooks.shutdown)
    # Experiments (docs/experiments.md): create --experiment links, delete cancels the runs, the
    # runs section of ml status, the executor's start (adopting runs) and shutdown.
    hooks.create.append(experiment_ops.check_create)
    hooks.after_create.append(experiment_ops.link_after_create)
    # A template's or config's packages: (checked by the create hook above), once it runs.
    hooks.after_create.append(package_install.install_config_packages)
    hooks.delete.append(experiment_ops.on_delete)
    hooks.status.append(experiment_ops.status_section)
    hooks.start.append(experiment_ops.start)
    hooks.shutdown.append(experiment_ops.close)
    # Access, continued.
    hooks.workspace_env.append(access_ops.workspace_env)
    hooks.audit.append(access.on_audit)
    hooks.shutdown.append(access_ops.close)
    # GPUs per node and type with how many are free, where the runtime reports them (Nomad).
    hooks.status.append(device_ops.status_section)
    # Live status (docs/nomad.md, "Following Nomad"): the runtime's change feed applied to the
    # workspaces from the stored position (the reconcile loop stands down meanwhile), and the
    # position stored at shutdown; subscribers get every change (opcode 0x2F).
    hooks.start.append(live.start)
    hooks.shutdown.append(live.stop)
    # Governance (docs/audit.md): the audit chain's key and erased accounts at start, the daily
    # retention purge, the chain's state in ml status.
    hooks.start.append(governance.start)
    hooks.shutdown.append(governance.stop)
    hooks.status.append(governance.status_section)
    # Capacity (docs/capacity.md, docs/warm-pool.md): quotas on create/start/scale, warm pools a
    # create claims, idle culling from JupyterLab's activity reports; the capacity section of
    # ml status. Last: the pools' members and the culler start once everything else serves.
    capacity = CapacityService(agent)
    services.capacity = capacity
    hooks.start.append(capacity.start)
    hooks.shutdown.insert(0, capacity.close)
    hooks.delete.append(capacity.on_delete)
    hooks.status.append(capacity.status_section)
    # Observability (docs/observe.md): the usage sampler and its events (from the audit log too),
    # the runs' durations, the state gauges of /metrics; a deleted workspace's history goes with it.
    usage = services.usage = Usage(agent, metrics)
    hooks.start.append(usage.start)
    hooks.shutdown.append(usage.stop)
    hooks.audit.append(usage.on_audit)
    hooks.run_finished.append(usage.run_finished)
    hooks.delete.append(usage.forget)
    hooks.status.append(usage.status_section)
    metrics.add_collector(lambda: usage_collector.collect(agent, usage))
    metrics.add_collector(governance.metrics)
    # The home page (fetchml_agent/web): the same login as JupyterLab, the same operations as ml.
    services.routes.extend(build_routes(agent, access))
    return services


class Agent:
    """The agent's state; it is the :class:`~fetchml_agent.service.context.AgentContext` every
    operation gets."""

    def __init__(self, config: AgentConfig, runtime: Runtime | None = None) -> None:
        self.config = config
        self.started_at = time.time()
        self.version = __version__
        self.store = Store(config.data_dir / "agent.db")
        self.runtime = runtime or make_runtime(config)
        self.users = {u.name: u for u in config.users}
        self._keys: KeyTable[User] = KeyTable((u.key_verifier, u) for u in config.users)
        self.workspaces: dict[str, Workspace] = {}
        self.live = LiveHub()
        self.locks: dict[str, asyncio.Lock] = {}
        limits = config.section("limits")
        self.start_slots = asyncio.Semaphore(limits.get("max_concurrent_starts", 4))
        self.max_workspaces = int(limits.get("max_workspaces", 1000))
        self.orphans: list[str] = []
        self.creating: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._list_cache: dict[str, Any] = {}
        self.services = build_services(self)

    # -- start/stop -----------------------------------------------------------------------------

    async def start(self) -> None:
        prepare_data_dir(self.config.data_dir)
        (self.config.data_dir / "workspaces").mkdir(exist_ok=True)
        await asyncio.get_running_loop().run_in_executor(None, self.store.open)
        await self.runtime.open()
        try:
            loaded = await self.store.run(load_workspaces, self.store.sealer)
        except SealError as exc:
            raise ConfigError(f"data_dir {self.config.data_dir}: {exc}",
                              f"restore {key_path(self.config.data_dir)} from the backup taken with agent.db") from None
        for ws in loaded:
            self.workspaces[ws.name] = ws
        await adopt_all(self)
        for hook in self.services.hooks.start:
            await hook(self)
        self._tasks.append(asyncio.create_task(self._reconcile_loop(), name="reconcile"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        for hook in self.services.hooks.shutdown:
            try:
                await hook(self)
            except Exception:
                log.exception("shutdown hook failed")
        await self.runtime.close()
        await asyncio.get_running_loop().run_in_executor(None, self.store.close)

    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(RECONCILE_INTERVAL)
            try:
                await reconcile_once(self)
            except Exception:  # the loop must survive a backend hiccup
                log.exception("reconcile failed")

    # -- auth -----------------------------------------------------------------------------------

    def authenticate(self, key_hash16: bytes) -> User:
        """The user whose ``api_key_verifier`` is the SHA-256 of these 16 wire bytes.

        Raises:
            AuthenticationFailed: no user has that key.
        """
        user = self._keys.lookup(key_hash16)
        if user is None:
            raise AuthenticationFailed(
                "authentication failed: the API key is not known to this agent",
                "check --api-key / FETCHML_API_KEY, or ask an admin for a key",
            )
        return user

    def remove_user(self, name: str) -> None:
        """Forget a user (an erased account, docs/audit.md): its key stops authenticating at once."""
        self.users.pop(name, None)
        self.config.users[:] = [u for u in self.config.users if u.name != name]
        self._keys = KeyTable((u.key_verifier, u) for u in self.config.users)

    def authenticate_key(self, api_key: str) -> User:
        """:meth:`authenticate` for a key in clear (the HTTP API's bearer token)."""
        return self.authenticate(api_key_hash(api_key))

    # -- workspaces -----------------------------------------------------------------------------

    def lock(self, name: str) -> asyncio.Lock:
        return self.locks.setdefault(name, asyncio.Lock())

    def find_workspace(self, ref: str) -> Workspace:
        """A workspace by name or by id (the seed's service id)."""
        ws = self.workspaces.get(ref)
        if ws is not None:
            return ws
        for ws in self.workspaces.values():
            if ws.id == ref:
                return ws
        raise not_found(ref)

    def workspace_spec(self, ws: Workspace, gpu_ids: tuple[int, ...] = ()) -> WorkspaceSpec:
        """What the runtime gets for ``ws``: its record, the environment every concern adds
        (``hooks.workspace_env``: the package index variables), the GPUs claimed for it."""
        env = {k: str(v) for k, v in (ws.config.get("env") or {}).items()}
        for hook in self.services.hooks.workspace_env:
            env.update(hook(self, ws))
        return WorkspaceSpec(
            id=ws.id,
            name=ws.name,
            owner=ws.owner,
            path=Path(ws.path),
            token=ws.token,
            password_hash=ws.password_hash,
            resources=Resources.from_dict(ws.resources),
            image=ws.image,
            port=ws.port,
            env=env,
            labels={"fetchml.workspace": ws.name, "fetchml.owner": ws.owner},
            gpu_ids=gpu_ids,
            backing=str(ws.config.get("pool_member") or ""),
        )

    async def save(self, ws: Workspace) -> None:
        ws.updated_at = time.time()
        await self.store.run(update_workspace, ws, self.store.sealer)
        self.invalidate()
        self.publish_workspace(ws)

    def publish_workspace(self, ws: Workspace, status: str | None = None) -> None:
        """Tell subscribers about ``ws`` as it is now (``status``: instead of its own, e.g. deleted)."""
        self.live.publish("workspace", ws.id, {"id": ws.id, "name": ws.name, "owner": ws.owner,
                                               "status": status or ws.status, "message": ws.status_message},
                          workspace_id=ws.id, owner=ws.owner)

    def invalidate(self) -> None:
        self._list_cache.clear()

    def list_cache(self) -> dict[str, Any]:
        return self._list_cache

    async def audit(
        self, user: str, action: str, workspace: str | None, outcome: str = "ok", **details: Any
    ) -> None:
        event_id = await self.services.audit_trail.record(self, user, action, workspace, outcome, details)
        for listener in self.services.hooks.audit:
            listener({"id": event_id, "ts": time.time(), "user": user, "action": action,
                      "workspace": workspace, "outcome": outcome, "details": details})

    def overloaded(self) -> Overloaded:
        return Overloaded(
            "the agent is starting too many workspaces at once; try again in a few seconds",
            f"limits.max_concurrent_starts = {self.config.section('limits').get('max_concurrent_starts', 4)}",
        )

    @property
    def data_dir(self) -> Path:
        return self.config.data_dir
