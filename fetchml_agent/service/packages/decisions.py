"""How a policy decision is audited and refused: one audit event per decision, one error for a
refused install."""

from __future__ import annotations

from typing import Any

from ...core import AgentCore
from ...errors import ApprovalRequired, FetchmlError, PolicyDenied
from ...policy.engine import DENY, Decision
from ...store.workspaces import Workspace
from ..calls import Call

__all__ = ["audit_decision", "decision_details", "outcome", "refusal"]


def outcome(d: Decision) -> str:
    """The audit outcome of a decision: ``dry_run`` when enforcement would have refused it."""
    return "dry_run" if d.would_have is not None else d.decision


def decision_details(d: Decision) -> dict[str, Any]:
    out: dict[str, Any] = {"spec": d.spec, "package": d.package, "decision": d.decision, "rule": d.rule,
                           "reason": d.reason}
    if d.would_have is not None:
        out["would_have"] = d.would_have
    return out


async def audit_decision(agent: AgentCore, call: Call, ws: Workspace | None, d: Decision, via: str,
                         **extra: Any) -> None:
    await agent.audit(call.user.name, "package.decision", ws.name if ws else None, outcome(d), via=via,
                      **decision_details(d), **extra)


def refusal(refused: list[Decision], what: str) -> FetchmlError:
    """One error for the refused decisions: a denial wins over a needed approval."""
    denied = [d for d in refused if d.decision == DENY]
    first = (denied or refused)[0]
    others = [d for d in refused if d is not first]
    details = "; ".join(f"{d.spec}: {d.reason}" for d in others)
    cls = PolicyDenied if first.decision == DENY else ApprovalRequired
    return cls(f"{what}: {first.reason}", details, package=first.package, rule=first.rule, spec=first.spec)
