"""Shared helpers: timing, percentiles, the result table."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Row", "percentile", "time_many", "print_rows"]


@dataclass
class Row:
    name: str
    value: float
    unit: str
    baseline_name: str = ""
    baseline: float | None = None
    target: str = ""

    @property
    def ratio(self) -> float | None:
        return self.value / self.baseline if self.baseline else None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def time_many(fn: Callable[[], object], n: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def median(values: list[float]) -> float:
    return statistics.median(values)


def print_rows(title: str, rows: list[Row]) -> None:
    print(f"\n== {title}")
    for r in rows:
        line = f"  {r.name:<52} {r.value:>10.3f} {r.unit:<3}"
        if r.baseline is not None:
            line += f"  vs {r.baseline_name} {r.baseline:.3f} {r.unit}  ratio {r.ratio:.2f}x"
        if r.target:
            line += f"  (target {r.target})"
        print(line)
