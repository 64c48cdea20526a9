"""What every operation gets: the agent (:class:`AgentContext`) and its services (:class:`Services`).

:class:`Services` is built once, explicitly, by :func:`fetchml_agent.agent.build_services`: the
package service, the experiments executor, the access grants, the webhooks, the mounts the server
serves, and :class:`Hooks` — typed lists through which one concern takes part in another's
operation (the package policy's startup scan in a workspace's start, experiments in its delete...).
No service and no hook is registered as a side effect of an import.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.types import ASGIApp

from ..core import AgentCore
from ..errors import Overloaded
from ..experiments.executor import Executor
from ..experiments.records import Run
from ..runtimes.base import State
from ..settings import User
from ..store.workspaces import Workspace
from ..webhooks import Webhooks
from .calls import Call
from .grants import Grants
from .packages.service import PackageService

__all__ = ["AgentContext", "Hooks", "Services"]

WorkspaceHook = Callable[["AgentContext", Call, Workspace], Awaitable[None]]
StartedHook = Callable[["AgentContext", Call, Workspace, State], Awaitable[None]]
StatusHook = Callable[["AgentContext", Call], Awaitable[dict[str, Any]]]
EnvHook = Callable[["AgentContext", Workspace], dict[str, str]]
AuditListener = Callable[[dict[str, Any]], None]
LifecycleHook = Callable[["AgentContext"], Awaitable[None]]
RunHook = Callable[[Run], Awaitable[None]]


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


@dataclass
class Services:
    """The agent's services, one of each; see the module docstring."""

    hooks: Hooks
    packages: PackageService
    experiments: Executor
    grants: Grants
    webhooks: Webhooks | None = None
    mounts: list[tuple[str, ASGIApp]] = field(default_factory=list)  # (path, ASGI app) the server mounts


class AgentContext(AgentCore, Protocol):
    """The agent as operations see it: :class:`~fetchml_agent.core.AgentCore` and its services."""

    services: Services
    users: dict[str, User]
    start_slots: asyncio.Semaphore
    max_workspaces: int
    version: str
    started_at: float
    orphans: list[str]  # workloads of this runtime that no record knows (after adoption)

    def find_workspace(self, ref: str) -> Workspace: ...

    def invalidate(self) -> None: ...

    def list_cache(self) -> dict[str, Any]: ...

    def overloaded(self) -> Overloaded: ...
