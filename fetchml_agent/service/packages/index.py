"""The agent's filtering package index: its lifecycle, the URLs workspaces use, its decisions.

The index (:mod:`fetchml_agent.policy.index`) is mounted at ``/index``; every workspace's
installers point at its own URL, ``{base}/index/{ws.index_key}/simple/``, where ``base`` is the
runtime's :class:`~fetchml_agent.runtimes.base.PackageIndexReach` base URL when it has one (the
docker and nomad runtimes: an address their workspaces can reach), else agent.yaml
``public_url``, else the listen address. The variables (``PIP_INDEX_URL``, uv's,
``PIP_CONFIG_FILE``, ``CONDARC``, ``PIP_CACHE_DIR``) are the workspace's environment; the files
they name are written under ``DATA_DIR/packages/<workspace id>/`` on the agent's host, for a
runtime whose workspaces see the agent's files (``capabilities.host_files``). What the index
decides while pip runs is audited (``package.index``, once a minute per package and outcome) and,
during an install, collected for its answer.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Receive, Scope, Send

from ...aio import run_blocking
from ...core import AgentCore
from ...policy.engine import ALLOW, Approvals, Decision
from ...policy.index import (
    IndexContext,
    IndexService,
    default_upstream,
    make_index_app,
    workspace_index_config,
)
from ...policy.schema import PackagePolicy
from ...runtimes.base import PackageIndexReach, find_capability
from ...store.workspaces import Workspace
from .decisions import decision_details, outcome
from .policies import Policies, without

if TYPE_CHECKING:
    from starlette.applications import Starlette

__all__ = ["PackageIndex"]

_INDEX_AUDIT_TTL = 60.0


class PackageIndex:
    """The index app (made on first use), workspace index URLs and files, decisions seen."""

    def __init__(self, agent: AgentCore, policies: Policies) -> None:
        self.agent = agent
        self.policies = policies
        config = agent.config
        section = config.section("package_index")
        self.configured_upstream: str | None = section.get("upstream")
        self.ca_bundle: str | None = section.get("ca_bundle")
        cache = Path(section.get("cache_dir") or config.data_dir / "index-cache").expanduser()
        if not cache.is_absolute():
            cache = (config.path.parent if config.path else Path.cwd()) / cache
        self.cache_dir = cache
        self._app: Starlette | None = None
        self._app_lock = asyncio.Lock()
        self._app_task: asyncio.Task[Any] | None = None
        self.forced: dict[str, frozenset[str]] = {}  # ws.id -> packages an admin's --force lets through
        self.watch: dict[str, list[Decision]] = {}  # ws.id -> refusals seen during its install
        self._by_key: dict[str, str] = {}
        self._build_keys: set[str] = set()  # live keys of build_index_url()
        self._audited: dict[tuple[str | None, str | None, str, str], float] = {}
        self.requests: collections.Counter[tuple[str, str]] = collections.Counter()  # (kind, status class)
        # The index's upstream client logs every request at INFO; the index logs its refusals itself.
        logging.getLogger("httpx").setLevel(logging.WARNING)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        # Build the index in the background: finding the default upstream asks pip (~0.5 s).
        self._app_task = asyncio.create_task(self.app(), name="package-index")

    async def close(self) -> None:
        if self._app_task is not None and not self._app_task.done():
            self._app_task.cancel()
        if self._app is not None:
            await self._app.state.index.aclose()

    async def app(self) -> Starlette:
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
                                               on_decision=self._on_decision, ca_bundle=self.ca_bundle)
        return self._app

    async def service(self) -> IndexService:
        service_: IndexService = (await self.app()).state.index
        return service_

    def cache_lookups(self) -> collections.Counter[tuple[str, str]]:
        """The index's cache hits and misses so far, by (page or file, hit or miss); empty before
        the index is made (for /metrics)."""
        return self._app.state.index.cache_lookups if self._app is not None else collections.Counter()

    @property
    def upstream(self) -> str | None:
        """The upstream index in use (once the app is made), else the configured one."""
        return self._app.state.index.upstream if self._app is not None else self.configured_upstream

    def mount(self) -> ASGIApp:
        """The ASGI app mounted at ``/index``: forwards to the index once it is made."""

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                return
            path = scope.get("path", "")
            kind = "file" if "/files/" in path else ("root" if path.endswith("/simple/") else "project")

            async def counted(message: Any) -> None:  # fetchml_index_requests_total (issue 17)
                if message["type"] == "http.response.start":
                    self.requests[kind, f"{message['status'] // 100}xx"] += 1
                await send(message)

            await (await self.app())(scope, receive, counted)

        return app

    # -- URLs and files ---------------------------------------------------------------------------

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
        policy = self.policies.global_policy
        if not self.shares_files():
            return workspace_index_config(self.index_url(ws), policy).env
        d = self.files_dir(ws)
        # Only the .condarc depends on the policy, and it is written by write_index_files.
        cfg = workspace_index_config(self.index_url(ws), policy, pip_conf_path=str(d / "pip.conf"),
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

    def forget(self, ws: Workspace) -> None:
        self.forced.pop(ws.id, None)
        self.watch.pop(ws.id, None)
        self._by_key.pop(ws.index_key, None)

    # -- what the index asks and decides -----------------------------------------------------------

    def _workspace_by_key(self, key: str) -> Workspace | None:
        name = self._by_key.get(key)
        ws = self.agent.workspaces.get(name) if name else None
        if ws is None or ws.index_key != key:
            self._by_key = {w.index_key: w.name for w in self.agent.workspaces.values()}
            name = self._by_key.get(key)
            ws = self.agent.workspaces.get(name) if name else None
        return ws

    async def _resolve(self, key: str) -> IndexContext | None:
        if key in self._build_keys:
            return IndexContext(self.policies.global_policy, Approvals(), None)
        ws = self._workspace_by_key(key)
        if ws is None:
            return None
        policy = self.policies.policy_for(ws, strict=False)
        forced = self.forced.get(ws.id)
        if forced:
            policy = without(policy, forced)
        return IndexContext(policy, self.policies.approvals(ws), ws.name)

    async def _on_decision(self, ctx: IndexContext, decision: Decision) -> None:
        ws = self.agent.workspaces.get(ctx.workspace or "")
        if ws is not None and ws.id in self.watch and (decision.decision != ALLOW or decision.would_have):
            self.watch[ws.id].append(decision)
        # A page and then its files ask about the same name: one audit event per minute is enough.
        key = (ctx.workspace, decision.package, decision.decision, decision.rule)
        now = time.monotonic()
        if now - self._audited.get(key, -_INDEX_AUDIT_TTL) < _INDEX_AUDIT_TTL:
            return
        if len(self._audited) > 10000:
            self._audited = {k: t for k, t in self._audited.items() if now - t < _INDEX_AUDIT_TTL}
        self._audited[key] = now
        await self.agent.audit("index", "package.index", ctx.workspace, outcome(decision), via="index",
                               **decision_details(decision))
