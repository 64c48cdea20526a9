"""Conversions shared by the agent, the CLI, the Nomad templates and the Ansible filters.

Sizes follow the seed's spelling (``8g``, ``512m``, ``20g``): a number and an optional binary
unit (k, m, g, t; an ``i``/``b`` suffix is accepted: ``8Gi``, ``8GB``). A bare number is MiB.
Durations (retention, data ages) are a number and a unit: ``30s``, ``15m``, ``12h``, ``7d``,
``2w``, ``1y`` (365 days); a bare number is seconds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

__all__ = ["format_age", "format_bytes", "format_duration", "parse_cpu", "parse_duration", "parse_size_mb", "format_size_mb",
           "sparkline"]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b?)?\s*$", re.IGNORECASE)
_FACTOR_MB = {"k": 1 / 1024, "": 1, "m": 1, "g": 1024, "t": 1024 * 1024}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w|y)?\s*$", re.IGNORECASE)
_FACTOR_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def parse_size_mb(value: str | int | float, what: str = "size") -> int:
    """``"8g"`` → 8192. Raises ValueError with a message naming ``what`` on anything else."""
    if isinstance(value, bool):
        raise ValueError(f"{what}: expected a size such as 8g or 512m, got {value!r}")
    if isinstance(value, (int, float)):
        mb = float(value)
    else:
        m = _SIZE.match(str(value))
        if not m:
            raise ValueError(f"{what}: expected a size such as 8g or 512m, got {value!r}")
        mb = float(m.group(1)) * _FACTOR_MB[m.group(2).lower()]
    if mb <= 0:
        raise ValueError(f"{what}: must be more than zero, got {value!r}")
    return max(1, round(mb))


def format_size_mb(mb: int) -> str:
    """8192 → ``"8g"``; 1536 → ``"1536m"``."""
    return f"{mb // 1024}g" if mb % 1024 == 0 else f"{mb}m"


def parse_cpu(value: str | int | float, what: str = "cpu") -> float:
    """CPU cores as a positive number (``4``, ``0.5``, ``"2"``)."""
    try:
        cpu = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: expected a number of cores such as 4 or 0.5, got {value!r}") from None
    if isinstance(value, bool) or not cpu > 0 or cpu != cpu or cpu == float("inf"):
        raise ValueError(f"{what}: must be a positive number of cores, got {value!r}")
    return cpu


def parse_duration(value: str | int | float, what: str = "duration") -> float:
    """Seconds from ``30``, ``"45s"``, ``"30m"``, ``"12h"``, ``"7d"``, ``"2w"`` or ``"1y"`` (365 days;
    a bare number is seconds).

    Raises ValueError with a message naming ``what`` on anything else, or on zero or less."""
    if isinstance(value, bool):
        raise ValueError(f"{what}: expected a duration such as 30m or 12h, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise ValueError(f"{what}: expected a duration such as 30m or 12h, got {value!r}")
        seconds = float(m.group(1)) * _FACTOR_S[(m.group(2) or "").lower()]
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"{what}: must be more than zero, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """604800 → ``"1w"``; 5400 → ``"90m"``: the largest unit that divides it."""
    s = int(seconds)
    for unit in ("y", "w", "d", "h", "m"):
        if s and s % _FACTOR_S[unit] == 0:
            return f"{s // _FACTOR_S[unit]}{unit}"
    return f"{s}s"


def format_age(seconds: float) -> str:
    """An age in its largest whole unit, rounded down: 2592002 → ``"30d"``; 90 → ``"1m"``."""
    s = max(0, int(seconds))
    for unit in ("d", "h", "m"):
        if s >= _FACTOR_S[unit]:
            return f"{s // _FACTOR_S[unit]}{unit}"
    return f"{s}s"


def format_bytes(v: float | None) -> str:
    """1288490188 → ``"1.2 GiB"``; ``None`` → ``"–"``."""
    if v is None:
        return "–"
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(v) >= size:
            return f"{v / size:.1f} {unit}"
    return f"{v:.0f} B"


_BLOCKS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float | None], width: int, top: float | None = None) -> str:
    """``values`` squeezed into at most ``width`` block characters (bucket means, scaled to ``top``
    or to their maximum); a bucket without values is a space."""
    if width <= 0 or not values:
        return ""
    n, cols = len(values), min(width, len(values))
    buckets: list[float | None] = []
    for i in range(cols):
        chunk = [v for v in values[i * n // cols:(i + 1) * n // cols] if v is not None]
        buckets.append(sum(chunk) / len(chunk) if chunk else None)
    high = top if top else max([b for b in buckets if b is not None] or [0.0])
    out = []
    for b in buckets:
        if b is None:
            out.append(" ")
        elif high <= 0:
            out.append(_BLOCKS[0])
        else:
            out.append(_BLOCKS[min(len(_BLOCKS) - 1, max(0, math.ceil(b / high * len(_BLOCKS)) - 1))])
    return "".join(out)
