"""``ml jupyter scale|reset|monitor|logs|git|version|optimize|report|stats``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from ..protocol.opcodes import Opcode
from .output import emit_json, print_table

__all__ = ["register"]


def _done(ctx: Any, reply: Any) -> int:
    if ctx.json:
        emit_json(reply.data if reply.data is not None else {"ok": True, "message": reply.message})
    else:
        print(reply.message)
    return 0


def cmd_scale(ctx: Any) -> int:
    a = ctx.args
    reply = ctx.client.call(Opcode.SCALE_WORKSPACE, {"name": a.name, "cpu": a.cpu, "memory": a.memory, "gpu": a.gpu,
                                                     "disk": a.disk}, timeout=None)
    return _done(ctx, reply)


def cmd_reset(ctx: Any) -> int:
    a = ctx.args
    return _done(ctx, ctx.client.call(Opcode.RESET_WORKSPACE, {"name": a.name, "hard": a.hard}, timeout=None))


def cmd_monitor(ctx: Any) -> int:
    """Samples of a running workspace: CPU as a share of its CPU limit, memory against its memory limit.

    A runtime sends either ``cpu_percent`` (100 = one core busy, over its own short window) or only
    cumulative ``cpu_seconds``; then the rate comes from two samples, so the first sample is kept
    as the baseline and one more is asked for, and ``--count N`` still shows N lines.
    """
    a = ctx.args
    resources = ctx.client.call(Opcode.WORKSPACE_LIMITS, {"name": a.name}).data.get("resources") or {}
    meter = _Meter(resources)
    shown: list[dict[str, Any]] = []
    tty = sys.stdout.isatty() and not ctx.json
    wanted = a.count if a.count else None

    def on_log(chunk: bytes) -> None:
        for line in chunk.decode().splitlines():
            sample = meter.add(json.loads(line))
            if sample is None or (wanted is not None and len(shown) >= wanted):
                continue
            shown.append(sample)
            if not ctx.json:
                text = f"{time.strftime('%H:%M:%S', time.localtime(sample['t']))}  {sample['name']}  {meter.text(sample)}"
                print(("\r" + text + "   ") if tty else text, end="" if tty else "\n", flush=True)

    ctx.client.on_log = on_log
    count = a.count + 1 if a.count else 1_000_000
    ctx.client.call(Opcode.MONITOR_WORKSPACE, {"name": a.name, "interval": a.interval, "count": count}, timeout=None)
    if tty:
        print()
    if ctx.json:
        emit_json({"name": a.name, "samples": shown})
    return 0


class _Meter:
    """Turns the runtime's raw samples into shares of the workspace's limits."""

    def __init__(self, resources: dict[str, Any]) -> None:
        self.cpu_limit = float(resources["cpu"]) if resources.get("cpu") else None
        self.memory_limit_mb = resources.get("memory_mb")
        self._last: dict[str, Any] | None = None

    def add(self, sample: dict[str, Any]) -> dict[str, Any] | None:
        """The sample with ``cpu_percent_of_limit`` added; ``None`` while no rate can be known yet."""
        last, self._last = self._last, sample
        cores = sample.get("cpu_percent")
        if cores is None and "cpu_seconds" in sample:
            if last is None or "cpu_seconds" not in last or sample["t"] <= last["t"]:
                return None
            cores = max(0.0, sample["cpu_seconds"] - last["cpu_seconds"]) / (sample["t"] - last["t"]) * 100
            sample = {**sample, "cpu_percent": round(cores, 2)}
        if cores is not None and self.cpu_limit:
            sample = {**sample, "cpu_percent_of_limit": round(cores / self.cpu_limit, 1)}
        return sample

    def text(self, s: dict[str, Any]) -> str:
        parts = []
        if s.get("cpu_percent_of_limit") is not None and self.cpu_limit:
            cores = f"{self.cpu_limit:g} core" + ("" if self.cpu_limit == 1 else "s")
            parts.append(f"cpu {s['cpu_percent_of_limit']:5.1f}% of {cores}")
        elif s.get("cpu_percent") is not None:
            parts.append(f"cpu {s['cpu_percent']:5.1f}% of one core (no cpu limit)")
        mem = s["memory_bytes"] / 2**20 if s.get("memory_bytes") is not None else s.get("memory_mb")
        limit = s.get("memory_limit_mb") or self.memory_limit_mb
        if mem is not None:
            parts.append(f"memory {mem:.0f} MiB" + (f" of {limit:.0f} MiB ({mem / limit * 100:.0f}%)" if limit else ""))
        processes = s.get("processes", s.get("pids"))
        if processes is not None:
            parts.append(f"processes {processes}")
        return "  ".join(parts) or json.dumps(s, sort_keys=True)


def cmd_logs(ctx: Any) -> int:
    reply = ctx.client.call(Opcode.WORKSPACE_LOGS, {"name": ctx.args.name, "lines": ctx.args.lines})
    if ctx.json:
        emit_json(reply.data)
    else:
        print("\n".join(reply.data["lines"]))
    return 0


def cmd_git(ctx: Any) -> int:
    a = ctx.args
    reply = ctx.client.call(Opcode.WORKSPACE_GIT, {"name": a.name, "args": [a.verb, *a.git_args]}, timeout=None)
    if ctx.json:
        emit_json(reply.data)
    else:
        sys.stdout.write(reply.data["output"])
    return 0


def cmd_version(ctx: Any) -> int:
    a = ctx.args
    action = "restore" if a.restore is not None else ("list" if a.list else "save")
    reply = ctx.client.call(Opcode.NOTEBOOK_VERSION, {"name": a.name, "notebook": a.notebook, "action": action,
                                                      "version": a.restore, "note": a.message or ""})
    doc = reply.data
    if ctx.json:
        emit_json(doc)
    elif action == "save":
        v = doc["version"]
        print(f"{doc['notebook']}: {'saved as' if doc['saved'] else 'unchanged since'} version {v['version']}")
    elif action == "restore":
        print(f"{doc['notebook']}: restored version {doc['restored']} (the previous content is kept as a version)")
    else:
        print_table(["version", "saved", "size", "sha256", "note"],
                    [[v["version"], time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v["saved_at"])), v["size"],
                      v["sha256"][:12], v.get("note")] for v in doc["versions"]],
                    empty=f"no versions of {doc['notebook']} yet: ml jupyter version {a.name} {a.notebook}")
    return 0


def cmd_optimize(ctx: Any) -> int:
    a = ctx.args
    reply = ctx.client.call(Opcode.OPTIMIZE_WORKSPACE, {"name": a.name, "apply": a.apply, "idle_minutes": a.idle_minutes})
    if ctx.json:
        emit_json(reply.data)
        return 0
    for line in reply.data["advice"]:
        print(f"- {line}")
    if reply.data["shut_down"]:
        print(f"shut down {len(reply.data['shut_down'])} idle kernel(s)")
    return 0


def cmd_report(ctx: Any) -> int:
    """The agent's report of a workspace: html (one self-contained page), text (sparklines) or json."""
    import shutil

    a = ctx.args
    fmt = "json" if ctx.json else a.format
    width = shutil.get_terminal_size((100, 24)).columns
    reply = ctx.client.call(Opcode.WORKSPACE_REPORT, {"name": a.name, "format": fmt, "since": a.since,
                                                      "width": max(40, min(400, width))}, timeout=120)
    doc = reply.data
    if fmt == "json":
        text = json.dumps(doc["report"], indent=2, sort_keys=True) + "\n"
    else:
        text = doc["content"]
    if a.output:
        from pathlib import Path

        Path(a.output).write_text(text, encoding="utf-8")
        print(f"wrote {a.output} ({len(text.encode())} bytes)", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


_SERIES = (("cpu", "cpu_cores", "cores"), ("memory", "memory_bytes", "bytes"), ("gpu", "gpu_utilization", "ratio"),
           ("disk", "disk_bytes", "bytes"), ("kernels", "kernels", "count"))


def cmd_stats(ctx: Any) -> int:
    """Resource use now; with ``--since``, its history (series and events) from the agent's store."""
    a = ctx.args
    if not a.since:
        from .workspaces import _simple

        return _simple(Opcode.WORKSPACE_STATS)(ctx)
    doc = ctx.client.call(Opcode.WORKSPACE_HISTORY, {"name": a.name, "since": a.since, "points": a.points}).data
    if ctx.json:
        emit_json(doc)
        return 0
    from ..units import format_bytes, sparkline

    series, summary = doc["series"], doc["summary"]
    step = f"{doc['step_s']} s buckets" if doc["step_s"] else f"every {doc['interval_s'] or '?'} s"
    print(f"{doc['name']}: the last {a.since}, {len(series)} points ({step})")
    limits = {"cpu": "cpu_limit_cores", "memory": "memory_limit_bytes"}
    for label, field, unit in _SERIES:
        values = [p.get(field) for p in series]
        if not any(v is not None for v in values):
            continue
        s = summary[field]
        limit = summary.get(limits.get(label, ""), {}).get("max")
        top = limit if limit else (1.0 if unit == "ratio" else None)

        def fmt(v: Any, unit: str = unit) -> str:
            if v is None:
                return "-"
            return format_bytes(v) if unit == "bytes" else (f"{v:.0%}" if unit == "ratio" else f"{v:.2f}")

        tail = f" of {fmt(limit)}" if limit else ""
        print(f"  {label:<8} {sparkline(values, 40, top)}  mean {fmt(s['avg'])}, peak {fmt(s['max'])}{tail}")
    if not series:
        print("  no samples in this period (the agent samples running workspaces every usage.interval)")
    counts: dict[str, int] = {}
    for e in doc["events"]:
        counts[e["kind"]] = counts.get(e["kind"], 0) + int(e["details"].get("count") or 1)
    print("  events: " + (", ".join(f"{k} ×{n}" for k, n in sorted(counts.items())) if counts else "none"))
    for e in doc["events"][-10:]:
        print(f"    {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(e['ts']))}  {e['kind']}")
    return 0


def _name(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="workspace name")


def _scale_args(p: argparse.ArgumentParser) -> None:
    _name(p)
    p.add_argument("--cpu", help="CPU cores, e.g. 4 or 0.5")
    p.add_argument("--memory", help="memory, e.g. 16g or 512m")
    p.add_argument("--gpu", type=int, help="number of GPUs")
    p.add_argument("--disk", help="disk, e.g. 20g")


def _reset_args(p: argparse.ArgumentParser) -> None:
    _name(p)
    p.add_argument("--hard", action="store_true", help="discard every package installed into the workspace")


def _monitor_args(p: argparse.ArgumentParser) -> None:
    _name(p)
    p.add_argument("--interval", type=float, default=2.0, help="seconds between samples (default 2)")
    p.add_argument("--count", type=int, default=0, help="stop after N samples (default: until interrupted)")


def _logs_args(p: argparse.ArgumentParser) -> None:
    _name(p)
    p.add_argument("--lines", type=int, default=100, help="the last N lines of the log (default 100)")


def _git_args(p: argparse.ArgumentParser) -> None:
    _name(p)
    p.add_argument("verb", help="git subcommand: init, add, commit, status, log, diff, branch, checkout, restore, show")
    p.add_argument("git_args", nargs=argparse.REMAINDER, help="its arguments, e.g. -m 'Initial commit'")


def _version_args(p: argparse.ArgumentParser) -> None:
    _name(p)
    p.add_argument("notebook", help="path of the notebook inside the workspace")
    p.add_argument("--list", action="store_true", help="list the saved versions")
    p.add_argument("--restore", type=int, metavar="N", help="restore version N (the current one is saved first)")
    p.add_argument("-m", "--message", help="a note stored with the version")


def _optimize_args(p: argparse.ArgumentParser) -> None:
    _name(p)
    p.add_argument("--apply", action="store_true", help="shut down the kernels idle for longer than --idle-minutes")
    p.add_argument("--idle-minutes", type=float, default=60,
                   help="a kernel idle for this long counts as idle (default 60)")


def _report_args(p: argparse.ArgumentParser) -> None:
    _name(p)
    p.add_argument("--format", choices=["text", "json", "html"], default="text",
                   help="text for a terminal with sparklines (default), json, or one self-contained html page "
                        "with charts")
    p.add_argument("--since", default="7d", help="the period it covers, e.g. 24h, 7d, 30d (default 7d)")
    p.add_argument("-o", "--output", metavar="FILE", help="write the report to FILE instead of standard output")


def _stats_args(p: argparse.ArgumentParser) -> None:
    _name(p)
    p.add_argument("--since", help="the usage history of this period (e.g. 24h, 7d) instead of the use now")
    p.add_argument("--points", type=int, default=500, help="at most this many points with --since (default 500)")


def register(jupyter: Any, top: Any) -> None:
    jupyter.command("scale", cmd_scale, _scale_args, help="change a workspace's resources (restarts it if running)")
    jupyter.command("reset", cmd_reset, _reset_args,
                    help="restart clean; --hard also discards installed packages")
    jupyter.command("monitor", cmd_monitor, _monitor_args, help="live resource use (Ctrl-C to stop)")
    jupyter.command("logs", cmd_logs, _logs_args, help="the workspace's JupyterLab server log")
    jupyter.command("git", cmd_git, _git_args, help="git in the workspace: init, add, commit, status, log, diff ...")
    jupyter.command("version", cmd_version, _version_args, help="save, list or restore versions of a notebook")
    jupyter.command("optimize", cmd_optimize, _optimize_args,
                    help="usage vs limits, idle kernels; --apply shuts them down")
    jupyter.command("report", cmd_report, _report_args,
                    help="a usage report: charts against the limits, events, runs, packages, advice")
    jupyter.command("stats", cmd_stats, _stats_args, help="resource usage now, or its history (--since 24h)")
