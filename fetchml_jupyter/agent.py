"""Talking to the agent's ``/access/v1`` endpoints, and the one-second answer cache.

Every call carries the server's own credential; the agent knows which workspace it is bound to.
When the agent cannot be reached, access is refused (503), never granted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

from jupyter_server.auth import User
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from . import state

__all__ = ["AgentClient", "AgentUnavailable", "Answer", "FetchmlUser", "Refusal", "Resolver"]

log = logging.getLogger("fetchml_jupyter")

MAX_TTL = 1.0
# While the agent cannot be reached (restarting, say), a person it recently vouched for keeps the
# access it last answered, for at most this long; nobody new gets in, and no refusal is relaxed.
OFFLINE_GRACE = 300.0


class AgentUnavailable(Exception):
    """The agent did not answer; the request is refused with 503."""


@dataclass
class FetchmlUser(User):
    """A Jupyter ``User`` with the role and allowed ``(action, resource)`` pairs the agent sent.

    The watcher updates ``role``/``permissions`` in place when a person's role changes."""

    role: str = ""
    permissions: frozenset[tuple[str, str]] = field(default_factory=frozenset)
    needed: dict[str, str | None] = field(default_factory=dict)
    all_allowed: bool = False
    kind: str = ""

    def allows(self, action: str, resource: str) -> bool:
        return self.all_allowed or (action, resource) in self.permissions

    def update_from(self, other: FetchmlUser) -> None:
        self.role, self.permissions, self.needed, self.all_allowed = (
            other.role, other.permissions, other.needed, other.all_allowed)


@dataclass(frozen=True)
class Answer:
    user: FetchmlUser
    session_expires_at: float | None = None
    session_token: str | None = None


@dataclass(frozen=True)
class Refusal:
    status: int
    message: str
    mfa_required: bool = False


def _answer(doc: dict[str, Any]) -> Answer:
    u = doc["user"]
    user = FetchmlUser(
        username=u["username"], name=u["name"], display_name=u["display_name"], initials=u.get("initials"),
        color=u.get("color"), role=doc.get("role", ""),
        permissions=frozenset((a, r) for a, r in doc.get("permissions", [])),
        needed=dict(doc.get("needed") or {}), all_allowed=bool(doc.get("all")), kind=doc.get("kind", ""),
    )
    session = doc.get("session") or {}
    return Answer(user, session.get("expires_at"), doc.get("session_token"))


def _refusal(status: int, doc: dict[str, Any]) -> Refusal:
    return Refusal(status, str(doc.get("message") or "access refused"), doc.get("error") == "mfa_required")


class AgentClient:
    """POSTs JSON to ``{base}/v1/...`` with the server credential."""

    def __init__(self, base_url: str, credential: str, ca_pem: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {credential}", "Content-Type": "application/json"}
        self._ssl: ssl.SSLContext | None = None
        if ca_pem and self.base_url.startswith("https:"):
            # The agent's own certificate, pinned: workspaces reach it at an address (a bridge
            # gateway, a node IP) that its name need not match.
            self._ssl = ssl.create_default_context(cadata=ca_pem)
            self._ssl.check_hostname = False
        self._http = AsyncHTTPClient(force_instance=True, max_clients=32)

    async def post(self, path: str, body: dict[str, Any], timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
        req = HTTPRequest(self.base_url + path, method="POST", body=json.dumps(body), headers=self._headers,
                          connect_timeout=2.0, request_timeout=timeout, ssl_options=self._ssl)
        try:
            resp = await self._http.fetch(req, raise_error=False)
        except (TimeoutError, OSError, HTTPClientError) as exc:
            raise AgentUnavailable(f"the agent at {self.base_url} cannot be reached ({exc})") from None
        if resp.code == 599 or resp.code >= 500:
            raise AgentUnavailable(f"the agent at {self.base_url} did not answer ({resp.code} {resp.error or ''})")
        try:
            doc = json.loads(resp.body or b"{}")
        except ValueError:
            raise AgentUnavailable("the agent's answer is not JSON") from None
        return resp.code, doc

    def close(self) -> None:
        self._http.close()


Key = tuple[str, str, str]  # (credential, peer, X-Forwarded-For)


class Resolver:
    """"Who is this credential": answers cached for at most :data:`MAX_TTL` (and the agent's
    ``ttl``), concurrent misses for one key sharing one request."""

    def __init__(self, client: AgentClient) -> None:
        self.client = client
        self._cache: dict[Key, tuple[float, Answer | Refusal]] = {}
        self._inflight: dict[Key, asyncio.Future[Answer | Refusal]] = {}
        self._last_good: dict[Key, tuple[float, Answer]] = {}

    async def resolve(self, credential: str, peer: str, forwarded_for: str) -> Answer | Refusal:
        key = (credential, peer, forwarded_for)
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[Answer | Refusal] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            result = await self._ask(key)
            fut.set_result(result)
            return result
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: waiters re-raise it
            raise
        finally:
            self._inflight.pop(key, None)

    async def _ask(self, key: Key) -> Answer | Refusal:
        try:
            status, doc = await self.client.post(
                "/v1/resolve", {"credential": key[0], "peer": key[1], "forwarded_for": key[2]})
        except AgentUnavailable:
            last = self._last_good.get(key)
            if last is not None and time.monotonic() - last[0] < OFFLINE_GRACE:
                return last[1]
            raise
        result: Answer | Refusal = _answer(doc) if status == 200 else _refusal(status, doc)
        if status == 200:
            state.learn_label(doc.get("workspace"))
        self._store(key, result, float(doc.get("ttl") or MAX_TTL) if status == 200 else MAX_TTL)
        return result

    def _store(self, key: Key, result: Answer | Refusal, ttl: float) -> None:
        if len(self._cache) > 10000:
            now = time.monotonic()
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
        self._cache[key] = (time.monotonic() + min(MAX_TTL, ttl), result)
        if isinstance(result, Answer):
            if len(self._last_good) > 10000:
                self._last_good.clear()
            self._last_good[key] = (time.monotonic(), result)
        else:
            self._last_good.pop(key, None)

    async def refresh(self, keys: list[Key]) -> dict[Key, Answer | Refusal]:
        """Ask again for ``keys`` at once, bypassing the cache (and refreshing it)."""
        status, doc = await self.client.post("/v1/resolve-many", {"items": [
            {"credential": c, "peer": p, "forwarded_for": f} for c, p, f in keys]})
        if status != 200:
            raise AgentUnavailable(f"the agent refused to re-check connections ({status}: {doc.get('message')})")
        out: dict[Key, Answer | Refusal] = {}
        for key, item in zip(keys, doc.get("answers") or [], strict=False):
            result = _answer(item) if "user" in item else _refusal(int(item.get("status") or 403), item)
            self._store(key, result, MAX_TTL)
            out[key] = result
        return out

    def forget(self, credential: str) -> None:
        self._cache = {k: v for k, v in self._cache.items() if k[0] != credential}

    async def login(self, **fields: str) -> Answer | Refusal:
        status, doc = await self.client.post("/v1/login", dict(fields))
        return _answer(doc) if status == 200 else _refusal(status, doc)

    async def logout(self, session_token: str) -> None:
        await self.client.post("/v1/logout", {"session": session_token})
