"""The history document (``ml jupyter stats --since``) and the report built on it
(``ml jupyter report``): usage over time against the limits, events, runs, package events and advice.

:func:`history_doc` and :func:`report_doc` assemble documents; :func:`render_html` and
:func:`render_text` present a report (the page is one self-contained file: inline CSS and SVG, no
script, nothing fetched). The home page shows the same page (fetchml_agent/web).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jinja2

from ..errors import FetchmlError
from ..experiments.records import runs_of
from ..protocol.opcodes import Opcode
from ..service.calls import Call
from ..service.context import AgentContext
from ..service.registry import OPERATIONS
from ..service.views import workspace_view
from ..store.audit import query_events
from ..store.usage import AVERAGED, FIELDS, PEAKS, history
from ..store.workspaces import Workspace
from ..units import format_bytes as fmt_bytes
from ..units import sparkline
from .charts import EVENT_STYLE, line_chart, timeline
from .service import Usage

__all__ = ["fmt_bytes", "fmt_cores", "history_doc", "render_html", "render_text", "report_doc", "summarize"]

#: Package actions a report lists (decisions and index lookups are in the audit log).
PACKAGE_ACTIONS = ("package.install", "package.uninstall", "package.request", "package.approve", "package.deny",
                   "package.force", "package.scan", "package.remove")

_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(Path(__file__).with_name("templates"))),
    autoescape=True, trim_blocks=True, lstrip_blocks=True)


def fmt_cores(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}"


def fmt_ratio(v: float | None) -> str:
    return "–" if v is None else f"{v * 100:.0f}%"


def _round(v: Any) -> Any:
    return round(v, 4) if isinstance(v, float) else v


def summarize(series: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Per field: min, mean (weighted by samples), max and the last value of the window."""
    out: dict[str, dict[str, float | None]] = {}
    for f in FIELDS:
        vals = [(p[f], p.get("n") or 1) for p in series if p.get(f) is not None]
        if not vals:
            out[f] = {"min": None, "avg": None, "max": None, "last": None}
            continue
        total = sum(n for _, n in vals)
        out[f] = {"min": _round(min(v for v, _ in vals)), "avg": _round(sum(v * n for v, n in vals) / total),
                  "max": _round(max(v for v, _ in vals)), "last": _round(vals[-1][0])}
    return out


async def history_doc(agent: AgentContext, usage: Usage, ws: Workspace, since_s: float,
                      points: int = 500) -> dict[str, Any]:
    now = time.time()
    since = now - since_s
    s = usage.settings
    rows, step = await agent.store.run(lambda c: history(c, ws.id, since, now, now=now, keep_raw=s.keep_raw,
                                                           keep_5m=s.keep_5m, max_points=points))
    series = [{"t": round(r["t"], 3), "n": r["n"], **{f: _round(r[f]) for f in FIELDS}} for r in rows]
    return {
        "name": ws.name,
        "workspace_id": ws.id,
        "since": since,
        "until": now,
        "step_s": step,
        "interval_s": s.interval,
        "fields": {"averaged": list(AVERAGED), "peaks": list(PEAKS)},
        "series": series,
        "events": await usage.events(ws, since, now),
        "summary": summarize(series),
    }


def advise(ws: Workspace, h: dict[str, Any]) -> list[str]:
    """What the history says about the workspace's limits."""
    out: list[str] = []
    s = h["summary"]
    res = ws.resources or {}
    ooms = sum(int(e["details"].get("count") or 1) for e in h["events"] if e["kind"] == "oom_kill")
    crashes = sum(1 for e in h["events"] if e["kind"] in ("crash", "restart") and e["details"].get("by") in (None, "runtime"))
    mem_peak = s["memory_peak_bytes"]["max"] or s["memory_bytes"]["max"]
    limit = (res.get("memory_mb") or 0) * 2**20
    if ooms:
        out.append(f"{ooms} OOM kill(s): the memory limit ({fmt_bytes(limit or None)}) is too small for what runs here: "
                   f"ml jupyter scale {ws.name} --memory={max(1, int((res.get('memory_mb') or 1024) * 2 / 1024))}g")
    elif limit and mem_peak and mem_peak / limit >= 0.9:
        out.append(f"memory peaked at {mem_peak / limit:.0%} of its limit: ml jupyter scale {ws.name} "
                   f"--memory={max(1, int(res['memory_mb'] * 1.5 / 1024))}g avoids an OOM kill")
    elif limit and mem_peak and mem_peak / limit < 0.25 and limit >= 2 * 2**30:
        out.append(f"memory never went above {mem_peak / limit:.0%} of its limit ({fmt_bytes(mem_peak)} of "
                   f"{fmt_bytes(limit)}): a smaller --memory frees capacity for others")
    elif not limit and mem_peak:
        out.append(f"no memory limit is set (peak {fmt_bytes(mem_peak)}): ml jupyter scale {ws.name} --memory=... "
                   "protects the host")
    cpu_limit = res.get("cpu")
    cpu_avg, cpu_max = s["cpu_cores"]["avg"], s["cpu_cores"]["max"]
    if cpu_limit and cpu_avg is not None:
        if cpu_max is not None and cpu_max >= 0.95 * cpu_limit and cpu_avg >= 0.7 * cpu_limit:
            out.append(f"CPU ran at its limit ({cpu_avg:.1f} of {cpu_limit:g} cores on average): "
                       f"ml jupyter scale {ws.name} --cpu={cpu_limit * 2:g}")
        elif cpu_avg < 0.1 * cpu_limit and cpu_limit >= 2:
            out.append(f"CPU averaged {cpu_avg:.2f} of {cpu_limit:g} cores: --cpu={max(1, round(cpu_limit / 2)):g} "
                       "would do")
    gpu_avg = s["gpu_utilization"]["avg"]
    if res.get("gpu") and gpu_avg is not None and gpu_avg < 0.05:
        out.append(f"its {res['gpu']} GPU(s) averaged {gpu_avg:.0%} utilization: --gpu=0 frees them for others")
    if crashes >= 3:
        out.append(f"the workload restarted or died {crashes} times in this period: ml jupyter logs {ws.name}")
    return out


async def _optimize(agent: AgentContext, call: Call, ws: Workspace) -> list[str]:
    """The ``optimize`` operation's advice (live use and idle kernels), when the workspace runs."""
    if ws.status != "running":
        return []
    op = OPERATIONS[Opcode.OPTIMIZE_WORKSPACE]
    try:
        result = await op.run(agent, call, op.validate({"name": ws.name, "apply": False}))
    except FetchmlError as exc:
        return [f"(live advice unavailable: {exc.message})"]
    return [a for a in result.data.get("advice", []) if a != "nothing to do"]


async def report_doc(agent: AgentContext, usage: Usage, call: Call, ws: Workspace, since_s: float) -> dict[str, Any]:
    h = await history_doc(agent, usage, ws, since_s, points=600)
    since = h["since"]
    runs = await agent.store.run(lambda c: runs_of(c, workspace_ids=[ws.id], limit=500))
    run_docs = [{"id": r.id, "experiment": r.experiment_id, "target": r.target, "status": r.status,
                 "queued_at": r.queued_at, "started_at": r.started_at, "finished_at": r.finished_at,
                 "duration_s": r.duration_s, "exit_code": r.exit_code, "user": r.user}
                for r in runs if (r.finished_at or time.time()) >= since]
    audit = await agent.store.run(lambda c: query_events(c, workspace_id=ws.id, action_prefix="package.", limit=1000))
    packages = [{"ts": e["ts"], "action": e["action"], "user": e["user"], "outcome": e["outcome"],
                 "packages": _packages_of(e["details"])}
                for e in reversed(audit) if e["ts"] >= since and e["action"] in PACKAGE_ACTIONS]
    advice = advise(ws, h)
    # The live advice, less what the history already said about memory.
    said_memory = any("memory" in a for a in advice)
    advice += [a for a in await _optimize(agent, call, ws) if not (said_memory and a.startswith(("memory", "no memory")))]
    return {"generated_at": h["until"], "workspace": workspace_view(agent, ws, call.user), "history": h,
            "runs": sorted(run_docs, key=lambda r: r["started_at"] or r["queued_at"]), "package_events": packages,
            "advice": advice or ["nothing to change: use stayed within the limits"]}


def _packages_of(details: dict[str, Any]) -> str:
    for key in ("packages", "specs", "spec", "package", "requested", "removed"):
        value = details.get(key)
        if value:
            if isinstance(value, list):
                return ", ".join(str(v.get("name", v) if isinstance(v, dict) else v) for v in value)[:300]
            return str(value)[:300]
    return ""


def _series(h: dict[str, Any], field: str) -> list[tuple[float, float | None]]:
    return [(p["t"], p.get(field)) for p in h["series"]]


def _event_counts(events: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    counts: dict[str, int] = {}
    for e in events:
        counts[e["kind"]] = counts.get(e["kind"], 0) + int(e["details"].get("count") or 1)
    return [(kind, EVENT_STYLE.get(kind, ("#333", kind))[1], n) for kind, n in counts.items()]


def render_html(doc: dict[str, Any]) -> str:
    """The report as one self-contained page."""
    h, ws = doc["history"], doc["workspace"]
    t1 = h["until"]
    # The charts start where the data does (a workspace younger than the period fills the width).
    firsts = [p["t"] for p in h["series"][:1]] + [e["ts"] for e in h["events"][:1]] + \
        [r["started_at"] or r["queued_at"] for r in doc["runs"][:1]]
    t0 = max(h["since"], min(firsts) - max(1.0, (t1 - min(firsts)) * 0.02)) if firsts else h["since"]
    s = h["summary"]
    marks = [e for e in h["events"] if e["kind"] in ("oom_kill", "restart", "crash", "cull", "limit_change")]
    res = ws["resources"]
    charts = [
        ("CPU (cores)", line_chart("CPU (cores)", _series(h, "cpu_cores"), t0, t1, fmt=lambda v: f"{v:.2f}",
                                   limit=res.get("cpu"), limit_label="CPU limit", events=marks, css_id="cpu"),
         f"mean {fmt_cores(s['cpu_cores']['avg'])}, peak {fmt_cores(s['cpu_cores']['max'])} of "
         f"{res.get('cpu') or 'no limit'}"),
        ("Memory", line_chart("Memory", _series(h, "memory_bytes"), t0, t1, fmt=fmt_bytes,
                              limit=(res.get("memory_mb") or 0) * 2**20 or None, limit_label="memory limit",
                              events=marks, color="#9467bd", css_id="memory"),
         f"mean {fmt_bytes(s['memory_bytes']['avg'])}, peak {fmt_bytes(s['memory_peak_bytes']['max'])} of "
         f"{res.get('memory') or 'no limit'}"),
    ]
    if res.get("gpu") or s["gpu_utilization"]["max"] is not None:
        charts.append(("GPU utilization", line_chart("GPU utilization", _series(h, "gpu_utilization"), t0, t1,
                                                     fmt=fmt_ratio, limit=1.0, limit_label="100%", events=marks,
                                                     color="#2ca02c", css_id="gpu"),
                       f"mean {fmt_ratio(s['gpu_utilization']['avg'])}, {res.get('gpu', 0)} GPU(s)"))
    if s["disk_bytes"]["max"] is not None:
        charts.append(("Disk", line_chart("Disk", _series(h, "disk_bytes"), t0, t1, fmt=fmt_bytes,
                                          color="#8c564b", css_id="disk"),
                       f"last {fmt_bytes(s['disk_bytes']['last'])}"))
    return _TEMPLATES.get_template("report.html.j2").render(
        doc=doc, ws=ws, h=h, charts=charts, runs_svg=timeline(doc["runs"], t0, t1), events=h["events"],
        event_counts=_event_counts(h["events"]), style=EVENT_STYLE, when=_when, period=_period(t1 - t0), t0=t0)


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "–"


def _period(seconds: float) -> str:
    days = seconds / 86400
    if days >= 2:
        return f"{days:.0f} days"
    if seconds >= 7200:
        return f"{seconds / 3600:.0f} hours"
    minutes = max(1, round(seconds / 60))
    return "1 minute" if minutes == 1 else f"{minutes} minutes"


def render_text(doc: dict[str, Any], width: int = 100) -> str:
    """The report for a terminal: one sparkline per resource, then events, runs, packages, advice."""
    h, ws = doc["history"], doc["workspace"]
    s, res = h["summary"], ws["resources"]
    spark_w = max(10, min(120, width - 48))
    lines = [f"Workspace {ws['name']} ({ws['status']}, {ws['runtime']}): the last {_period(h['until'] - h['since'])}, "
             f"generated {_when(doc['generated_at'])}", ""]
    rows = [
        ("cpu", "cpu_cores", res.get("cpu"), fmt_cores, f"of {res.get('cpu') or 'no limit'} cores"),
        ("memory", "memory_bytes", (res.get("memory_mb") or 0) * 2**20 or None, fmt_bytes,
         f"of {res.get('memory') or 'no limit'}"),
        ("gpu", "gpu_utilization", 1.0, fmt_ratio, f"{res.get('gpu', 0)} GPU(s)"),
        ("disk", "disk_bytes", None, fmt_bytes, ""),
    ]
    for label, field, top, fmt, tail in rows:
        values = [p.get(field) for p in h["series"]]
        if not any(v is not None for v in values):
            continue
        peak = s["memory_peak_bytes"]["max"] if field == "memory_bytes" else s[field]["max"]
        lines.append(f"{label:<7} {sparkline(values, spark_w, top)}  mean {fmt(s[field]['avg'])}, "
                     f"peak {fmt(peak)} {tail}".rstrip())
    if len(lines) == 2:
        lines.append("no samples in this period")
    counts = _event_counts(h["events"])
    lines += ["", "events: " + (", ".join(f"{label} ×{n}" for _, label, n in counts) if counts else "none")]
    for e in h["events"][-10:]:
        lines.append(f"  {_when(e['ts'])}  {EVENT_STYLE.get(e['kind'], ('', e['kind']))[1]}"
                     + (f" ×{e['details']['count']}" if e["details"].get("count") else ""))
    lines += ["", f"runs: {len(doc['runs'])}"]
    for r in doc["runs"][-10:]:
        dur = f"{r['duration_s']:.1f}s" if r.get("duration_s") is not None else "-"
        lines.append(f"  {r['id']}  {r['status']:<10} {dur:>8}  {r['target']}  {_when(r['started_at'] or r['queued_at'])}")
    lines += ["", f"package events: {len(doc['package_events'])}"]
    for p in doc["package_events"][-10:]:
        lines.append(f"  {_when(p['ts'])}  {p['action']:<18} {p['outcome']:<8} {p['user']}  {p['packages']}")
    lines += ["", "advice:"] + [f"  - {a}" for a in doc["advice"]]
    return "\n".join(lines) + "\n"
