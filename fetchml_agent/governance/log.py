"""Writing the audit chain: :meth:`AuditLog.record` is where ``Agent.audit`` writes (through the
agent's :class:`~fetchml_agent.governance.service.Governance`).

One :class:`AuditLog` per agent holds the key (loaded, or created at the first start, by
:meth:`AuditLog.open` on the store's thread), the pattern of configured user names (details that
mention one go to the personal document) and the workspace names it has seen, so an event keeps
its workspace's id even after the workspace is gone (the deletion event itself).
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

from ..core import AgentCore
from ..errors import InvalidArgument
from ..store.audit import ChainWriter, adopt_legacy, count_chained, last_workspace_id, read_head
from ..store.chain import ChainKey, names_pattern
from .keys import key_path, load_key, load_or_create_key

__all__ = ["AuditLog"]

log = logging.getLogger("fetchml.audit")


class AuditLog:
    def __init__(self, data_dir: Path, user_names: list[str]) -> None:
        self.key_file = key_path(data_dir)
        self.names = names_pattern(user_names)
        self.key: ChainKey | None = None
        self.writer: ChainWriter | None = None
        self.ids: dict[str, str] = {}
        self.adopted = 0

    def open(self, conn: sqlite3.Connection) -> ChainKey:
        """The chain's key, on the store's thread: loaded, or created when the chain is empty.

        Raises :class:`InvalidArgument` when the key file is missing or is another key while
        the database holds a chain, or is readable by others.
        """
        if self.key is not None:
            return self.key
        head = read_head(conn)
        raw = load_key(self.key_file)
        if raw is None:
            if head is not None:
                raise InvalidArgument(
                    f"the audit key {self.key_file} is missing, but the audit chain in this database holds "
                    f"{head.last_id} events signed with key {head.key_id}",
                    "restore the key file (mode 0600) from the backup taken with agent.db; see docs/audit.md")
            raw, created = load_or_create_key(self.key_file)
            if created:
                log.info("created the audit key %s", self.key_file)
        key = ChainKey(raw)
        if head is not None and head.key_id != key.key_id:
            raise InvalidArgument(
                f"the audit key {self.key_file} (key {key.key_id}) is not the one this database's audit chain "
                f"was signed with (key {head.key_id})", "restore the matching key file; see docs/audit.md")
        self.adopted = adopt_legacy(conn, key, self.names)
        if self.adopted:
            log.info("chained %d audit events written before the chain existed", self.adopted)
        self.writer = ChainWriter(key, self.names)
        self.key = key
        return key

    def append(self, conn: sqlite3.Connection, user: str, action: str, workspace: str | None,
               workspace_id: str | None, outcome: str, details: dict[str, Any]) -> int:
        self.open(conn)
        assert self.writer is not None
        if workspace and workspace_id is None:
            workspace_id = last_workspace_id(conn, workspace)
        return self.writer.append(conn, user, action, workspace, workspace_id, outcome, details)

    def events(self, conn: sqlite3.Connection) -> int:
        self.open(conn)
        return count_chained(conn)

    async def record(self, agent: AgentCore, user: str, action: str, workspace: str | None, outcome: str,
                     details: dict[str, Any]) -> int:
        """Chains one event; returns its id. The workspace is keyed by its id (its name kept for display)."""
        ws = agent.workspaces.get(workspace) if workspace else None
        workspace_id = ws.id if ws is not None else (self.ids.get(workspace) if workspace else None)
        if ws is not None and workspace:
            self.ids[workspace] = ws.id
        if action == "workspace.delete" and workspace:
            self.ids.pop(workspace, None)
        return await agent.store.run(self.append, user, action, workspace, workspace_id, outcome, details)
