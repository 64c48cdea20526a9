"""What every operation gets: the agent (:class:`AgentContext`) and its services (:class:`Services`).

:class:`Services` is built once, explicitly, by :func:`fetchml_agent.agent.build_services`: the
package service, the experiments executor, the access grants, the webhooks, the mounts and the
middleware the server serves, and :class:`Hooks` — typed lists through which one concern takes part
in another's operation (the package policy's startup scan in a workspace's start, experiments in
its delete, access's check before every call...). No service and no hook is registered as a side
effect of an import.

Two concerns sit above this layer, because their operations build on it: :mod:`fetchml_agent.access`
(who may reach JupyterLab) and :mod:`fetchml_agent.governance` (the audit chain, retention, GDPR).
Their services are here as what the layers below ask of them, a Protocol this module owns
(:class:`PersonalTokens`, :class:`AuditTrail`); each package narrows it to its own class.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.routing import BaseRoute
from starlette.types import ASGIApp

from ..core import AgentCore
from ..errors import Overloaded
from ..experiments.executor import Executor
from ..experiments.records import Run
from ..metrics import Metrics
from ..runtimes.base import Resources, State
from ..settings import User
from ..store.workspaces import Workspace
from ..webhooks import Webhooks
from .calls import Call
from .grants import Grants
from .packages.service import PackageService

__all__ = [
    "AgentContext", "AuditTrail", "Capacity", "FeedFollower", "Hooks", "PersonalTokens", "ServerBinder", "Services",
    "UsageHistory",
]

WorkspaceHook = Callable[["AgentContext", Call, Workspace], Awaitable[None]]
StartedHook = Callable[["AgentContext", Call, Workspace, State], Awaitable[None]]
StatusHook = Callable[["AgentContext", Call], Awaitable[dict[str, Any]]]
EnvHook = Callable[["AgentContext", Workspace], dict[str, str]]
AuditListener = Callable[[dict[str, Any]], None]
LifecycleHook = Callable[["AgentContext"], Awaitable[None]]
RunHook = Callable[[Run], Awaitable[None]]
CallCheck = Callable[[User, bytes, str], None]  # (user, key hash, operation name)
Middleware = Callable[[ASGIApp], ASGIApp]  # wraps the server's app


class FeedFollower(Protocol):
    """What the layers here ask of :class:`fetchml_agent.service.live.LiveService`."""

    @property
    def follows_runtime(self) -> bool:
        """Whether the runtime's change feed is followed (no workspace needs polling then)."""
        ...


class PersonalTokens(Protocol):
    """What the layers below ask of :mod:`fetchml_agent.access`: the credential a person's own
    workspace URL carries."""

    def personal_token(self, user: str, ws: Workspace) -> str | None:
        """``user``'s own token for ``ws``; ``None`` while there is none (before the agent started)."""
        ...


class AuditTrail(Protocol):
    """Where :meth:`AgentCore.audit` writes: :mod:`fetchml_agent.governance`'s audit chain."""

    async def record(self, agent: AgentCore, user: str, action: str, workspace: str | None, outcome: str,
                     details: dict[str, Any]) -> int:
        """Append one event; returns its id."""
        ...


class ServerBinder(Protocol):
    """What the layers below ask of :mod:`fetchml_agent.access` for a warm pool: a server started
    before it had an owner serves a workspace's people from now on."""

    async def bind_server(self, credential: str, ws: Workspace) -> None:
        """Bind the server credential ``credential`` to ``ws`` (audited)."""
        ...


class Capacity(Protocol):
    """What the workspace operations ask of :mod:`fetchml_agent.service.capacity` (quotas, warm
    pools, culling); :class:`fetchml_agent.service.capacity.service.CapacityService` implements it."""

    def check_quota(self, ws: Workspace, resources: Resources, *, new: bool, running: bool) -> None:
        """Raise :class:`~fetchml_agent.errors.QuotaExceeded` when ``ws`` with ``resources`` (a new
        workspace when ``new``; running when ``running``) takes its owner or a team of theirs past
        a quota."""
        ...

    def reserve(self, ws: Workspace, asked: dict[str, Any]) -> object | None:
        """A ready warm pool member for the new ``ws`` when its create (``asked``: the create's
        arguments) matches a pool; ``ws`` takes over the member's credential and index key.
        ``None``: start cold."""
        ...

    async def start_reserved(self, call: Call, ws: Workspace, member: object) -> bool:
        """Start ``ws`` (its record saved) from the reserved member. False when that failed and
        ``ws`` was given fresh secrets for a cold start instead."""
        ...

    def report_activity(self, ws: Workspace, body: dict[str, Any]) -> dict[str, Any]:
        """Record a report of ``ws``'s JupyterLab (``POST /access/v1/activity``); the answer."""
        ...

    def view(self, ws: Workspace) -> dict[str, Any]:
        """What ``ml jupyter info`` shows of it: idle since, why it counts as active, when it will
        be culled, how it started."""
        ...


class UsageHistory(Protocol):
    """What the layers below see of :mod:`fetchml_agent.usage`: each workspace's last sample."""

    def latest(self, workspace_id: str) -> dict[str, Any] | None:
        """The workspace's last usage sample (``None`` when none was taken since the agent started)."""
        ...


@dataclass
class Hooks:
    """Where concerns take part in each other's operations, in the order they were added."""

    create: list[WorkspaceHook] = field(default_factory=list)  # before a new record is written: raise to refuse
    after_create: list[WorkspaceHook] = field(default_factory=list)  # once it runs
    before_start: list[WorkspaceHook] = field(default_factory=list)  # raise to refuse the start
    after_start: list[StartedHook] = field(default_factory=list)  # raise: the workload is stopped again
    delete: list[WorkspaceHook] = field(default_factory=list)  # before the record goes
    reset: list[WorkspaceHook] = field(default_factory=list)  # reset --hard, while stopped
    status: list[StatusHook] = field(default_factory=list)  # sections of ml status
    workspace_env: list[EnvHook] = field(default_factory=list)  # variables the runtime gives a workspace
    audit: list[AuditListener] = field(default_factory=list)  # every audit event, as written
    start: list[LifecycleHook] = field(default_factory=list)  # after the agent adopted its workspaces
    shutdown: list[LifecycleHook] = field(default_factory=list)  # before the runtime closes
    run_finished: list[RunHook] = field(default_factory=list)  # a run's final record was stored
    call_checks: list[CallCheck] = field(default_factory=list)  # both transports, after the key, before an operation: raise to refuse


@dataclass
class Services:
    """The agent's services, one of each; see the module docstring."""

    hooks: Hooks
    packages: PackageService
    experiments: Executor
    grants: Grants
    audit_trail: AuditTrail  # fetchml_agent.governance.service.Governance
    webhooks: Webhooks | None = None
    access: PersonalTokens | None = None  # fetchml_agent.access.service.AccessService
    server_binder: ServerBinder | None = None  # the same AccessService, as a warm pool sees it
    capacity: Capacity | None = None  # fetchml_agent.service.capacity: quotas, warm pools, culling
    live: FeedFollower | None = None  # fetchml_agent.service.live.LiveService
    mounts: list[tuple[str, ASGIApp]] = field(default_factory=list)  # (path, ASGI app) the server mounts
    metrics: Metrics = field(default_factory=Metrics)  # Prometheus metrics (fetchml_agent/metrics.py)
    usage: UsageHistory | None = None  # fetchml_agent.usage.service.Usage
    routes: list[BaseRoute] = field(default_factory=list)  # pages the server adds to its routes (the home page)
    middleware: list[Middleware] = field(default_factory=list)  # wrapping the server's app, outermost first


class AgentContext(AgentCore, Protocol):
    """The agent as operations see it: :class:`~fetchml_agent.core.AgentCore` and its services."""

    services: Services
    users: dict[str, User]
    start_slots: asyncio.Semaphore
    max_workspaces: int
    version: str
    started_at: float
    orphans: list[str]  # workloads of this runtime that no record knows (after adoption)
    creating: set[str]  # names of workspaces being created right now (reserved, not yet recorded)

    def find_workspace(self, ref: str) -> Workspace: ...

    def authenticate(self, key_hash16: bytes) -> User:
        """The user whose key hashes to these 16 wire bytes; raises AuthenticationFailed."""
        ...

    def authenticate_key(self, api_key: str) -> User:
        """:meth:`authenticate` for a key in clear."""
        ...

    def remove_user(self, name: str) -> None:
        """Forget a user (an erased account): its key stops authenticating at once."""
        ...

    def invalidate(self) -> None: ...

    def list_cache(self) -> dict[str, Any]: ...

    def overloaded(self) -> Overloaded: ...
