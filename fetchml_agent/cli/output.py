"""How ``ml`` prints: one JSON document with ``--json``; tables for a terminal, plain when piped."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["emit_json", "human_age", "print_kv", "print_table", "status_text", "stderr"]

_COLORS = {"running": "32", "starting": "33", "stopping": "33", "queued": "36", "failed": "31", "missing": "31",
           "stopped": "90", "succeeded": "32", "cancelled": "90"}


def _tty() -> bool:
    return sys.stdout.isatty()


def stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def emit_json(document: Any) -> None:
    json.dump(document, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def status_text(status: str) -> str:
    code = _COLORS.get(status)
    return f"\x1b[{code}m{status}\x1b[0m" if code and _tty() else status


def human_age(ts: float | None) -> str:
    if not ts:
        return "-"
    delta = max(0, int(time.time() - ts))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= size:
            return f"{delta // size}{unit} ago"
    return f"{delta}s ago"


def _visible_len(text: str) -> int:
    import re

    return len(re.sub(r"\x1b\[[0-9;]*m", "", text))


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], empty: str = "nothing to show") -> None:
    """Aligned columns; a bold header on a terminal, a plain header line when piped."""
    cells = [[("-" if c is None or c == "" else str(c)) for c in row] for row in rows]
    if not cells:
        print(empty)
        return
    widths = [max([len(h)] + [_visible_len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    head = "  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=False)).rstrip()
    print(f"\x1b[1m{head}\x1b[0m" if _tty() else head)
    for row in cells:
        print("  ".join(c + " " * (w - _visible_len(c)) for c, w in zip(row, widths, strict=False)).rstrip())


def print_kv(pairs: Iterable[tuple[str, Any]]) -> None:
    pairs = [(k, "-" if v is None or v == "" else v) for k, v in pairs]
    width = max((len(k) for k, _ in pairs), default=0)
    for key, value in pairs:
        print(f"{key + ':':<{width + 1}} {value}")
