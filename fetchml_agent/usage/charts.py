"""Charts drawn by the agent: SVG for pages (no script, no network).

:func:`line_chart` draws one series over time against an optional limit (dashed), with event
markers (OOM kills, restarts...) at their times; :func:`timeline` draws runs as bars (terminals get
:func:`fetchml_agent.units.sparkline`). Every
``<svg>`` says how many data points it drew (``data-points``) and its polyline carries them, so a
test can see that the chart rendered real data. All text is escaped.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["EVENT_STYLE", "line_chart", "small_chart", "timeline"]

W, H = 760, 170
_L, _R, _T, _B = 64, 16, 12, 28  # margins

#: How an event kind is marked: colour and the label shown in the legend and tooltips.
EVENT_STYLE: dict[str, tuple[str, str]] = {
    "oom_kill": ("#d62728", "OOM kill"),
    "crash": ("#8c1c13", "crash"),
    "restart": ("#ff7f0e", "restart"),
    "cull": ("#9467bd", "idle kernels shut down"),
    "limit_change": ("#2ca02c", "limits changed"),
    "start": ("#7f7f7f", "start"),
    "stop": ("#7f7f7f", "stop"),
}
_OUTCOME = {"succeeded": "#2ca02c", "failed": "#d62728", "timed_out": "#d62728", "cancelled": "#7f7f7f",
            "running": "#1f77b4", "queued": "#aec7e8", "missing": "#8c564b"}


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def _ticks(t0: float, t1: float, n: int = 6) -> list[float]:
    if t1 <= t0:
        return [t0]
    return [t0 + (t1 - t0) * i / (n - 1) for i in range(n)]


def _tick_label(ts: float, span: float) -> str:
    pattern = "%H:%M:%S" if span <= 1800 else "%H:%M" if span <= 2 * 86400 else "%m-%d"
    return time.strftime(pattern, time.localtime(ts))


def line_chart(title: str, points: Sequence[tuple[float, float | None]], t0: float, t1: float, *,
               fmt: Callable[[float], str], limit: float | None = None, limit_label: str = "limit",
               events: Sequence[dict[str, Any]] = (), color: str = "#1f77b4", css_id: str = "") -> str:
    """One series of ``(t, value)`` over ``[t0, t1]``; gaps (``None``) break the line."""
    values = [v for _, v in points if v is not None]
    top = max([*values, limit or 0.0, 1e-9])
    top *= 1.08
    span = max(t1 - t0, 1.0)
    pw, ph = W - _L - _R, H - _T - _B

    def x(t: float) -> float:
        return _L + (t - t0) / span * pw

    def y(v: float) -> float:
        return _T + ph - v / top * ph

    parts = [f'<svg class="chart" id="{_e(css_id)}" role="img" aria-label="{_e(title)}" viewBox="0 0 {W} {H}" '
             f'width="100%" data-points="{len(values)}" xmlns="http://www.w3.org/2000/svg">',
             f"<title>{_e(title)}</title>",
             f'<rect x="{_L}" y="{_T}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#ddd"/>']
    for i in range(5):
        v = top * i / 4
        parts.append(f'<line x1="{_L}" x2="{_L + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>'
                     f'<text x="{_L - 6}" y="{y(v) + 4:.1f}" text-anchor="end" font-size="10" fill="#555">'
                     f"{_e(fmt(v))}</text>")
    ticks = _ticks(t0, t1)
    for i, t in enumerate(ticks):
        anchor = "end" if i == len(ticks) - 1 and i else "middle"  # the last label ends at the right edge
        parts.append(f'<text x="{x(t):.1f}" y="{H - 8}" text-anchor="{anchor}" font-size="10" fill="#555">'
                     f"{_e(_tick_label(t, span))}</text>")
    if limit:
        parts.append(f'<line class="limit" x1="{_L}" x2="{_L + pw}" y1="{y(limit):.1f}" y2="{y(limit):.1f}" '
                     f'stroke="#d62728" stroke-dasharray="6 4"><title>{_e(limit_label)}: {_e(fmt(limit))}</title></line>')
    segment: list[str] = []
    lines: list[list[str]] = []
    for t, value in points:
        if value is None:
            if segment:
                lines.append(segment)
            segment = []
            continue
        segment.append(f"{x(t):.1f},{y(value):.1f}")
    if segment:
        lines.append(segment)
    for seg in lines:
        if len(seg) == 1:
            cx, cy = seg[0].split(",")
            parts.append(f'<circle class="point" cx="{cx}" cy="{cy}" r="2.5" fill="{color}"/>')
        else:
            parts.append(f'<polyline class="series" fill="none" stroke="{color}" stroke-width="1.5" '
                         f'points="{" ".join(seg)}"/>')
    for ev in events:
        if not t0 <= ev["ts"] <= t1:
            continue
        stroke, label = EVENT_STYLE.get(ev["kind"], ("#333", ev["kind"]))
        ex = x(ev["ts"])
        count = ev.get("details", {}).get("count")
        tip = f"{label}{f' ×{count}' if count and count > 1 else ''} at {_when(ev['ts'])}"
        parts.append(f'<g class="event {_e(ev["kind"])}"><line x1="{ex:.1f}" x2="{ex:.1f}" y1="{_T}" y2="{_T + ph}" '
                     f'stroke="{stroke}" stroke-width="1"/><path d="M{ex - 5:.1f},{_T} L{ex + 5:.1f},{_T} '
                     f'L{ex:.1f},{_T + 8}Z" fill="{stroke}"/><title>{_e(tip)}</title></g>')
    if not values:
        parts.append(f'<text x="{_L + pw / 2}" y="{_T + ph / 2}" text-anchor="middle" font-size="12" fill="#888">'
                     "no samples in this period</text>")
    parts.append("</svg>")
    return "".join(parts)


def small_chart(title: str, points: Sequence[tuple[float, float | None]], *, limit: float | None = None,
                css_class: str = "", width: int = 120, height: int = 30, color: str = "#2c7be5") -> str:
    """A chart small enough for a table cell: the series against its limit (the top of the chart,
    dashed; without a limit the series' own peak), no axes; the title (a tooltip) says what it
    shows. Empty without two values."""
    drawn = [(t, v) for t, v in points if v is not None]
    if len(drawn) < 2:
        return ""
    t0, t1 = drawn[0][0], drawn[-1][0]
    peak = max([v for _, v in drawn] + [1e-9])
    top = max(limit, peak) * 1.05 if limit else peak * 1.1
    sx, sy, bottom = (width - 2) / max(t1 - t0, 1e-9), (height - 2) / top, height - 1
    coords = " ".join(["%.1f,%.1f" % ((t - t0) * sx + 1, bottom - v * sy) for t, v in drawn])  # noqa: UP031 (hot)
    parts = [f'<svg class="chart small {_e(css_class)}" role="img" aria-label="{_e(title)}" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" data-points="{len(drawn)}" '
             f'xmlns="http://www.w3.org/2000/svg"><title>{_e(title)}</title>'
             f'<rect width="{width}" height="{height}" fill="#fafafa" stroke="#e5e5e5"/>']
    if limit:
        ly = height - 1 - limit / top * (height - 2)
        parts.append(f'<line class="limit" x1="0" x2="{width}" y1="{ly:.1f}" y2="{ly:.1f}" stroke="#d62728" '
                     'stroke-dasharray="3 2"/>')
    parts.append(f'<polyline class="series" fill="none" stroke="{color}" stroke-width="1.3" '
                 f'points="{coords}"/></svg>')
    return "".join(parts)


def timeline(runs: Sequence[dict[str, Any]], t0: float, t1: float) -> str:
    """Runs as bars from start to end (or now), coloured by outcome, one row each."""
    rows = [r for r in runs if (r.get("started_at") or r.get("queued_at"))]
    row_h = 18
    height = _T + max(1, len(rows)) * row_h + _B
    span = max(t1 - t0, 1.0)
    pw = W - _L - _R

    def x(t: float) -> float:
        return _L + (min(max(t, t0), t1) - t0) / span * pw

    parts = [f'<svg class="chart timeline" role="img" aria-label="runs" viewBox="0 0 {W} {height}" width="100%" '
             f'data-points="{len(rows)}" xmlns="http://www.w3.org/2000/svg"><title>runs</title>']
    ticks = _ticks(t0, t1)
    for i, t in enumerate(ticks):
        anchor = "end" if i == len(ticks) - 1 and i else "middle"  # the last label ends at the right edge
        parts.append(f'<text x="{x(t):.1f}" y="{height - 8}" text-anchor="{anchor}" font-size="10" fill="#555">'
                     f"{_e(_tick_label(t, span))}</text>")
    now = time.time()
    for i, r in enumerate(rows):
        start = r.get("started_at") or r["queued_at"]
        end = r.get("finished_at") or now
        y0 = _T + i * row_h
        x0, x1 = x(start), x(end)
        color = _OUTCOME.get(r.get("status", ""), "#7f7f7f")
        duration = f"{r['duration_s']:.1f} s" if r.get("duration_s") is not None else "running"
        tip = f"{r['id']} ({r.get('target', '')}): {r.get('status')} · {duration} · started {_when(start)}"
        parts.append(f'<g class="run {_e(r.get("status", ""))}"><rect x="{x0:.1f}" y="{y0 + 3}" '
                     f'width="{max(2.0, x1 - x0):.1f}" height="{row_h - 6}" fill="{color}"/>'
                     f'<text x="{_L - 6}" y="{y0 + row_h - 5}" text-anchor="end" font-size="10" fill="#333">'
                     f"{_e(str(r['id'])[-8:])}</text><title>{_e(tip)}</title></g>")
    if not rows:
        parts.append(f'<text x="{_L + pw / 2}" y="{_T + 12}" text-anchor="middle" font-size="12" fill="#888">'
                     "no runs in this period</text>")
    parts.append("</svg>")
    return "".join(parts)

