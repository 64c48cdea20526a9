"""Governance operations: verify the audit chain (and an export of it), retention, GDPR requests.

All of them need the admin role and each writes one audit event. A chain found broken writes
``audit.verify`` with outcome ``broken``, which webhooks deliver as ``audit_chain_broken``. At
start the agent opens (or creates) the audit key, chains the events of an older database, refuses
the keys of erased accounts, verifies the chain in the background, and schedules the daily purge.

One :class:`Governance` per agent (``agent.services.audit_trail``, made by
:func:`fetchml_agent.agent.build_services`) holds the audit log every event is written to, the
retention settings, and what the start found; its :meth:`~Governance.start`,
:meth:`~Governance.stop` and :meth:`~Governance.status_section` are the agent's hooks.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from ..access.ops import access_service
from ..aio import run_blocking
from ..core import AgentCore
from ..errors import InvalidArgument, InvalidState, NotFound, PermissionDenied
from ..protocol.opcodes import Opcode
from ..service.calls import Call, Result
from ..service.context import AgentContext
from ..service.registry import operation
from ..settings import AgentConfig, User
from ..store import open_connection
from ..store.audit import chain_state, checkpoints, purge_plan, purge_through, query_events, verify_chain
from ..store.chain import DELETED, EDITED, ChainKey, VerifyResult, names_pattern
from . import purge
from .gdpr import active_runs, collect, erase, erased_key_macs
from .log import AuditLog
from .retention import CATEGORIES, ENFORCED, RetentionSettings

__all__ = ["Governance", "governance", "verify_now"]

log = logging.getLogger("fetchml.governance")

_PSEUDONYM = "erased-{}"


class Governance:
    """One per agent: its audit log, the retention settings, the erased accounts still in
    agent.yaml, and the background tasks (the daily purge, the verification at start)."""

    def __init__(self, config: AgentConfig) -> None:
        self.log = AuditLog(config.data_dir, [u.name for u in config.users])
        self.retention = RetentionSettings.from_section(config.raw.get("retention"))  # fails early on a bad duration
        self.erased_in_config: list[int] = []  # users[i] of agent.yaml whose account was erased
        self.verified: tuple[bool, float] | None = None  # the last verification: (intact, when), for /metrics
        self._tasks: list[asyncio.Task[None]] = []

    async def record(self, agent: AgentCore, user: str, action: str, workspace: str | None, outcome: str,
                     details: dict[str, Any]) -> int:
        """``Agent.audit``: chain one event (:meth:`AuditLog.record`)."""
        return await self.log.record(agent, user, action, workspace, outcome, details)

    async def start(self, agent: AgentContext) -> None:
        """Open the key, refuse erased accounts' keys, then verify and purge in the background."""
        key = await chain_key(agent)
        erased = await agent.store.run(erased_key_macs)
        for user in list(agent.config.users):
            if key.account_mac(user.key_verifier) in erased:
                log.warning("users[%d] in %s belongs to an erased account (now %s): its key is refused; delete "
                            "that entry from the file", _config_index(agent, user), agent.config.path or "agent.yaml",
                            erased[key.account_mac(user.key_verifier)])
                _forget_user(agent, user)
        ignored = [c for c in CATEGORIES if self.retention.keep.get(c) is not None and c not in ENFORCED]
        if ignored:
            log.warning("retention.%s: declared, but this agent does not purge it yet (kept)",
                        ", retention.".join(ignored))
        if any(self.retention.keep.get(c) is not None for c in ENFORCED):
            self._tasks.append(asyncio.create_task(_daily(agent), name="retention"))
        self._tasks.append(asyncio.create_task(_verify_at_start(agent), name="audit-verify"))

    async def stop(self, agent: AgentContext) -> None:
        for task in self._tasks:
            task.cancel()

    async def status_section(self, agent: AgentContext, call: Call) -> dict[str, Any]:
        """``ml status`` for admins: the chain's state and the retention settings."""
        if not call.user.is_admin:
            return {}
        state = await agent.store.run(chain_state)
        out: dict[str, Any] = {"audit": {**state, "retention": self.retention.to_dict()}}
        stale = [i for i in self.erased_in_config if i >= 0]
        if stale:
            out["audit"]["erased_accounts_in_config"] = [f"users[{i}]" for i in stale]
        return out


    def metrics(self) -> Iterable[Metric]:
        """The chain's state for ``/metrics`` (a collector: docs/observe.md)."""
        ok = GaugeMetricFamily("fetchml_audit_chain_verified", "1 when the last verification found the audit "
                               "chain intact, 0 when broken, -1 before the first (the agent verifies at start)")
        ok.add_metric([], -1 if self.verified is None else int(self.verified[0]))
        yield ok
        at = GaugeMetricFamily("fetchml_audit_chain_last_verification_timestamp_seconds",
                               "When the audit chain was last verified (0: not yet)")
        at.add_metric([], 0 if self.verified is None else self.verified[1])
        yield at


def governance(agent: AgentContext) -> Governance:
    """The agent's :class:`Governance` (``agent.services.audit_trail``)."""
    found = agent.services.audit_trail
    if not isinstance(found, Governance):
        raise RuntimeError("this agent was built without the governance service")
    return found


def _admin(call: Call, what: str) -> None:
    if not call.user.is_admin:
        raise PermissionDenied(f"permission denied: {what} needs the admin role")


async def chain_key(agent: AgentContext) -> ChainKey:
    """The audit key, opened on the store's thread (created at the first start)."""
    return await agent.store.run(governance(agent).log.open)


def _verify_in_thread(db: Path, key: ChainKey, workspace_id: str | None) -> tuple[VerifyResult, dict[str, Any]]:
    """Reads the chain on a connection of its own, so writers are not held up (WAL); a long chain in
    parts, one worker process per CPU (up to 8)."""
    conn = open_connection(db)
    try:
        workers = min(os.cpu_count() or 1, 8)
        return verify_chain(conn, key, workspace_id, db=str(db), raw_key=key.raw, workers=workers), chain_state(conn)
    finally:
        conn.close()


async def verify_now(agent: AgentContext, user: str, workspace: str | None = None,
                     workspace_id: str | None = None, audit_ok: bool = True) -> dict[str, Any]:
    """Verifies the whole chain; audits the outcome (``broken`` fires ``audit_chain_broken``).

    ``audit_ok`` False: the agent's own checks record only a broken chain.
    """
    key = await chain_key(agent)
    started = time.monotonic()
    result, state = await run_blocking(_verify_in_thread, agent.store.path, key, workspace_id)
    doc = {**result.to_dict(), "seconds": round(time.monotonic() - started, 3), "key_id": key.key_id,
           "chain": state}
    if workspace is not None:
        doc["workspace"] = workspace
        doc["workspace_events"] = result.workspace_events
        doc["note"] = ("the chain is one for the whole agent: a workspace's trail is intact when the whole "
                       "chain is")
    governance(agent).verified = (bad := result.first_bad) is None, time.time()
    if bad is not None:
        await agent.audit(user, "audit.verify", workspace, "broken", kind=bad.kind, first_bad=bad.id,
                          message=bad.message, checked=result.checked)
    elif audit_ok:
        await agent.audit(user, "audit.verify", workspace, "ok", checked=result.checked)
    return doc


def _workspace_ref(agent: AgentContext, name: str | None) -> tuple[str | None, str | None]:
    if not name:
        return None, None
    try:
        ws = agent.find_workspace(name)
        return ws.name, ws.id
    except NotFound:
        return name, None


@operation(
    Opcode.AUDIT_VERIFY,
    routes=[("POST", "/api/v1/audit/verify"), ("POST", "/api/v1/jupyter/workspaces/{name}/audit/verify")],
    schema={"name": {"type": "string", "nullable": True, "default": None}},
)
async def audit_verify(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    """Checks every link of the audit chain; ``ok`` False names the first event that does not match."""
    _admin(call, "verifying the audit chain")
    name, ws_id = _workspace_ref(agent, args["name"])
    doc = await verify_now(agent, call.user.name, name, ws_id)
    message = (f"audit chain intact: {doc['checked']} events checked" if doc["ok"]
               else f"audit chain broken at event {doc['first_bad']['id']} ({doc['first_bad']['kind']}): "
                    f"{doc['first_bad']['message']}")
    return Result(message, "audit_verify", doc)


_EXPORT_FIELDS = ("ts", "user", "action", "workspace", "outcome")


@operation(
    Opcode.AUDIT_VERIFY_EXPORT,
    routes=[("POST", "/api/v1/audit/verify-export")],
    schema={"events": {"type": "list", "required": True, "schema": {"type": "dict", "allow_unknown": True, "schema": {
        "id": {"type": "integer", "coerce": int, "required": True},
        "digest": {"type": "string", "required": True, "regex": "^[0-9a-f]{64}$"}}}},
            "source": {"type": "string", "default": ""}},
)
async def audit_verify_export(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    """Checks an exported copy of audit events against the agent's chain, event by event."""
    _admin(call, "verifying an audit export")
    events = sorted(args["events"], key=lambda e: e["id"])
    chain_doc = await verify_now(agent, call.user.name)
    by_id: dict[int, dict[str, Any]] = {}
    ids = [e["id"] for e in events]
    for i in range(0, len(ids), 500):
        for row in await agent.store.run(lambda c, chunk=ids[i:i + 500]: query_events(
                c, limit=len(chunk), ids=chunk, with_chain=True)):
            by_id[row["id"]] = row
    purged_through = chain_doc["chain"].get("purged_through") or 0
    purged = pseudonymized = matched = 0
    first_bad: dict[str, Any] | None = None
    for exported in events:
        ours = by_id.get(exported["id"])
        problem: tuple[str, str] | None = None
        if ours is None:
            if exported["id"] <= purged_through:
                purged += 1
                continue
            problem = (DELETED, f"event {exported['id']} is in the export but no longer in the agent's chain")
        elif ours["digest"] != exported["digest"]:
            problem = (EDITED, f"event {exported['id']}: the export's digest differs from the agent's "
                               "(the export was altered)")
        else:
            differs = _differences(exported, ours)
            if differs and ours["pseudonymized"] and set(differs) <= {"user", "details"}:
                pseudonymized += 1
                continue
            if differs:
                problem = (EDITED, f"event {exported['id']}: the export's {', '.join(differs)} differ from the "
                                   "event the digest covers (the export was altered)")
        if problem is not None:
            first_bad = {"id": exported["id"], "kind": problem[0], "message": problem[1]}
            break
        matched += 1
    ok = first_bad is None and chain_doc["ok"]
    if first_bad is None and not chain_doc["ok"]:
        first_bad = {**chain_doc["first_bad"], "message": "the agent's own chain is broken: "
                                                          + chain_doc["first_bad"]["message"]}
    doc = {"ok": ok, "checked": matched + purged + pseudonymized, "matched": matched, "purged": purged,
           "pseudonymized": pseudonymized, "first_bad": first_bad, "events": len(events), "source": args["source"]}
    await agent.audit(call.user.name, "audit.verify_export", None, "ok" if ok else "broken", events=len(events),
                      first_bad=first_bad["id"] if first_bad else None, source=args["source"][:200])
    message = (f"the export matches the agent: {doc['checked']} events" if ok
               else f"the export does not match at event {first_bad['id']}: {first_bad['message']}"
               if first_bad else "the export does not match")
    return Result(message, "audit_verify_export", doc)


def _differences(exported: dict[str, Any], ours: dict[str, Any]) -> list[str]:
    out = []
    for f in _EXPORT_FIELDS:
        if f not in exported:
            continue
        a, b = exported[f], ours[f]
        if f == "ts":
            try:
                if not math.isclose(float(a), float(b), abs_tol=1e-5):
                    out.append(f)
            except (TypeError, ValueError):
                out.append(f)
        elif (a or None) != (b or None):
            out.append(f)
    if "details" in exported and exported["details"] != ours["details"]:
        out.append("details")
    return out


# -- retention -------------------------------------------------------------------------------------


async def retention_plan(agent: AgentContext, now: float | None = None) -> dict[str, Any]:
    s = governance(agent).retention
    now = time.time() if now is None else now
    cutoffs = {c: s.cutoff(c, now) for c in CATEGORIES}
    plan: dict[str, Any] = {"settings": s.to_dict(), "next_run": s.next_run(now), "cutoffs": cutoffs}
    audit_cut = cutoffs["audit"]
    plan["audit"] = (await agent.store.run(purge_plan, audit_cut)) if audit_cut is not None else {"kept": "forever"}
    plan.update(await purge.plan(agent, cutoffs))
    for c in CATEGORIES:
        if c not in plan:
            plan[c] = {"kept": "forever"}
    return plan


async def run_retention(agent: AgentContext, user: str) -> dict[str, Any]:
    """The purge: verifies the chain first, refuses on a broken one, then purges and checkpoints."""
    now = time.time()
    plan = await retention_plan(agent, now)
    audit = plan["audit"]
    done: dict[str, Any] = {"plan": plan, "removed": {}}
    if audit.get("through_id"):
        check = await verify_now(agent, user, audit_ok=False)
        if not check["ok"]:
            raise InvalidState(f"the audit chain is broken ({check['first_bad']['message']}); purging now would "
                               "remove the evidence, so nothing was purged", "ml jupyter audit --verify shows the problem")
        key = await chain_key(agent)
        removed = await agent.store.run(purge_through, key, audit["through_id"], plan["cutoffs"]["audit"])
        done["removed"]["audit"] = removed
        await agent.audit(user, "retention.purge", None, "ok", category="audit", through_id=removed["through_id"],
                          removed=removed["removed"], by_action=removed["by_action"], cutoff=plan["cutoffs"]["audit"])
    # Runs, logs and metrics (governance/purge.py): each purge audited with what it removed.
    for category, removed_other in (await purge.purge(agent, plan["cutoffs"])).items():
        done["removed"][category] = removed_other
        await agent.audit(user, "retention.purge", None, "ok", category=category, **removed_other)
    return done


@operation(
    Opcode.RETENTION,
    routes=[("GET", "/api/v1/admin/retention"), ("POST", "/api/v1/admin/retention")],
    schema={"run": {"type": "boolean", "default": False}},
)
async def retention(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    """What the next purge removes (the default, ``--dry-run``), or ``run``: purge now."""
    _admin(call, "retention")
    if args["run"]:
        doc = await run_retention(agent, call.user.name)
        n = doc["removed"].get("audit", {}).get("removed", 0)
        others = "".join(f", {v['removed']} {k}" for k, v in doc["removed"].items() if k != "audit")
        return Result(f"purged {n} audit events{others}", "retention", doc)
    plan = await retention_plan(agent)
    await agent.audit(call.user.name, "retention.plan", None, "ok", audit_events=plan["audit"].get("events", 0))
    return Result(f"the next purge would remove {plan['audit'].get('events', 0)} audit events", "retention",
                  {"plan": plan, "dry_run": True, "checkpoints": await agent.store.run(checkpoints)})


async def _daily(agent: AgentContext) -> None:
    while True:
        s = governance(agent).retention
        await asyncio.sleep(max(1.0, s.next_run(time.time()) - time.time()))
        try:
            await run_retention(agent, "agent")
        except Exception as exc:  # the loop must survive; the reason is logged and audited
            log.warning("daily retention purge did not run: %s", exc)
            await agent.audit("agent", "retention.purge", None, "error", error=str(exc)[:500])


# -- GDPR -------------------------------------------------------------------------------------------

_USER_SCHEMA = {"user": {"type": "string", "required": True, "regex": r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"}}


def _configured(agent: AgentContext, name: str) -> User:
    user = agent.users.get(name)
    if user is None:
        raise NotFound(f"no user named {name!r} is configured on this agent",
                       "users are declared in agent.yaml (users:); an erased account is no longer known")
    return user


@operation(Opcode.USER_EXPORT, routes=[("GET", "/api/v1/admin/users/{user}/export")], schema=_USER_SCHEMA)
async def user_export(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    """Everything the agent holds about one person (``ml admin user export NAME`` archives it)."""
    _admin(call, "exporting a user's data")
    user = _configured(agent, args["user"])
    pattern = names_pattern([user.name])
    assert pattern is not None
    sections = await agent.store.run(collect, user.name, sorted(user.teams), pattern)
    sections["account"] = [{"name": user.name, "role": user.role, "teams": sorted(user.teams),
                            "declared_in": str(agent.config.path or "agent.yaml")}]
    await agent.audit(call.user.name, "user.export", None, "ok", subject=user.name,
                      sections={k: len(v) for k, v in sections.items()})
    counts = ", ".join(f"{k} {len(v)}" for k, v in sorted(sections.items()))
    return Result(f"data held about {user.name}: {counts}", "user_export",
                  {"user": user.name, "generated_at": time.time(), "sections": sections})


@operation(
    Opcode.USER_ERASE,
    routes=[("POST", "/api/v1/admin/users/{user}/erase")],
    schema={**_USER_SCHEMA, "transfer_to": {"type": "string", "nullable": True, "default": None}},
)
async def user_erase(agent: AgentContext, call: Call, args: dict[str, Any]) -> Result:
    """Pseudonymizes a person everywhere, refuses their key from now on (docs/audit.md "GDPR")."""
    _admin(call, "erasing a user")
    user = _configured(agent, args["user"])
    if user.name == call.user.name:
        raise InvalidArgument("an admin cannot erase their own account", "ask another admin")
    target = args["transfer_to"]
    if target is not None:
        _configured(agent, target)
        if target == user.name:
            raise InvalidArgument("--transfer-to must name another user")
    owned = sorted(ws.name for ws in agent.workspaces.values() if ws.owner == user.name)
    if owned and target is None:
        raise InvalidState(f"{user.name} owns workspaces: {', '.join(owned)}",
                           f"delete them, or hand them over: ml admin user erase {user.name} --transfer-to=OTHER")
    runs = await agent.store.run(active_runs, user.name)
    if runs:
        raise InvalidState(f"{user.name} has queued or running runs: {', '.join(runs[:10])}",
                           "cancel them first (ml jupyter run cancel RUN_ID), then erase")
    pseudonym = _PSEUDONYM.format(secrets.token_hex(6))
    pattern = names_pattern([user.name])
    assert pattern is not None
    key = await chain_key(agent)
    _forget_user(agent, user)  # from now on the key is refused; then their open sessions end
    access = access_service(agent)
    for ws_id in sorted({s.workspace_id for s in access.sessions.values() if s.user == user.name}):
        ws = next((w for w in agent.workspaces.values() if w.id == ws_id), None)
        if ws is not None:
            await access.revoke_person(user.name, ws, by=call.user.name)
    for name in owned:
        ws = agent.workspaces[name]
        ws.owner = target or ws.owner
    result = await agent.store.run(erase, key, user.name, pattern, pseudonym, user.key_verifier, target)
    for name in owned:
        await agent.save(agent.workspaces[name])
    agent.services.grants.reload()  # read from the database again: their grants are gone
    agent.invalidate()
    await agent.audit(call.user.name, "user.erase", None, "ok", subject=pseudonym, transferred=len(owned),
                      transfer_to=target, changed=result["changed"], remaining=sorted(result["remaining"]))
    index = _config_index(agent, user)
    doc = {"pseudonym": pseudonym, "transferred": owned, "transfer_to": target, **result,
           "agent_yaml": f"delete users[{index}] from {agent.config.path or 'agent.yaml'}: the agent refuses that "
                         "key from now on, and the entry is the last place the name remains"}
    message = (f"erased: the person is now {pseudonym} in the agent's records"
               + (f"; {len(owned)} workspaces now belong to {target}" if owned else "")
               + f". Now {doc['agent_yaml']}")
    return Result(message, "user_erase", doc)


def _config_index(agent: AgentContext, user: User) -> int:
    for i, u in enumerate(agent.config.raw.get("users") or []):
        if u.get("name") == user.name:
            return i
    return -1


def _forget_user(agent: AgentContext, user: User) -> None:
    """The account stops existing for this agent: its key no longer authenticates."""
    agent.remove_user(user.name)
    governance(agent).erased_in_config.append(_config_index(agent, user))


# -- start ---------------------------------------------------------------------------------------------


async def _verify_at_start(agent: AgentContext) -> None:
    try:
        doc = await verify_now(agent, "agent", audit_ok=False)
        if not doc["ok"]:
            log.error("the audit chain is broken: %s", doc["first_bad"]["message"])
    except Exception:
        log.exception("verifying the audit chain at start failed")
