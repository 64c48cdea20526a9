"""Per-workspace package policy: the global policy, each workspace's tightening, the approvals.

The global policy is agent.yaml ``package_management:`` with the ``FETCHML_JUPYTER_*`` overrides.
A workspace's effective policy is that, tightened by its ``security:`` (validated when it was
created) and by a ``workspace-security.yaml`` in its directory (:data:`SECURITY_FILE`, read only
when it changes). Approved requests are per workspace and per installer (pip or conda).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ...errors import InvalidArgument
from ...policy.engine import Approvals
from ...policy.schema import (
    PackagePolicy,
    WorkspaceSecurity,
    apply_environ,
    effective_policy,
    load_workspace_security_file,
    policy_from_document,
    workspace_security_from_document,
)
from ...settings import AgentConfig
from ...store.workspaces import Workspace

__all__ = ["FORCEABLE", "SECURITY_FILE", "Policies", "without"]

#: A workspace's own tightening of the policy, read from its directory when present.
SECURITY_FILE = "workspace-security.yaml"
#: Rules an admin's ``--force`` overrides: the package lists, never the install source or channel.
FORCEABLE = frozenset({"blocked_packages", "approval_required", "allowlist"})

_FileOverlay = tuple[int | None, WorkspaceSecurity | None, InvalidArgument | None]


def without(policy: PackagePolicy, names: frozenset[str]) -> PackagePolicy:
    """``policy`` with ``names`` taken off its lists (an admin's ``--force``, for one install)."""
    allowlist = None if policy.allowlist is None else policy.allowlist | names
    return dataclasses.replace(policy, blocked_packages=policy.blocked_packages - names,
                               approval_required=policy.approval_required - names, allowlist=allowlist)


class Policies:
    """The global policy, the workspaces' effective policies and their approvals (cached)."""

    def __init__(self, config: AgentConfig) -> None:
        source = str(config.path) if config.path else "agent.yaml"
        self.global_policy = apply_environ(
            policy_from_document(config.raw.get("package_management"), source=source,
                                 config_dir=config.path.parent if config.path else None), config.environ)
        self._security: dict[str, WorkspaceSecurity] = {}
        # ws.id -> (mtime_ns of workspace-security.yaml or None, last good overlay, error)
        self._files: dict[str, _FileOverlay] = {}
        self._policies: dict[str, tuple[int | None, PackagePolicy]] = {}
        self._approvals: dict[tuple[str, bool], Approvals] = {}
        self._approved_rows: dict[tuple[str, bool], list[tuple[str, str]]] = {}

    def load_approvals(self, rows: list[tuple[str, str, str, bool]]) -> None:
        """The approved requests from the store: ``(workspace id, package, specifier, conda)``."""
        for ws_id, package, specifier, conda in rows:
            self._approved_rows.setdefault((ws_id, conda), []).append((package, specifier))

    def security(self, ws: Workspace) -> WorkspaceSecurity:
        """The workspace's ``security:`` overlay (validated when it was created)."""
        overlay = self._security.get(ws.id)
        if overlay is None:
            overlay = workspace_security_from_document(ws.config.get("security") or None,
                                                       source=f"workspace {ws.name}", key="security")
            self._security[ws.id] = overlay
        return overlay

    def _file_overlay(self, ws: Workspace) -> _FileOverlay:
        path = Path(ws.path) / SECURITY_FILE
        try:
            mtime: int | None = path.stat().st_mtime_ns
        except OSError:
            mtime = None
        hit = self._files.get(ws.id)
        if hit is not None and hit[0] == mtime:
            return hit
        entry: _FileOverlay = (None, None, None)
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
        for cache in (self._security, self._files, self._policies):
            cache.pop(ws.id, None)
        for conda in (False, True):
            self._approvals.pop((ws.id, conda), None)
            self._approved_rows.pop((ws.id, conda), None)
