"""agent.yaml ``access:``: sessions, MFA and allowlists (docs/access.md).

```yaml
access:
  session_idle: 30m          # a browser session ends after this long without a request
  session_max: 12h           # ... and this long after its login, whatever happens
  mfa: optional              # optional | required | {ROLE: optional|required, ...}
  mfa_elevation: 15m         # how long `ml auth elevate` lets an admin's key do admin operations
  allowed_networks: [10.0.0.0/8, 192.168.1.0/24]   # absent: any address
  trusted_proxies: [127.0.0.1]                      # whose X-Forwarded-For is believed
```

``mfa`` as a mapping names roles: the global ``admin`` and ``user``, or the per-workspace
``viewer``, ``collaborator``, ``editor`` and ``owner``. Users may add ``allowed_networks`` of
their own (``users[].allowed_networks``): a request must then be inside both lists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..settings import AgentConfig
from ..units import parse_duration
from .networks import Network, parse_networks

__all__ = ["ACCESS_SCHEMA", "AccessSettings", "MFA_ROLES"]

MFA_ROLES = ("admin", "user", "viewer", "collaborator", "editor", "owner")
_MFA_LEVELS = ("optional", "required")


def _duration_ok(field_name: str, value: Any, error: Any) -> None:
    try:
        parse_duration(value, field_name)
    except ValueError as exc:
        error(field_name, str(exc))


def _networks_ok(field_name: str, value: Any, error: Any) -> None:
    try:
        parse_networks(value)
    except ValueError as exc:
        error(field_name, str(exc))


def _mfa_ok(field_name: str, value: Any, error: Any) -> None:
    if isinstance(value, str):
        if value not in _MFA_LEVELS:
            error(field_name, f"must be optional, required, or a mapping of roles; got {value!r}")
        return
    for role, level in (value or {}).items():
        if role not in MFA_ROLES:
            error(field_name, f"unknown role {role!r} (roles: {', '.join(MFA_ROLES)})")
        elif level not in _MFA_LEVELS:
            error(field_name, f"{role}: must be optional or required, got {level!r}")


ACCESS_SCHEMA: dict[str, Any] = {
    "type": "dict",
    "default": {},
    "schema": {
        "session_idle": {"type": ["string", "number"], "default": "30m", "check_with": _duration_ok},
        "session_max": {"type": ["string", "number"], "default": "12h", "check_with": _duration_ok},
        "mfa": {"type": ["string", "dict"], "default": "optional", "check_with": _mfa_ok},
        "mfa_elevation": {"type": ["string", "number"], "default": "15m", "check_with": _duration_ok},
        "mfa_issuer": {"type": "string", "default": "FetchML Jupyter", "empty": False, "maxlength": 64},
        "allowed_networks": {"type": "list", "nullable": True, "default": None, "check_with": _networks_ok,
                             "schema": {"type": "string"}},
        "trusted_proxies": {"type": "list", "default": [], "check_with": _networks_ok, "schema": {"type": "string"}},
    },
}


@dataclass(frozen=True)
class AccessSettings:
    """The validated ``access:`` section (defaults filled), typed."""

    session_idle: float = 1800.0
    session_max: float = 43200.0
    mfa_required: frozenset[str] = frozenset()  # roles for which the second factor is required
    mfa_everyone: bool = False
    mfa_elevation: float = 900.0
    mfa_issuer: str = "FetchML Jupyter"
    allowed_networks: tuple[Network, ...] = ()
    trusted_proxies: tuple[Network, ...] = ()
    user_networks: dict[str, tuple[Network, ...]] = field(default_factory=dict)
    display_names: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: AgentConfig) -> AccessSettings:
        raw = config.section("access")
        mfa = raw.get("mfa", "optional")
        everyone = mfa == "required"
        roles = frozenset(r for r, level in mfa.items() if level == "required") if isinstance(mfa, dict) else frozenset()
        users = config.raw.get("users") or []
        return cls(
            session_idle=parse_duration(raw.get("session_idle", "30m")),
            session_max=parse_duration(raw.get("session_max", "12h")),
            mfa_required=roles,
            mfa_everyone=everyone,
            mfa_elevation=parse_duration(raw.get("mfa_elevation", "15m")),
            mfa_issuer=str(raw.get("mfa_issuer") or "FetchML Jupyter"),
            allowed_networks=parse_networks(raw.get("allowed_networks")),
            trusted_proxies=parse_networks(raw.get("trusted_proxies")),
            user_networks={u["name"]: parse_networks(u["allowed_networks"]) for u in users if u.get("allowed_networks")},
            display_names={u["name"]: u["display_name"] for u in users if u.get("display_name")},
        )

    def mfa_needed(self, *roles: str) -> bool:
        """Whether the second factor is required for someone holding any of ``roles``."""
        return self.mfa_everyone or any(r in self.mfa_required for r in roles)
