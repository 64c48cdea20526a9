"""The agent's package service: the policies and the index, made once per agent."""

from __future__ import annotations

from ...core import AgentCore
from ...policy.engine import Approvals
from ...policy.schema import PackagePolicy
from ...store.packages import approved_requests
from ...store.workspaces import Workspace
from .index import PackageIndex
from .policies import Policies

__all__ = ["PackageService"]


class PackageService:
    """Per-agent package state: :attr:`policies` (global, per workspace, approvals) and
    :attr:`index` (the filtering index and what workspaces are told about it).

    Raises :class:`~fetchml_agent.errors.InvalidArgument` when agent.yaml's
    ``package_management:`` or a ``FETCHML_JUPYTER_*`` variable is invalid (the message names the
    file and key, or the variable).
    """

    def __init__(self, agent: AgentCore) -> None:
        self.agent = agent
        self.policies = Policies(agent.config)
        self.index = PackageIndex(agent, self.policies)

    @property
    def global_policy(self) -> PackagePolicy:
        return self.policies.global_policy

    def policy_for(self, ws: Workspace, *, strict: bool = True) -> PackagePolicy:
        return self.policies.policy_for(ws, strict=strict)

    def approvals(self, ws: Workspace, conda: bool = False) -> Approvals:
        return self.policies.approvals(ws, conda)

    async def start(self) -> None:
        self.policies.load_approvals(await self.agent.store.run(approved_requests))
        self.index.start()

    async def close(self) -> None:
        await self.index.close()

    def forget(self, ws: Workspace) -> None:
        """``ws`` is deleted: drop what is cached about it."""
        self.policies.forget(ws)
        self.index.forget(ws)
