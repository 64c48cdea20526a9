"""Retention: how long the agent keeps what it records (agent.yaml ``retention:``).

::

    retention:
      audit: 400d       # audit events older than this are purged, leaving a signed checkpoint
      runs: 90d         # finished run records and their directories (outputs, logs)
      logs: 30d         # workspace server logs and run logs
      metrics: 90d      # run metrics, usage samples and usage events (docs/observe.md)
      at: "03:30"       # when the daily purge runs (the agent's local time)

A category left out (or ``null``) is kept forever. Durations are ``units.parse_duration``
strings (``30d``, ``12h``, ``2w``, ``1y``). ``ml admin retention --dry-run`` shows what the next
purge would remove; ``ml admin retention --run`` purges now. The audit purge first verifies the
chain and refuses to purge a broken one (that would hide the evidence); runs, logs and metrics are
purged by :mod:`.purge`.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Any

from ..units import format_duration, parse_duration

__all__ = ["CATEGORIES", "ENFORCED", "RETENTION_SCHEMA", "RetentionSettings"]

#: Every category the section declares, and the ones this agent purges.
CATEGORIES = ("audit", "runs", "logs", "metrics")
ENFORCED = frozenset(CATEGORIES)

_AT = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


def _duration_ok(field: str, value: Any, error: Any) -> None:
    if value is None:
        return
    try:
        parse_duration(value, field)
    except ValueError as exc:
        error(field, str(exc))


_DURATION = {"nullable": True, "default": None, "type": ["string", "integer", "float"], "check_with": _duration_ok}

#: The agent config's rule for ``retention:`` (fetchml_agent.config merges it).
RETENTION_SCHEMA: dict[str, Any] = {
    "type": "dict",
    "nullable": True,
    "default": {},
    "schema": {
        **{c: dict(_DURATION) for c in CATEGORIES},
        "at": {"type": "string", "regex": _AT.pattern, "default": "03:30"},
    },
}


@dataclass(frozen=True)
class RetentionSettings:
    """Seconds to keep each category (``None``: forever) and the daily purge time."""

    keep: dict[str, float | None]
    at: tuple[int, int] = (3, 30)

    @classmethod
    def from_section(cls, section: dict[str, Any] | None) -> RetentionSettings:
        section = section or {}
        keep = {c: (parse_duration(section[c], f"retention.{c}") if section.get(c) is not None else None)
                for c in CATEGORIES}
        m = _AT.match(str(section.get("at") or "03:30"))
        at = (int(m.group(1)), int(m.group(2))) if m else (3, 30)
        return cls(keep, at)

    def cutoff(self, category: str, now: float) -> float | None:
        keep = self.keep.get(category)
        return None if keep is None else now - keep

    def next_run(self, now: float) -> float:
        """The next daily purge time after ``now`` (local time)."""
        current = datetime.datetime.fromtimestamp(now)
        target = current.replace(hour=self.at[0], minute=self.at[1], second=0, microsecond=0)
        if target.timestamp() <= now:
            target += datetime.timedelta(days=1)
        return target.timestamp()

    def to_dict(self) -> dict[str, Any]:
        return {"keep": {c: (format_duration(v) if v is not None else None) for c, v in self.keep.items()},
                "at": f"{self.at[0]:02d}:{self.at[1]:02d}", "enforced": sorted(ENFORCED)}
