"""The agent process: configuration, store, runtime and services wired together.

One :class:`Agent` lives in the asyncio process started by ``fetchml-agent serve``. It owns the
in-memory view of workspaces (written through to SQLite on every change), the runtime, the audit
log and the reconcile loop that notices workspaces that died or were adopted after a restart.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from pathlib import Path
from typing import Any

from . import __version__
from .config import AgentConfig, User
from .errors import AuthenticationFailed, NotFound, Overloaded
from .runtimes.base import Runtime
from .store import Store
from .store.audit import insert_event
from .store.workspaces import Workspace, load_workspaces, update_workspace

__all__ = ["Agent", "make_runtime"]

log = logging.getLogger("fetchml.agent")

RECONCILE_INTERVAL = 5.0


def make_runtime(config: AgentConfig) -> Runtime:
    """The runtime named by ``runtime:``; imported lazily so unused backends cost nothing."""
    if config.runtime == "local":
        from .runtimes.local import LocalRuntime

        local = config.section("local")
        return LocalRuntime(
            config.data_dir,
            port_base=local.get("port_base", 8888),
            start_timeout=float(local.get("start_timeout", 120)),
            use_cgroups=bool(local.get("cgroup", True)),
            stop_grace=float(local.get("stop_grace", 5)),
        )
    if config.runtime == "docker":
        from .runtimes.docker import DockerRuntime

        return DockerRuntime.from_config(config)
    if config.runtime == "nomad":
        from .runtimes.nomad import NomadRuntime

        return NomadRuntime.from_config(config)
    raise ValueError(f"unknown runtime {config.runtime!r}")


class Agent:
    def __init__(self, config: AgentConfig, runtime: Runtime | None = None) -> None:
        self.config = config
        self.started_at = time.time()
        self.version = __version__
        self.store = Store(config.data_dir / "agent.db")
        self.runtime = runtime or make_runtime(config)
        self.users = {u.name: u for u in config.users}
        self.workspaces: dict[str, Workspace] = {}
        self.locks: dict[str, asyncio.Lock] = {}
        limits = config.section("limits")
        self.start_slots = asyncio.Semaphore(limits.get("max_concurrent_starts", 4))
        self.max_workspaces = int(limits.get("max_workspaces", 1000))
        self.extensions: dict[str, Any] = {}  # services of other concerns, keyed by name
        self._tasks: list[asyncio.Task[None]] = []
        self._list_cache: dict[str, Any] = {}
        from .service import setup_agent

        setup_agent(self)

    # -- start/stop -----------------------------------------------------------------------------

    async def start(self) -> None:
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        (self.config.data_dir / "workspaces").mkdir(exist_ok=True)
        await asyncio.get_running_loop().run_in_executor(None, self.store.open)
        await self.runtime.open()
        for ws in await self.store.run(load_workspaces):
            self.workspaces[ws.name] = ws
        from .service.workspaces import adopt_all

        await adopt_all(self)
        for hook in self.extensions.get("start_hooks", []):  # async fn(agent): other concerns start
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
        for hook in self.extensions.get("shutdown_hooks", []):
            try:
                await hook(self)
            except Exception:
                log.exception("shutdown hook failed")
        await self.runtime.close()
        await asyncio.get_running_loop().run_in_executor(None, self.store.close)

    async def _reconcile_loop(self) -> None:
        from .service.workspaces import reconcile_once

        while True:
            await asyncio.sleep(RECONCILE_INTERVAL)
            try:
                await reconcile_once(self)
            except Exception:  # the loop must survive a backend hiccup
                log.exception("reconcile failed")

    # -- auth -----------------------------------------------------------------------------------

    def authenticate(self, key_hash16: bytes) -> User:
        """The user whose key hash matches, compared in constant time against every user."""
        found: User | None = None
        for user in self.config.users:
            if hmac.compare_digest(user.key_hash16, key_hash16):
                found = user
        if found is None:
            raise AuthenticationFailed(
                "authentication failed: the API key is not known to this agent",
                "check --api-key / FETCHML_API_KEY, or ask an admin for a key",
            )
        return found

    def authenticate_key(self, api_key: str) -> User:
        import hashlib

        return self.authenticate(hashlib.sha256(api_key.encode("utf-8")).digest()[:16])

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
        raise NotFound(
            f"no workspace or service named {ref!r}",
            "`ml jupyter list` shows the workspaces you can see",
        )

    async def save(self, ws: Workspace) -> None:
        ws.updated_at = time.time()
        await self.store.run(update_workspace, ws)
        self.invalidate()

    def invalidate(self) -> None:
        self._list_cache.clear()

    def list_cache(self) -> dict[str, Any]:
        return self._list_cache

    async def audit(
        self, user: str, action: str, workspace: str | None, outcome: str = "ok", **details: Any
    ) -> None:
        event_id = await self.store.run(insert_event, user, action, workspace, outcome, details)
        for listener in self.extensions.get("audit_listeners", []):
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
