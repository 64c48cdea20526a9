"""The agent as its services see it: a Protocol that :class:`fetchml_agent.agent.Agent` implements.

The experiments executor, sync, the package service and the operations take the agent typed as
:class:`AgentCore` (or the service layer's :class:`~fetchml_agent.service.context.AgentContext`,
which extends it) and never import the agent module: the agent is built above them all and wires
them together (:mod:`fetchml_agent.agent`), so a dependency on it would be a cycle.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Protocol

from .live import LiveHub
from .runtimes.base import Runtime, WorkspaceSpec
from .settings import AgentConfig
from .store import Store
from .store.workspaces import Workspace

__all__ = ["AgentCore"]


class AgentCore(Protocol):
    """The agent's state and the few actions every service needs."""

    config: AgentConfig
    store: Store
    runtime: Runtime
    workspaces: dict[str, Workspace]  # by name; written through to the store by :meth:`save`
    live: LiveHub  # what changed, for subscribers (save publishes each workspace written)

    @property
    def data_dir(self) -> Path: ...

    def lock(self, name: str) -> asyncio.Lock:
        """The lock serializing changes to one workspace (or another named thing)."""
        ...

    async def save(self, ws: Workspace) -> None:
        """Write ``ws`` through to the store, drop cached listings, publish the change (:attr:`live`)."""
        ...

    def publish_workspace(self, ws: Workspace, status: str | None = None) -> None:
        """Tell subscribers about ``ws`` as it is now (``status``: instead of its own: ``deleted``)."""
        ...

    async def audit(
        self, user: str, action: str, workspace: str | None, outcome: str = "ok", **details: Any
    ) -> None:
        """Append one audit event (and tell its listeners: webhooks)."""
        ...

    def workspace_spec(self, ws: Workspace, gpu_ids: tuple[int, ...] = ()) -> WorkspaceSpec:
        """What the runtime gets for ``ws``: its record, plus the environment every concern adds
        (package index variables...), with ``gpu_ids`` claimed for it."""
        ...
