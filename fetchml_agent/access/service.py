"""The agent's side of access to JupyterLab: who a credential is, what they may do, sessions, MFA.

A workspace's Jupyter Server (with the ``fetchml_jupyter`` extension) holds no role table and no
token of anyone's: for each credential a request carries it asks the agent (:meth:`resolve`,
cached there for at most a second), presenting its own *server credential*, which the agent maps
to the one workspace it is bound to. The answer names the person (name, display name, initials,
colour), their role on that workspace and the ``(action, resource)`` pairs the role allows
(:mod:`fetchml_agent.access.roles`). Everything is decided from memory (sessions, token
generations, grants), so an answer costs microseconds; the store is written behind.

Credentials a person may present to a workspace:

- a *personal token* (``fmlp.``), in the URL that ``ml jupyter info`` prints for them; checked by
  recomputing its HMAC, revoked by bumping its generation;
- a *session* (``fmls.``), the cookie a browser gets from a login (API key, or the workspace
  password for its owner; plus a TOTP code where enrolled or required) or from opening a personal
  URL; ends after ``access.session_idle`` without requests or ``access.session_max`` after login.

Every login (success, failure, MFA failure), every refusal by allowlist and every MFA step is
audited with the client's address.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from ..aio import run_blocking
from ..errors import (
    AuthenticationFailed,
    FetchmlError,
    InvalidArgument,
    MfaRequired,
    NotFound,
    PermissionDenied,
)
from ..service.access import ROLES, role_of
from ..service.context import AgentContext
from ..settings import User
from ..store.access import (
    MfaRow,
    SessionRow,
    bind_server,
    bump_generation,
    delete_mfa,
    end_sessions,
    insert_session,
    load_bindings,
    load_generations,
    load_mfa,
    load_open_sessions,
    query_sessions,
    save_mfa,
    touch_sessions,
)
from ..store.workspaces import Workspace
from . import mfa as totp
from .config import AccessSettings
from .keys import AccessKeys, load_or_create_key
from .networks import allowed, client_address
from .roles import JUPYTER_TABLE, SYSTEM_PERMISSIONS, permissions_for, role_needed

__all__ = ["AccessService", "Identity", "SYSTEM_USER"]

log = logging.getLogger("fetchml.access")

SYSTEM_USER = "fetchml-agent"
ANSWER_TTL = 1.0  # seconds a workspace server may reuse an answer (revocation takes effect within it)
FLUSH_INTERVAL = 5.0
_FAILURE_WINDOW, _FAILURE_LIMIT = 300.0, 10
_RANK_TO_ROLE = {rank: name for name, rank in ROLES.items()}
_COLORS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#469990",
           "#9a6324", "#800000", "#808000", "#000075")


@dataclass(frozen=True)
class Identity:
    """How Jupyter Server and collaboration show a person."""

    username: str
    name: str
    display_name: str
    initials: str
    color: str

    def to_dict(self) -> dict[str, str]:
        return {"username": self.username, "name": self.name, "display_name": self.display_name,
                "initials": self.initials, "color": self.color}


def _initials(display: str) -> str:
    words = [w for w in display.replace(".", " ").replace("_", " ").replace("-", " ").split() if w]
    if len(words) >= 2:
        return (words[0][0] + words[-1][0]).upper()
    return display[:2].upper()


class AccessService:
    """One per agent (``agent.services.access``); see the module docstring."""

    def __init__(self, agent: AgentContext) -> None:
        self.agent = agent
        self.settings = AccessSettings.from_config(agent.config)
        self.keys: AccessKeys | None = None
        self.generations: dict[tuple[str, str], int] = {}
        self.sessions: dict[str, SessionRow] = {}
        self.mfa: dict[str, MfaRow] = {}
        self.bindings: dict[str, str] = {}  # server-credential digest -> workspace id (bound after start)
        self._by_token: dict[str, str] = {}  # digest of a workspace's own credential -> workspace id
        self._seen: dict[str, float] = {}
        self._ended: dict[str, str] = {}  # recently ended session -> why (for a clear refusal)
        self._elevations: dict[tuple[str, bytes], float] = {}
        self._failures: dict[tuple[str, str], list[float]] = {}
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        key = await run_blocking(load_or_create_key, self.agent.data_dir / "access.key")
        self.keys = AccessKeys(key)
        store = self.agent.store
        self.generations = await store.run(load_generations)
        self.sessions = {s.id: s for s in await store.run(load_open_sessions)}
        self.mfa = await store.run(load_mfa)
        self.bindings = await store.run(load_bindings)
        self._task = asyncio.create_task(self._flush_loop(), name="access-flush")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        await self._flush()

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            try:
                await self._expire_sessions()
                await self._flush()
            except Exception:  # the loop outlives a store hiccup
                log.exception("access flush failed")

    async def _flush(self) -> None:
        if self._seen:
            seen, self._seen = self._seen, {}
            await self.agent.store.run(touch_sessions, seen)

    async def _expire_sessions(self) -> None:
        now = time.time()
        for s in list(self.sessions.values()):
            reason = self._expired(s, now)
            if reason:
                await self._end([s], reason)

    def _expired(self, s: SessionRow, now: float) -> str | None:
        if now - s.created_at > self.settings.session_max:
            return "session_max"
        if now - s.last_seen > self.settings.session_idle:
            return "session_idle"
        return None

    async def _end(self, sessions: list[SessionRow], reason: str, by: str | None = None) -> None:
        if not sessions:
            return
        if len(self._ended) > 10000:
            self._ended.clear()
        for s in sessions:
            self.sessions.pop(s.id, None)
            self._seen.pop(s.id, None)
            self._ended[s.id] = reason
        await self.agent.store.run(end_sessions, [s.id for s in sessions], time.time(), reason)
        for s in sessions:
            await self.agent.audit(by or s.user, "access.session_end", s.workspace, session=s.id, person=s.user,
                                   reason=reason)

    @property
    def _k(self) -> AccessKeys:
        if self.keys is None:
            raise RuntimeError("the access service is not started")
        return self.keys

    # -- identities and credentials -----------------------------------------------------------

    def identity(self, name: str) -> Identity:
        display = self.settings.display_names.get(name) or name
        color = _COLORS[int(hashlib.sha256(name.encode()).hexdigest(), 16) % len(_COLORS)]
        return Identity(name, display, display, _initials(display), color)

    def personal_token(self, user: str, ws: Workspace) -> str | None:
        """``user``'s own token for ``ws`` (what their URL carries); ``None`` before the agent started."""
        if self.keys is None:
            return None
        return self.keys.personal_token(user, ws.id, self.generations.get((user, ws.id), 0))

    def workspace_for_server(self, credential: str) -> Workspace | None:
        """The workspace a server credential is bound to (an explicit binding first, else the
        credential the workspace was started with); ``None`` for an unknown credential."""
        if not credential:
            return None
        digest = self._k.server_digest(credential)
        wid = self.bindings.get(digest) or self._by_token.get(digest)
        if wid is None:
            self._by_token = {self._k.server_digest(w.token): w.id for w in self.agent.workspaces.values()}
            wid = self._by_token.get(digest)
        if wid is None:
            return None
        return next((w for w in self.agent.workspaces.values() if w.id == wid), None)

    async def bind_server(self, credential: str, ws: Workspace) -> None:
        """Bind a (pre-started) server's credential to ``ws``: from now on its JupyterLab serves
        that workspace's people. For a warm pool that claims servers started before their owner."""
        digest = self._k.server_digest(credential)
        await self.agent.store.run(bind_server, digest, ws.id, time.time())
        self.bindings[digest] = ws.id
        await self.agent.audit(SYSTEM_USER, "access.server_bind", ws.name)

    def _user(self, name: str) -> User | None:
        return self.agent.users.get(name)

    def _role(self, user: User, ws: Workspace) -> str | None:
        return _RANK_TO_ROLE.get(role_of(self.agent, user, ws))

    def address(self, peer: str | None, forwarded_for: str | None) -> str:
        return client_address(peer, forwarded_for, self.settings.trusted_proxies)

    def network_ok(self, user: str | None, address: str) -> bool:
        return allowed(address, self.settings.allowed_networks,
                       self.settings.user_networks.get(user) if user else None)

    async def _refuse_network(self, user: str, ws: Workspace | None, address: str, via: str) -> PermissionDenied:
        await self.agent.audit(user, "access.network_denied", ws.name if ws else None, "denied", address=address, via=via)
        return PermissionDenied(
            f"access from {address or 'an unknown address'} is not allowed for {user}",
            "access.allowed_networks (or the user's allowed_networks) in agent.yaml does not include it",
        )

    def answer(self, user: User, ws: Workspace, kind: str, session: SessionRow | None = None) -> dict[str, Any]:
        """What a workspace server gets for a person: identity, role, allowed pairs, TTL."""
        role = self._role(user, ws) or ""
        allowed_pairs = permissions_for(role)
        denied = {f"{a}:{r}": role_needed(a, r) for a, r in set().union(*JUPYTER_TABLE.values()) - allowed_pairs}
        doc: dict[str, Any] = {
            "user": self.identity(user.name).to_dict(),
            "role": role,
            "permissions": sorted([a, r] for a, r in allowed_pairs),
            "needed": denied,
            "all": role == "owner",  # owners may also do what extensions add beyond the table
            "kind": kind,
            "workspace": ws.name,
            "ttl": ANSWER_TTL,
        }
        if session is not None:
            doc["session"] = {"id": session.id, "expires_at": self._expires_at(session)}
        return doc

    def _expires_at(self, s: SessionRow) -> float:
        return min(s.created_at + self.settings.session_max, s.last_seen + self.settings.session_idle)

    def system_answer(self, ws: Workspace) -> dict[str, Any]:
        return {
            "user": self.identity(SYSTEM_USER).to_dict(),
            "role": "system",
            "permissions": sorted([a, r] for a, r in SYSTEM_PERMISSIONS),
            "needed": {},
            "all": False,
            "kind": "server",
            "workspace": ws.name,
            "ttl": ANSWER_TTL,
        }

    # -- resolve: "who is this credential, for this workspace" --------------------------------

    async def resolve(self, server: Workspace, credential: str, peer: str | None, forwarded_for: str | None,
                      server_credential: str = "") -> dict[str, Any]:
        """The answer for ``credential`` presented to ``server``'s JupyterLab. Raises
        AuthenticationFailed (unknown, expired or revoked credential), PermissionDenied (no role,
        or an address outside the allowlists)."""
        address = self.address(peer, forwarded_for)
        if server_credential and credential == server_credential:
            return self.system_answer(server)
        user, session = self._credential_user(server, credential)
        ended = self._ended.get(self._k.session_id(credential) or "") if user is None else None
        if ended:
            raise AuthenticationFailed(f"your session has ended ({ended.replace('_', ' ')})", "log in again")
        if user is None:
            raise AuthenticationFailed("this credential is not valid for this workspace (unknown, expired or revoked)",
                                       "ask for your own URL: ml jupyter info " + server.name)
        if session is not None:
            reason = self._expired(session, time.time())
            if reason:
                await self._end([session], reason)
                raise AuthenticationFailed("your session has ended (" + reason.replace("_", " ") + ")",
                                           "log in again")
            session.last_seen = self._seen[session.id] = time.time()  # memory now, the store at the next flush
        if not self.network_ok(user.name, address):
            raise await self._refuse_network(user.name, server, address, "jupyterlab")
        if self._role(user, server) is None:
            raise PermissionDenied(f"{user.name} has no role on workspace {server.name} (revoked or never granted)",
                                   f"ask its owner ({server.owner}): ml jupyter access {server.name} --user={user.name}")
        return self.answer(user, server, "session" if session else "token", session)

    def _credential_user(self, ws: Workspace, credential: str) -> tuple[User | None, SessionRow | None]:
        if credential.startswith("fmls."):
            sid = self._k.session_id(credential)
            s = self.sessions.get(sid or "")
            if s is None or s.workspace_id != ws.id:
                return None, None
            return self._user(s.user), s
        token = self._k.parse_personal(credential)
        if token is None or token.workspace_id != ws.id:
            return None, None
        user = self._user(token.user)
        if user is None or not self._k.personal_ok(token, self.generations.get((token.user, ws.id), 0)):
            return None, None
        return user, None

    # -- login: a browser session --------------------------------------------------------------

    def _count_failure(self, user: str, address: str) -> None:
        now = time.time()
        key = (user, address)
        self._failures[key] = [t for t in self._failures.get(key, []) if now - t < _FAILURE_WINDOW] + [now]

    def _throttled(self, user: str, address: str) -> bool:
        now = time.time()
        recent = [t for t in self._failures.get((user, address), []) if now - t < _FAILURE_WINDOW]
        return len(recent) >= _FAILURE_LIMIT

    async def login(self, ws: Workspace | None, *, user: str, secret: str, otp: str, token: str, peer: str | None,
                    forwarded_for: str | None) -> dict[str, Any]:
        """Open a browser session on ``ws``: with a personal ``token``, or with ``secret`` (the
        user's API key, or the workspace password for its owner); ``otp`` is the TOTP or recovery
        code where the user is enrolled or MFA is required. Returns the answer plus
        ``session_token``. Every outcome is audited with the address.

        ``ws`` ``None``: a session on the agent's own pages (the home page, fetchml_agent/web),
        opened with an API key only, for anyone configured; audited with ``via=home``."""
        address = self.address(peer, forwarded_for)
        name = user.strip()
        where = ws.name if ws is not None else None
        via = {} if ws is not None else {"via": "home"}
        if self._throttled(name or "-", address):
            await self.agent.audit(name or "-", "access.login", where, "denied", address=address, reason="throttled",
                                   **via)
            raise PermissionDenied("too many failed logins from this address; wait a few minutes")
        found, method = await self._first_factor(ws, name, secret, token)
        if found is None:
            self._count_failure(name or "-", address)
            await self.agent.audit(name or "-", "access.login", where, "denied", address=address,
                                   reason="bad_credentials", method=method, **via)
            raise AuthenticationFailed("login failed: unknown user, or wrong key or password")
        if not self.network_ok(found.name, address):
            raise await self._refuse_network(found.name, ws, address, "jupyterlab" if ws is not None else "home")
        role = self._role(found, ws) if ws is not None else None
        if ws is not None and role is None:
            await self.agent.audit(found.name, "access.login", where, "denied", address=address, reason="no_role",
                                   method=method)
            raise PermissionDenied(f"{found.name} has no role on workspace {ws.name}")
        used_mfa = False
        if self.settings.mfa_needed(found.role, *([role] if role else [])) or self.enrolled(found.name):
            if not self.enrolled(found.name):
                await self.agent.audit(found.name, "access.login", where, "denied", address=address,
                                       reason="mfa_not_enrolled", method=method, **via)
                raise PermissionDenied(f"a second factor is required for {found.name}, who has not enrolled one",
                                       "enrol first: ml auth mfa enroll")
            if not otp.strip():
                raise MfaRequired("enter the code from your authenticator app", user=found.name)
            if not await self.second_factor(found.name, otp):
                self._count_failure(found.name, address)
                await self.agent.audit(found.name, "access.login", where, "denied", address=address,
                                       reason="mfa_failed", method=method, **via)
                raise MfaRequired("that code is not valid (or was already used)", user=found.name)
            used_mfa = True
        sid, session_token = self._k.new_session_token()
        now = time.time()
        s = SessionRow(sid, found.name, ws.id if ws else "", where or "", method, used_mfa, address, now, now)
        await self.agent.store.run(insert_session, s)
        self.sessions[sid] = s
        await self.agent.audit(found.name, "access.login", where, address=address, method=method, mfa=used_mfa,
                               session=sid, **via)
        if ws is None:
            return {"user": self.identity(found.name).to_dict(), "session": {"id": s.id, "expires_at":
                    self._expires_at(s)}, "session_token": session_token}
        return {**self.answer(found, ws, "session", s), "session_token": session_token}

    async def home_session(self, token: str, address: str) -> tuple[User, SessionRow] | None:
        """The person behind a session of the agent's own pages (see :meth:`login` with no
        workspace), seen now; ``None`` when it is unknown, ended, expired, or not for these pages,
        or when ``address`` is outside the person's allowlists."""
        s = self.sessions.get(self._k.session_id(token) or "") if token.startswith("fmls.") else None
        if s is None or s.workspace_id:
            return None
        reason = self._expired(s, time.time())
        if reason:
            await self._end([s], reason)
            return None
        user = self._user(s.user)
        if user is None or not self.network_ok(user.name, address):
            return None
        s.last_seen = self._seen[s.id] = time.time()
        return user, s

    async def logout_home(self, token: str) -> None:
        s = self.sessions.get(self._k.session_id(token) or "")
        if s is not None and not s.workspace_id:
            await self._end([s], "logout")

    def trust_session(self, user: str, key_hash16: bytes, until: float) -> None:
        """A home-page session opened with a second factor counts as an elevation (the admin
        step-up of :meth:`check_call`) for the key its pages call operations with, until it ends."""
        self._elevations[(user, key_hash16)] = until

    def session_expires_at(self, s: SessionRow) -> float:
        return self._expires_at(s)

    async def _first_factor(self, ws: Workspace | None, name: str, secret: str, token: str) -> tuple[User | None, str]:
        if token and ws is not None:
            user, _ = self._credential_user(ws, token)
            if user is None or token.startswith("fmls."):
                return None, "token"
            return (user if not name or name == user.name else None), "token"
        if not secret:
            return None, "none"
        try:
            by_key = self.agent.authenticate_key(secret)
        except AuthenticationFailed:
            by_key = None
        if by_key is not None and (not name or name == by_key.name):
            return by_key, "api_key"
        if ws is None:
            return None, "api_key"
        owner = self._user(ws.owner)
        if ws.password_hash and owner is not None and name in ("", ws.owner):
            from jupyter_server.auth.security import passwd_check

            if await run_blocking(passwd_check, ws.password_hash, secret):
                return owner, "password"
        return None, "password" if ws.password_hash else "api_key"

    async def logout(self, ws: Workspace, session_token: str) -> None:
        sid = self._k.session_id(session_token)
        s = self.sessions.get(sid or "")
        if s is not None and s.workspace_id == ws.id:
            await self._end([s], "logout")

    # -- revocation ---------------------------------------------------------------------------

    async def revoke_person(self, user: str, ws: Workspace, by: str) -> None:
        """Kill ``user``'s credentials for ``ws``: a new token generation (their URL stops working
        and stays dead if access is granted again) and the end of their sessions there."""
        gen = await self.agent.store.run(bump_generation, user, ws.id)
        self.generations[(user, ws.id)] = gen
        await self._end([s for s in self.sessions.values() if s.user == user and s.workspace_id == ws.id],
                        "revoked", by=by)

    def on_audit(self, event: dict[str, Any]) -> None:
        """Audit listener: a revoke or a workspace deletion ends the affected credentials."""
        action = event.get("action")
        if action not in ("access.revoke", "workspace.delete"):
            return
        name = event.get("workspace") or ""
        asyncio.get_running_loop().create_task(self._after(action, name, event))

    async def _after(self, action: str, name: str, event: dict[str, Any]) -> None:
        if action == "workspace.delete":
            await self._end([s for s in self.sessions.values() if s.workspace == name], "workspace_deleted")
            return
        ws = self.agent.workspaces.get(name)
        if ws is None:
            return
        kind, _, who = str(event["details"].get("principal", "")).partition(":")
        people = [who] if kind == "user" else [u.name for u in self.agent.users.values() if who in u.teams]
        for person in people:
            user = self._user(person)
            if user is not None and self._role(user, ws) is None:
                await self.revoke_person(person, ws, by=event.get("user") or SYSTEM_USER)

    # -- sessions, for `ml auth sessions` -----------------------------------------------------

    async def list_sessions(self, caller: User, everyone: bool, include_ended: bool) -> list[dict[str, Any]]:
        if everyone and not caller.is_admin:
            raise PermissionDenied("listing everyone's sessions needs the admin role")
        rows = await self.agent.store.run(query_sessions, None if everyone else caller.name, include_ended)
        out = []
        now = time.time()
        for r in rows:
            live = self.sessions.get(r.id)
            d = {"id": r.id, "user": r.user, "workspace": r.workspace, "method": r.method, "mfa": r.mfa,
                 "address": r.address, "created_at": r.created_at,
                 "last_seen": live.last_seen if live is not None else r.last_seen, "ended_at": r.ended_at,
                 "end_reason": r.end_reason}
            if live is not None and not self._expired(live, now):
                d["expires_at"] = self._expires_at(live)
            out.append(d)
        return out

    async def end_session(self, caller: User, session_id: str) -> SessionRow:
        s = self.sessions.get(session_id)
        if s is None:
            raise NotFound(f"no open session {session_id!r}", "ml auth sessions lists yours")
        if s.user != caller.name and not caller.is_admin:
            raise PermissionDenied("you may end only your own sessions (admins may end anyone's)")
        await self._end([s], "ended", by=caller.name)
        return s

    # -- MFA ----------------------------------------------------------------------------------

    def enrolled(self, user: str) -> bool:
        row = self.mfa.get(user)
        return row is not None and row.confirmed_at is not None

    def _secret(self, row: MfaRow) -> str:
        raw = self._k.unseal("totp:" + row.user, row.secret_sealed)
        if raw is None:
            raise FetchmlError("the MFA enrolment cannot be read with this agent's access key",
                               "an admin can reset it: ml auth mfa reset " + row.user)
        return raw.decode()

    async def mfa_enroll(self, user: User) -> dict[str, Any]:
        """Start (or restart) enrolment: a new secret, not in force until confirmed with a code."""
        if self.enrolled(user.name):
            raise InvalidArgument(f"{user.name} is already enrolled",
                                  "to start over, an admin resets it: ml auth mfa reset " + user.name)
        secret = totp.new_secret()
        row = MfaRow(user.name, self._k.seal("totp:" + user.name, secret.encode()), time.time())
        await self.agent.store.run(save_mfa, row)
        self.mfa[user.name] = row
        await self.agent.audit(user.name, "mfa.enroll", None)
        return {"user": user.name, "uri": totp.provisioning_uri(secret, user.name, self.settings.mfa_issuer),
                "secret": secret}

    async def mfa_confirm(self, user: User, code: str) -> dict[str, Any]:
        row = self.mfa.get(user.name)
        if row is None or row.confirmed_at is not None:
            raise InvalidArgument("no enrolment is waiting for a code", "start one: ml auth mfa enroll")
        step = totp.verify_totp(self._secret(row), code, row.last_step)
        if step is None:
            await self.agent.audit(user.name, "mfa.confirm", None, "denied")
            raise MfaRequired("that code is not valid: check the authenticator app's clock and try the next code")
        codes = totp.new_recovery_codes()
        row.confirmed_at, row.last_step, row.recovery = time.time(), step, [totp.hash_recovery(c) for c in codes]
        await self.agent.store.run(save_mfa, row)
        await self.agent.audit(user.name, "mfa.confirm", None)
        return {"user": user.name, "enrolled": True, "recovery_codes": codes}

    async def second_factor(self, user: str, code: str) -> bool:
        """Check a TOTP or recovery code for an enrolled ``user`` (a used code never works again)."""
        row = self.mfa.get(user)
        if row is None or row.confirmed_at is None:
            return False
        step = totp.verify_totp(self._secret(row), code, row.last_step)
        if step is not None:
            row.last_step = step
            await self.agent.store.run(save_mfa, row)
            return True
        digest = totp.hash_recovery(code)
        if digest in row.recovery:
            row.recovery = [h for h in row.recovery if h != digest]
            await self.agent.store.run(save_mfa, row)
            await self.agent.audit(user, "mfa.recovery_code_used", None, remaining=len(row.recovery))
            return True
        return False

    async def mfa_reset(self, admin: User, user: str) -> None:
        if not admin.is_admin and admin.name != user:
            raise PermissionDenied("resetting someone else's MFA enrolment needs the admin role")
        if user not in self.agent.users:
            raise NotFound(f"no user named {user!r} is configured on this agent")
        if user not in self.mfa:
            raise NotFound(f"{user} has no MFA enrolment")
        if admin.name == user and self.enrolled(user) and not admin.is_admin:
            raise PermissionDenied("only an admin can remove a confirmed enrolment", "ask an admin")
        await self.agent.store.run(delete_mfa, user)
        self.mfa.pop(user, None)
        await self.agent.audit(admin.name, "mfa.reset", None, person=user)

    def mfa_status(self, user: str) -> dict[str, Any]:
        row = self.mfa.get(user)
        found = self.agent.users.get(user)
        return {
            "user": user,
            "enrolled": self.enrolled(user),
            "pending": row is not None and row.confirmed_at is None,
            "recovery_codes_left": len(row.recovery) if row else 0,
            "required_for_admin_operations": bool(found and found.is_admin and self.settings.mfa_needed("admin")),
            "required_for_browser_logins": bool(found and self.settings.mfa_needed(found.role)),
        }

    # -- admin step-up and per-user allowlists on the agent's API ------------------------------

    async def elevate(self, user: User, key_hash16: bytes, code: str) -> float:
        """After a valid second factor, this user's requests with this key count as MFA-checked
        for ``access.mfa_elevation`` seconds. Returns when that ends."""
        if not self.enrolled(user.name):
            raise PermissionDenied(f"{user.name} has no confirmed MFA enrolment", "enrol first: ml auth mfa enroll")
        if not await self.second_factor(user.name, code):
            await self.agent.audit(user.name, "mfa.elevate", None, "denied")
            raise MfaRequired("that code is not valid (or was already used)")
        until = time.time() + self.settings.mfa_elevation
        self._elevations[(user.name, key_hash16)] = until
        await self.agent.audit(user.name, "mfa.elevate", None, until=until)
        return until

    def check_call(self, user: User, key_hash16: bytes, op_name: str, address: str | None) -> None:
        """Before an operation of the agent's API: the user's own allowlist, and for admins where
        ``access.mfa`` requires it, an elevation (``ml auth elevate``). Raises PermissionDenied /
        MfaRequired; the MFA operations themselves are exempt so that one can enrol and elevate."""
        if address is not None and not self.network_ok(user.name, address):
            asyncio.get_running_loop().create_task(self._refuse_network(user.name, None, address, "api"))
            raise PermissionDenied(f"access from {address} is not allowed for {user.name}",
                                   "users[].allowed_networks in agent.yaml does not include it")
        if not user.is_admin or not self.settings.mfa_needed("admin") or op_name in MFA_EXEMPT:
            return
        until = self._elevations.get((user.name, key_hash16), 0.0)
        if until < time.time():
            raise MfaRequired("admin operations need a second factor: run `ml auth elevate` (or set FETCHML_OTP)",
                              "access.mfa in agent.yaml requires it for the admin role")


# The operations an admin without an elevation may still run: enrolment and elevation themselves.
MFA_EXEMPT = frozenset({"mfa_enroll", "mfa_confirm", "mfa_status", "mfa_elevate"})
