"""Warm pools (agent.yaml ``warm_pool:``): workspaces started ahead of time, claimed by a create.

A pool keeps ``size`` members ready (docs/warm-pool.md). A create that asks for nothing but what
a pool was started with (no image or the profile's, the profile's cpu/memory/gpu, no template,
workspace-config, security, environment, packages, password or directory of its own) claims the
oldest ready member: the new workspace takes over the member's server credential (bound to it
at the agent: :meth:`~fetchml_agent.service.context.ServerBinder.bind_server`), its package index
key and its backend resources (:class:`~fetchml_agent.runtimes.base.WarmPool`), and is running
when the create answers. A member is claimed once and never goes back to a pool; the pool refills
in the background, one member at a time, leaving the agent's start slots to people.

Everything a start does still happens on a claim: the quota check (before), the startup package
scan and the other before- and after-start hooks, the audit event. When a claim fails (the member
died, the backend refused) the member is discarded and the create starts cold with fresh secrets.

Members are nobody's: no quota counts them; they count against ``limits.max_workspaces`` (the
refill stops there); a member holds a GPU only when its profile says ``hold_gpu`` (a GPU is then
claimed from the runtime's allocator under the member's name, and moves to the workspace at the
claim). Their secrets live in this process only: after an agent restart, members nobody claimed
are discarded and the pools refill.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from typing import Any

from ...allocators import workspace_holder
from ...errors import FetchmlError, InsufficientResources
from ...runtimes.base import PoolMember, Resources, WarmPool, find_capability
from ...store.workspaces import Workspace
from ..calls import Call
from ..context import AgentContext
from ..workspaces import managed_root
from .settings import PoolProfile

__all__ = ["Pool", "PoolManager", "matches"]

log = logging.getLogger("fetchml.pools")

HEALTH_INTERVAL = 30.0
_SPECIAL = ("template", "config", "security", "environment", "packages", "password", "workspace")


@dataclass
class Pool:
    """One pool's members and what happened to it."""

    profile: PoolProfile
    ready: list[PoolMember] = field(default_factory=list)
    preparing: int = 0
    claims: int = 0
    misses: int = 0  # matching creates that found no member ready (they started cold)
    failures: int = 0  # members that failed to start or to be claimed
    last_error: str = ""
    blocked: str = ""  # why this runtime cannot keep this pool at all
    claim_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=200))

    def view(self) -> dict[str, Any]:
        times = sorted(self.claim_seconds)
        return {
            "name": self.profile.name,
            "size": self.profile.size,
            "ready": len(self.ready),
            "preparing": self.preparing,
            "claims": self.claims,
            "misses": self.misses,
            "failures": self.failures,
            "last_error": self.last_error or None,
            "blocked": self.blocked or None,
            "claim_ms_p50": round(times[len(times) // 2] * 1000, 1) if times else None,
            "profile": self.profile.describe(),
        }


def matches(profile: PoolProfile, ws: Workspace, asked: dict[str, Any]) -> bool:
    """Whether a new workspace (its record, and the create's arguments ``asked``) is what
    ``profile``'s members were started as."""
    if any(asked.get(k) for k in _SPECIAL) or ws.config.get("env") or ws.config.get("security") \
            or ws.config.get("packages") or ws.password_hash:
        return False
    r = Resources.from_dict(ws.resources)
    p = profile.resources
    return (ws.image or None) == profile.image and r.cpu == p.cpu and r.memory_mb == p.memory_mb \
        and r.gpu == p.gpu and r.disk_mb is None


class PoolManager:
    """The agent's warm pools; see the module docstring."""

    def __init__(self, agent: AgentContext, profiles: tuple[PoolProfile, ...], counters: Counter[str]) -> None:
        self.agent = agent
        self.pools = {p.name: Pool(p) for p in profiles}
        self.counters = counters
        self.backend: WarmPool | None = None
        self.unavailable = ""  # why there are no pools here (said in ml status)
        self._keys: dict[str, str] = {}  # member id -> its package index key
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        if not self.pools:
            return
        self.backend = find_capability(self.agent.runtime, WarmPool)
        if self.backend is None:
            self.unavailable = f"the {self.agent.runtime.name} runtime keeps no warm pools: " + WarmPool.hint
            log.warning("warm_pool: %s", self.unavailable)
            return
        why_not = self.backend.pool_unavailable()
        if why_not:
            self.unavailable = why_not
            log.warning("warm_pool: %s", why_not)
            self.backend = None
            return
        for pool in self.pools.values():
            if pool.profile.resources.gpu and not pool.profile.hold_gpu and not self.backend.gpus_at_claim:
                pool.blocked = (f"the {self.agent.runtime.name} runtime gives a workload its GPUs when it starts: "
                                "set hold_gpu: true for this profile to keep GPU members warm")
        await self._discard_leftovers()
        self._task = asyncio.create_task(self._refill_loop(), name="warm-pools")
        self._wake.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.backend is None:
            return
        members = [m for pool in self.pools.values() for m in pool.ready]
        for pool in self.pools.values():
            pool.ready.clear()
        # Their secrets die with this process: take them down rather than leave them running.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(self._discard(m.id, m.state) for m in members)), 60)

    async def _discard_leftovers(self) -> None:
        """Members of an earlier agent that no workspace claimed go (their secrets are lost)."""
        assert self.backend is not None
        claimed = {str(ws.config.get("pool_member")) for ws in self.agent.workspaces.values() if ws.config.get("pool_member")}
        try:
            found = await self.backend.list_members()
        except FetchmlError as exc:
            log.warning("warm_pool: cannot list the members left by an earlier agent: %s", exc)
            return
        for member_id, state in found.items():
            if member_id not in claimed:
                await self._discard(member_id, state)
                self.counters["pool_leftovers_discarded"] += 1

    async def _discard(self, member_id: str, state: dict[str, Any] | None) -> None:
        assert self.backend is not None
        self._keys.pop(member_id, None)
        try:
            await self.backend.discard_member(member_id, state)
        except FetchmlError as exc:
            log.warning("warm_pool: could not discard member %s: %s", member_id, exc)
        gpus = self.agent.runtime.gpus
        if gpus is not None:
            gpus.release(workspace_holder(member_id))

    # -- refilling ---------------------------------------------------------------------------------

    def _room(self) -> bool:
        members = sum(len(p.ready) + p.preparing for p in self.pools.values())
        return len(self.agent.workspaces) + members < self.agent.max_workspaces

    async def _refill_loop(self) -> None:
        checked = time.monotonic()
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=5.0)
            self._wake.clear()
            try:
                if time.monotonic() - checked > HEALTH_INTERVAL:
                    checked = time.monotonic()
                    await self._check_health()
                await self._refill()
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop outlives a bad member
                log.exception("warm_pool: refill failed")

    async def _refill(self) -> None:
        for pool in self.pools.values():
            if pool.blocked:
                continue
            while len(pool.ready) + pool.preparing < pool.profile.size and self._room():
                if self.agent.start_slots.locked():
                    return  # people are starting workspaces: they go first; try again soon
                if not await self._prepare(pool):
                    return  # it failed: wait for the next round instead of retrying at once

    async def _prepare(self, pool: Pool) -> bool:
        assert self.backend is not None
        profile = pool.profile
        if self.backend.members_are_workspaces:
            # The claiming workspace takes this id and this directory (its JupyterLab's root_dir).
            member_id = "ws-" + secrets.token_hex(6)
            path = managed_root(self.agent) / f".pool-{member_id}"
        else:
            member_id = "warm_" + secrets.token_hex(5)
            path = self.agent.data_dir / "workspaces" / member_id
        stub = Workspace(
            id=member_id, name=member_id, owner="", path=str(path),
            runtime=self.agent.runtime.name, token=secrets.token_hex(24), index_key=secrets.token_urlsafe(18),
            created_at=time.time(), updated_at=time.time(), resources=profile.resources.to_dict(),
            image=profile.image, config={"pool_member": member_id},
        )
        gpu_ids: tuple[int, ...] = ()
        gpus = self.agent.runtime.gpus
        pool.preparing += 1
        try:
            if profile.resources.gpu and profile.hold_gpu:
                if gpus is None:
                    raise InsufficientResources("this runtime places GPUs itself: members cannot hold one")
                gpu_ids = gpus.claim(workspace_holder(member_id), profile.resources.gpu)
            spec = replace(self.agent.workspace_spec(stub, gpu_ids), labels={"pool": profile.name})
            async with self.agent.start_slots:
                started = await self.backend.prepare_member(spec, _quiet)
        except FetchmlError as exc:
            if gpus is not None:
                gpus.release(workspace_holder(member_id))
            pool.failures += 1
            pool.last_error = exc.message
            log.warning("warm_pool %s: a member did not start: %s", profile.name, exc)
            return False
        finally:
            pool.preparing -= 1
        self._keys[member_id] = stub.index_key
        pool.ready.append(PoolMember(member_id, profile.name, spec, started.state, started.url, time.time()))
        pool.last_error = ""
        return True

    async def _check_health(self) -> None:
        """Members that died while waiting are dropped (and replaced)."""
        for pool in self.pools.values():
            for member in list(pool.ready):
                try:
                    alive = (await self.agent.runtime.poll(member.state)).state == "running"
                except FetchmlError:
                    alive = False
                if not alive and member in pool.ready:
                    pool.ready.remove(member)
                    pool.failures += 1
                    pool.last_error = f"member {member.id} stopped while waiting"
                    await self._discard(member.id, member.state)
        self._wake.set()

    # -- claiming ----------------------------------------------------------------------------------

    def reserve(self, ws: Workspace, asked: dict[str, Any]) -> PoolMember | None:
        """The oldest ready member of the pool ``ws`` matches, taken out of it; ``ws`` takes over
        its credential and index key (see the module docstring). ``None``: start cold."""
        if self.backend is None:
            return None
        pool = next((p for p in self.pools.values() if matches(p.profile, ws, asked)), None)
        if pool is None or pool.blocked:
            return None
        self._wake.set()  # whatever happens, the pool refills
        if not pool.ready:
            pool.misses += 1
            return None
        member = pool.ready.pop(0)
        if self.backend.members_are_workspaces:  # not recorded yet: it can still take them
            ws.id, ws.path = member.spec.id, str(member.spec.path)
        ws.token, ws.index_key = member.spec.token, self._keys.pop(member.id)
        ws.config["pool_member"], ws.config["pool"] = member.id, pool.profile.name
        return member

    def _forget_reservation(self, ws: Workspace) -> None:
        """``ws`` starts cold after all: new secrets of its own, no member behind it (where members
        are workspaces, it keeps the member's id and path: it is recorded under them, and the
        discarded member took its directory along, which the cold start makes anew)."""
        ws.token, ws.index_key = secrets.token_hex(24), secrets.token_urlsafe(18)
        ws.config.pop("pool_member", None)
        ws.config.pop("pool", None)

    async def start_reserved(self, call: Call, ws: Workspace, member: PoolMember) -> bool:
        """Make ``member`` the running workload of ``ws`` (record saved, status starting). False
        when the backend could not (``ws`` then has fresh secrets for a cold start); errors of the
        start hooks (a refusing package scan) are raised, as on a cold start."""
        assert self.backend is not None
        pool = self.pools[member.pool]
        t0 = time.perf_counter()
        agent = self.agent
        ws.status, ws.status_message = "starting", ""
        await agent.save(ws)
        try:
            for hook in agent.services.hooks.before_start:
                await hook(agent, call, ws)
        except BaseException:
            await self._discard(member.id, member.state)
            self._forget_reservation(ws)
            raise
        spec = agent.workspace_spec(ws, member.spec.gpu_ids)
        try:
            started = await self.backend.claim_member(member, spec)
        except FetchmlError as exc:
            pool.failures += 1
            pool.last_error = f"claim of {member.id} failed: {exc.message}"
            log.warning("warm_pool %s: %s; starting %s cold", pool.profile.name, pool.last_error, ws.name)
            await self._discard(member.id, member.state)
            self._forget_reservation(ws)
            await agent.save(ws)
            return False
        gpus = agent.runtime.gpus
        if gpus is not None and member.spec.gpu_ids:  # the member's GPUs are the workspace's now
            gpus.release(workspace_holder(member.id))
            gpus.hold(workspace_holder(ws.id), member.spec.gpu_ids, what=f"workspace {ws.name}")
        try:
            for after in agent.services.hooks.after_start:
                await after(agent, call, ws, started.state)
            binder = agent.services.server_binder
            if binder is not None:
                await binder.bind_server(ws.token, ws)
        except BaseException:
            await agent.runtime.stop(started.state, grace=2.0)
            if gpus is not None:
                gpus.release(workspace_holder(ws.id))
            raise
        elapsed = time.perf_counter() - t0
        ws.runtime_state, ws.url, ws.limits = started.state, started.url, started.limits
        ws.status, ws.status_message, ws.started_at = "running", "", time.time()
        ws.config["start"] = {"kind": "claim", "pool": pool.profile.name, "member": member.id,
                              "seconds": round(elapsed, 4), "at": ws.started_at}
        await agent.save(ws)
        pool.claims += 1
        pool.claim_seconds.append(elapsed)
        self.counters[f"claims_{pool.profile.name}"] += 1
        return True

    def view(self) -> dict[str, Any]:
        return {"pools": [p.view() for p in self.pools.values()], "unavailable": self.unavailable or None}


async def _quiet(line: str) -> None:
    """Progress of a member's start: nobody is waiting for it."""
