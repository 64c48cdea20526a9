"""agent.yaml ``usage:`` (the sampler and its history) and ``metrics:`` (the Prometheus endpoint).

::

    usage:
      interval: 30s          # how often each running workspace is sampled (off: no sampling)
      keep_raw: 1d           # samples as taken; then 5-minute averages ...
      keep_5m: 14d           # ... kept this long; hourly ones until retention.metrics (docs/observe.md)
      disk_interval: 10m     # disk use is measured less often (it walks the files)
      kernels: true          # ask each JupyterLab for its kernels at every sample
    metrics:
      listen: null           # HOST:PORT of a listener serving only /metrics, without a key
      scrape_key_verifier: null   # the api_key_verifier of a key Prometheus sends to /metrics on
                             # the main port (Authorization: Bearer KEY); admins' keys work too
      workspace_labels: false     # per-workspace usage series named by workspace (unbounded: off)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..units import parse_duration

__all__ = ["METRICS_SCHEMA", "USAGE_SCHEMA", "MetricsSettings", "UsageSettings"]

_LISTEN = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(?P<port>\d{1,5})$")


def _duration_ok(field: str, value: Any, error: Any) -> None:
    if value in (None, "off", False, 0):
        return
    try:
        parse_duration(value, field)
    except ValueError as exc:
        error(field, str(exc))


def _listen_ok(field: str, value: Any, error: Any) -> None:
    if value is None:
        return
    m = _LISTEN.match(str(value or ""))
    if not m or not 0 < int(m.group("port")) < 65536:
        error(field, "must be HOST:PORT, e.g. 127.0.0.1:9102")


_DURATION: dict[str, Any] = {"type": ["string", "integer", "float", "boolean"], "nullable": True,
                             "check_with": _duration_ok}

USAGE_SCHEMA: dict[str, Any] = {
    "type": "dict",
    "default": {},
    "schema": {
        "interval": {**_DURATION, "default": "30s"},
        "keep_raw": {**_DURATION, "default": "1d"},
        "keep_5m": {**_DURATION, "default": "14d"},
        "disk_interval": {**_DURATION, "default": "10m"},
        "kernels": {"type": "boolean", "default": True},
    },
}

METRICS_SCHEMA: dict[str, Any] = {
    "type": "dict",
    "default": {},
    "schema": {
        "listen": {"type": "string", "nullable": True, "default": None, "check_with": _listen_ok},
        "scrape_key_verifier": {"type": "string", "nullable": True, "default": None, "regex": r"^[0-9a-f]{64}$"},
        "workspace_labels": {"type": "boolean", "default": False},
    },
}


def _seconds(value: Any, what: str, default: float | None) -> float | None:
    if value in ("off", False, 0):
        return None
    if value is None:
        return default
    return parse_duration(value, what)


@dataclass(frozen=True)
class UsageSettings:
    interval: float | None = 30.0  # None: no sampling
    keep_raw: float = 86400.0
    keep_5m: float = 14 * 86400.0
    disk_interval: float | None = 600.0
    kernels: bool = True

    @classmethod
    def from_section(cls, s: dict[str, Any] | None) -> UsageSettings:
        s = s or {}
        return cls(
            interval=_seconds(s.get("interval"), "usage.interval", 30.0),
            keep_raw=_seconds(s.get("keep_raw"), "usage.keep_raw", 86400.0) or 86400.0,
            keep_5m=_seconds(s.get("keep_5m"), "usage.keep_5m", 14 * 86400.0) or 14 * 86400.0,
            disk_interval=_seconds(s.get("disk_interval"), "usage.disk_interval", 600.0),
            kernels=bool(s.get("kernels", True)),
        )


@dataclass(frozen=True)
class MetricsSettings:
    listen: tuple[str, int] | None = None
    scrape_key_verifier: bytes | None = None
    workspace_labels: bool = False

    @classmethod
    def from_section(cls, s: dict[str, Any] | None) -> MetricsSettings:
        s = s or {}
        listen = None
        m = _LISTEN.match(str(s.get("listen") or ""))
        if m:
            listen = (m.group("host").strip("[]"), int(m.group("port")))
        verifier = s.get("scrape_key_verifier")
        return cls(listen, bytes.fromhex(verifier) if verifier else None, bool(s.get("workspace_labels", False)))
