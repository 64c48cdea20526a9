"""Webhooks: the seed's ``workspace-webhooks.yaml`` events and actions, driven by the audit log.

agent.yaml::

    webhooks:
      - events: [workspace_created, package_installed, experiment_linked]   # or ["*"]
        actions: [log_event, slack_notification, email_alert, http_post]
        url: https://hooks.example.org/services/T000/B000/XXXX  # slack_notification, http_post
        secret: "…"                      # http_post: X-FetchML-Signature: sha256=HMAC(body)
        email: {smtp_host: mail.internal, smtp_port: 25, from: fetchml@internal, to: [sre@internal]}

Every audit event has an event name (:func:`event_name`): the seed's three keep their names,
``audit_chain_broken`` is a verification that found the audit chain tampered with (docs/audit.md),
the rest are the audit action with ``.`` as ``_`` (``workspace_delete``, ``package_denied``…).
Delivery never blocks the operation that caused it: each action runs as a task with a timeout
and three tries; failures are logged and counted (``ml status`` shows them).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from typing import Any

import httpx

from .aio import run_blocking
from .errors import InvalidArgument
from .settings import AgentConfig

__all__ = ["ACTIONS", "WEBHOOK_SCHEMA", "Webhooks", "event_name"]

log = logging.getLogger("fetchml.webhooks")

ACTIONS = ("log_event", "slack_notification", "email_alert", "http_post")
_SEED_EVENTS = {
    "workspace.create": "workspace_created",
    "package.install": "package_installed",
    "experiment.link": "experiment_linked",
}
#: Events named for an action and outcome together.
_OUTCOME_EVENTS = {("audit.verify", "broken"): "audit_chain_broken",
                   ("audit.verify_export", "broken"): "audit_export_mismatch"}

WEBHOOK_SCHEMA: dict[str, Any] = {
    "name": {"type": "string", "default": ""},
    "events": {"type": "list", "required": True, "minlength": 1, "schema": {"type": "string", "regex": r"^(\*|[a-z_]+)$"}},
    "actions": {"type": "list", "required": True, "minlength": 1, "schema": {"type": "string", "allowed": list(ACTIONS)}},
    "url": {"type": "string", "regex": r"^https?://.+", "nullable": True, "default": None},
    "secret": {"type": "string", "nullable": True, "default": None},
    "timeout": {"type": "number", "min": 0.1, "default": 5.0},
    "email": {
        "type": "dict",
        "nullable": True,
        "default": None,
        "schema": {
            "smtp_host": {"type": "string", "required": True},
            "smtp_port": {"type": "integer", "default": 25},
            "from": {"type": "string", "required": True},
            "to": {"type": "list", "required": True, "minlength": 1, "schema": {"type": "string"}},
            "starttls": {"type": "boolean", "default": False},
        },
    },
}


def event_name(action: str, outcome: str) -> str:
    if (action, outcome) in _OUTCOME_EVENTS:
        return _OUTCOME_EVENTS[(action, outcome)]
    if outcome == "ok" and action in _SEED_EVENTS:
        return _SEED_EVENTS[action]
    name = action.replace(".", "_")
    return f"{name}_{outcome}" if outcome not in ("ok",) else name


def _summary(event: dict[str, Any]) -> str:
    where = f" on {event['workspace']}" if event.get("workspace") else ""
    def shown(value: Any) -> str:  # a list of names (the packages installed) reads as one
        return " ".join(map(str, value)) if isinstance(value, list) else str(value)

    details = ", ".join(f"{k}={shown(v)}" for k, v in sorted(event["details"].items())
                        if not isinstance(v, dict) and v not in ([], None, "")
                        and not (isinstance(v, list) and any(isinstance(x, (dict, list)) for x in v)))
    return f"[fetchml] {event['user']}: {event['name']}{where}" + (f" ({details})" if details else "")


class Webhooks:
    """The configured webhooks; :meth:`listener` takes every audit event (an audit listener)."""

    def __init__(self, hooks: list[dict[str, Any]]) -> None:
        self.hooks = hooks
        self.delivered = 0
        self.failed = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def from_config(cls, config: AgentConfig) -> Webhooks | None:
        """agent.yaml's ``webhooks:``; ``None`` when there are none. Raises InvalidArgument naming
        the file for what the schema cannot see (an action without its target)."""
        hooks = list(config.raw.get("webhooks") or [])
        if not hooks:
            return None
        webhooks = cls(hooks)
        problems = webhooks.validate()
        if problems:
            raise InvalidArgument(f"{config.path or '<config>'}: invalid configuration: " + "; ".join(problems))
        return webhooks

    async def status_section(self, agent: Any, call: Any) -> dict[str, Any]:
        """The ``ml status`` section (a status hook)."""
        return {"webhooks": {"configured": len(self.hooks), "delivered": self.delivered, "failed": self.failed}}

    async def shutdown(self, agent: Any) -> None:
        """Let deliveries in flight finish (a shutdown hook)."""
        await self.drain()

    def validate(self) -> list[str]:
        """Configuration mistakes that a schema cannot see (an action without its target)."""
        problems = []
        for i, hook in enumerate(self.hooks):
            for action in hook["actions"]:
                if action in ("slack_notification", "http_post") and not hook.get("url"):
                    problems.append(f"webhooks[{i}]: {action} needs url")
                if action == "email_alert" and not hook.get("email"):
                    problems.append(f"webhooks[{i}]: email_alert needs email: {{smtp_host, from, to}}")
        return problems

    def listener(self, event: dict[str, Any]) -> None:
        event = {**event, "name": event_name(event["action"], event["outcome"])}
        for hook in self.hooks:
            if "*" in hook["events"] or event["name"] in hook["events"]:
                for action in hook["actions"]:
                    task = asyncio.get_running_loop().create_task(self._deliver(hook, action, event))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout: float = 10.0) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    async def _deliver(self, hook: dict[str, Any], action: str, event: dict[str, Any]) -> None:
        for attempt in range(3):
            try:
                await asyncio.wait_for(self._send(hook, action, event), hook["timeout"])
                self.delivered += 1
                return
            except Exception as exc:  # a receiver's failure must never reach the caller
                if attempt == 2:
                    self.failed += 1
                    log.warning("webhook %s %s for %s failed: %s", hook.get("name") or hook.get("url"), action, event["name"], exc)
                    return
                await asyncio.sleep(0.5 * (attempt + 1))

    async def _send(self, hook: dict[str, Any], action: str, event: dict[str, Any]) -> None:
        if action == "log_event":
            log.info("event %s", json.dumps(event, sort_keys=True, default=str))
            return
        if action == "email_alert":
            await run_blocking(_send_mail, hook["email"], event)
            return
        if action == "slack_notification":
            body = json.dumps({"text": _summary(event)}).encode()
            headers = {"Content-Type": "application/json"}
        else:
            body = json.dumps({"event": event["name"], "sent_at": time.time(), **event}, sort_keys=True, default=str).encode()
            headers = {"Content-Type": "application/json", "X-FetchML-Event": event["name"]}
            if hook.get("secret"):
                digest = hmac.new(hook["secret"].encode(), body, hashlib.sha256).hexdigest()
                headers["X-FetchML-Signature"] = f"sha256={digest}"
        async with httpx.AsyncClient(timeout=hook["timeout"]) as client:
            r = await client.post(hook["url"], content=body, headers=headers)
            r.raise_for_status()


def _send_mail(cfg: dict[str, Any], event: dict[str, Any]) -> None:
    import smtplib
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["Subject"] = _summary(event)[:200]
    msg["From"] = cfg["from"]
    msg["To"] = ", ".join(cfg["to"])
    msg.set_content(json.dumps(event, indent=2, sort_keys=True, default=str))
    with smtplib.SMTP(cfg["smtp_host"], cfg["smtp_port"], timeout=10) as smtp:
        if cfg.get("starttls"):
            smtp.starttls()
        smtp.send_message(msg)
