"""agent.yaml ``culling:``, ``quotas:`` and ``warm_pool:``: their schemas and typed values.

```yaml
culling:                     # absent: nothing is culled (idle time is still shown by ml jupyter info)
  idle_timeout: 2h           # a workspace idle this long is culled
  gpu_idle_timeout: 30m      # ... or this long when it holds GPUs (default: idle_timeout)
  max_age: 7d                # culled this long after its start, whatever it does (default: never)
  check_interval: 1m         # how often the agent looks (a cull comes at most this late)
  warn_before: 15m           # the owner is warned this long before (webhook, ml jupyter info)
  action: stop               # stop the workspace | kernels: shut down its kernels only
  gpu_threshold: 5           # GPU utilization (%) of its processes below which a GPU counts as idle

quotas:                      # absent: no quotas
  default: {workspaces: 10, running: 3, cpu: 16, memory: 64g, gpu: 2}   # every user without an entry
  users: {alice: {running: 5, gpu: 4}}        # per key, in place of default's
  teams: {data-science-team: {running: 20, gpu: 8}}   # what a team's members hold together

warm_pool:                   # absent or size 0: every create starts cold
  size: 2                    # members for creates that ask for nothing special
  profiles:                  # and per profile: creates asking for exactly this
    - {name: gpu-small, size: 1, image: fetchml/workspace:0.1.0, cpu: 4, memory: 8g, gpu: 1, hold_gpu: false}
```

A quota key left out (or ``null``) is no limit. ``workspaces`` counts every workspace the user owns,
``running`` the ones running or starting; ``cpu``, ``memory`` and ``gpu`` add up what the running
ones asked for (one without ``--cpu`` counts none).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...runtimes.base import Resources
from ...settings import AgentConfig
from ...units import parse_cpu, parse_duration, parse_size_mb

__all__ = [
    "CULLING_SCHEMA",
    "CapacitySettings",
    "DEFAULT_POOL",
    "QUOTAS_SCHEMA",
    "QUOTA_KEYS",
    "WARM_POOL_SCHEMA",
    "CullingSettings",
    "PoolProfile",
    "QuotaLimits",
    "QuotaSettings",
    "parse_capacity",
]

QUOTA_KEYS = ("workspaces", "running", "cpu", "memory", "gpu")
DEFAULT_POOL = "default"
_ACTIONS = ("stop", "kernels")
_PROFILE_NAME = r"^[a-z][a-z0-9-]{0,30}$"


def _duration_ok(field_name: str, value: Any, error: Any) -> None:
    if value is None:
        return
    try:
        parse_duration(value, field_name)
    except ValueError as exc:
        error(field_name, str(exc))


def _size_ok(field_name: str, value: Any, error: Any) -> None:
    if value is None:
        return
    try:
        parse_size_mb(value, field_name)
    except ValueError as exc:
        error(field_name, str(exc))


def _cpu_ok(field_name: str, value: Any, error: Any) -> None:
    if value is None:
        return
    try:
        parse_cpu(value, field_name)
    except ValueError as exc:
        error(field_name, str(exc))


_DURATION = {"type": ["string", "number"], "nullable": True, "default": None, "check_with": _duration_ok}

CULLING_SCHEMA: dict[str, Any] = {
    "type": "dict",
    "nullable": True,
    "default": None,
    "schema": {
        "idle_timeout": _DURATION,
        "gpu_idle_timeout": _DURATION,
        "max_age": _DURATION,
        "check_interval": {**_DURATION, "default": "1m", "nullable": False},
        "warn_before": {**_DURATION, "default": "15m"},
        "action": {"type": "string", "allowed": list(_ACTIONS), "default": "stop"},
        "gpu_threshold": {"type": "number", "min": 0, "max": 100, "default": 5},
    },
}

_LIMITS: dict[str, Any] = {
    "type": "dict",
    "nullable": True,
    "default": None,
    "schema": {
        "workspaces": {"type": "integer", "min": 0, "nullable": True},
        "running": {"type": "integer", "min": 0, "nullable": True},
        "cpu": {"type": "number", "min": 0, "nullable": True},
        "memory": {"type": ["string", "integer"], "nullable": True, "check_with": _size_ok},
        "gpu": {"type": "integer", "min": 0, "nullable": True},
    },
}

QUOTAS_SCHEMA: dict[str, Any] = {
    "type": "dict",
    "nullable": True,
    "default": None,
    "schema": {
        "default": _LIMITS,
        "users": {"type": "dict", "default": {}, "keysrules": {"type": "string"}, "valuesrules": _LIMITS},
        "teams": {"type": "dict", "default": {}, "keysrules": {"type": "string"}, "valuesrules": _LIMITS},
    },
}

_PROFILE: dict[str, Any] = {
    "type": "dict",
    "schema": {
        "name": {"type": "string", "required": True, "regex": _PROFILE_NAME},
        "size": {"type": "integer", "min": 0, "max": 64, "default": 1},
        "image": {"type": "string", "nullable": True, "default": None},
        "cpu": {"type": "number", "nullable": True, "default": None, "check_with": _cpu_ok},
        "memory": {"type": ["string", "integer"], "nullable": True, "default": None, "check_with": _size_ok},
        "gpu": {"type": "integer", "min": 0, "default": 0},
        "hold_gpu": {"type": "boolean", "default": False},
    },
}

def _profiles_ok(field_name: str, value: Any, error: Any) -> None:
    names = [str(p.get("name")) for p in value or [] if isinstance(p, dict)]
    for name in sorted({n for n in names if names.count(n) > 1 or n == DEFAULT_POOL}):
        error(field_name, f"profile name {name!r} is used twice (the pool of warm_pool.size is {DEFAULT_POOL!r})")


WARM_POOL_SCHEMA: dict[str, Any] = {
    "type": "dict",
    "nullable": True,
    "default": None,
    "schema": {
        "size": {"type": "integer", "min": 0, "max": 64, "default": 0},
        "profiles": {"type": "list", "default": [], "schema": _PROFILE, "check_with": _profiles_ok},
    },
}


@dataclass(frozen=True)
class CullingSettings:
    """``culling:``; ``enabled`` when it names a timeout or a maximum age."""

    idle_timeout: float | None = None
    gpu_idle_timeout: float | None = None
    max_age: float | None = None
    check_interval: float = 60.0
    warn_before: float = 900.0
    action: str = "stop"
    gpu_threshold: float = 5.0

    @property
    def enabled(self) -> bool:
        return bool(self.idle_timeout or self.gpu_idle_timeout or self.max_age)

    def timeout_for(self, holds_gpu: bool) -> float | None:
        """The idle time after which a workspace is culled (``None``: never for idleness)."""
        if holds_gpu and self.gpu_idle_timeout:
            return self.gpu_idle_timeout
        return self.idle_timeout

    @property
    def report_interval(self) -> float:
        """How often JupyterLab reports its activity when nothing changes (a change is reported
        at once): often enough that a check never reads a report older than one interval."""
        return max(1.0, min(self.check_interval, 30.0))


@dataclass(frozen=True)
class QuotaLimits:
    """One set of limits; ``None`` is no limit."""

    workspaces: int | None = None
    running: int | None = None
    cpu: float | None = None
    memory_mb: int | None = None
    gpu: int | None = None

    def get(self, key: str) -> float | None:
        return getattr(self, "memory_mb" if key == "memory" else key)  # type: ignore[no-any-return]

    @classmethod
    def parse(cls, doc: dict[str, Any] | None, base: QuotaLimits | None = None) -> QuotaLimits:
        """From a mapping; keys it leaves out come from ``base``."""
        doc = doc or {}
        b = base or cls()
        return cls(
            workspaces=doc["workspaces"] if "workspaces" in doc else b.workspaces,
            running=doc["running"] if "running" in doc else b.running,
            cpu=float(doc["cpu"]) if doc.get("cpu") is not None else (None if "cpu" in doc else b.cpu),
            memory_mb=parse_size_mb(doc["memory"], "memory") if doc.get("memory") is not None
            else (None if "memory" in doc else b.memory_mb),
            gpu=doc["gpu"] if "gpu" in doc else b.gpu,
        )

    @property
    def empty(self) -> bool:
        return all(self.get(k) is None for k in QUOTA_KEYS)


@dataclass(frozen=True)
class QuotaSettings:
    """``quotas:``: the default for users, per-user replacements (per key), per-team limits."""

    default: QuotaLimits = field(default_factory=QuotaLimits)
    users: dict[str, QuotaLimits] = field(default_factory=dict)
    teams: dict[str, QuotaLimits] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return not self.default.empty or any(not q.empty for q in (*self.users.values(), *self.teams.values()))

    def for_user(self, name: str) -> QuotaLimits:
        return self.users.get(name, self.default)


@dataclass(frozen=True)
class PoolProfile:
    """One warm pool: how many members it keeps and what a create must ask for to claim one."""

    name: str
    size: int
    image: str | None = None
    resources: Resources = field(default_factory=Resources)
    hold_gpu: bool = False

    def describe(self) -> dict[str, Any]:
        r = self.resources
        return {"image": self.image, "cpu": r.cpu, "memory_mb": r.memory_mb, "gpu": r.gpu, "hold_gpu": self.hold_gpu}


@dataclass(frozen=True)
class CapacitySettings:
    culling: CullingSettings
    quotas: QuotaSettings
    pools: tuple[PoolProfile, ...]


def _seconds(value: Any, what: str) -> float | None:
    return None if value is None else parse_duration(value, what)


def parse_capacity(config: AgentConfig) -> CapacitySettings:
    """The three sections, validated by the loader already, as typed values."""
    c = config.section("culling")
    culling = CullingSettings(
        idle_timeout=_seconds(c.get("idle_timeout"), "culling.idle_timeout"),
        gpu_idle_timeout=_seconds(c.get("gpu_idle_timeout"), "culling.gpu_idle_timeout"),
        max_age=_seconds(c.get("max_age"), "culling.max_age"),
        check_interval=_seconds(c.get("check_interval", "1m"), "culling.check_interval") or 60.0,
        warn_before=_seconds(c.get("warn_before", "15m"), "culling.warn_before") or 0.0,
        action=str(c.get("action") or "stop"),
        gpu_threshold=float(c.get("gpu_threshold", 5)),
    )
    q = config.section("quotas")
    default = QuotaLimits.parse(q.get("default"))
    quotas = QuotaSettings(
        default=default,
        users={name: QuotaLimits.parse(doc, default) for name, doc in (q.get("users") or {}).items()},
        teams={name: QuotaLimits.parse(doc) for name, doc in (q.get("teams") or {}).items()},
    )
    w = config.section("warm_pool")
    pools: list[PoolProfile] = []
    if int(w.get("size") or 0) > 0:
        pools.append(PoolProfile(DEFAULT_POOL, int(w["size"])))
    for p in w.get("profiles") or []:
        resources = Resources(
            cpu=parse_cpu(p["cpu"]) if p.get("cpu") is not None else None,
            memory_mb=parse_size_mb(p["memory"]) if p.get("memory") is not None else None,
            gpu=int(p.get("gpu") or 0),
        )
        pools.append(PoolProfile(p["name"], int(p.get("size", 1)), p.get("image"), resources, bool(p.get("hold_gpu"))))
    return CapacitySettings(culling, quotas, tuple(pools))
