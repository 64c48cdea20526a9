"""``ml jupyter scale|reset|monitor|logs|git|version|optimize|report``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from ..protocol.opcodes import Opcode
from .output import emit_json, print_kv, print_table

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
    """A performance report assembled from info, stats, limits and the audit trail."""
    a = ctx.args
    info = ctx.client.call(Opcode.WORKSPACE_INFO, {"name": a.name}).data
    stats: dict[str, Any] = {}
    if info["status"] == "running":
        stats = ctx.client.call(Opcode.WORKSPACE_STATS, {"name": a.name}).data
    audit = ctx.client.call(Opcode.AUDIT_LOG, {"name": a.name, "limit": 50}).data["events"]
    report = {"generated_at": time.time(), "workspace": info, "stats": stats, "recent_events": audit}
    if a.format == "json" or ctx.json:
        emit_json(report)
    elif a.format == "html":
        sys.stdout.write(_html(report))
    else:
        print_kv([("workspace", info["name"]), ("status", info["status"]), ("cpu", info["resources"].get("cpu")),
                  ("memory", info["resources"].get("memory")), ("limits enforced", info["limits_enforced"]),
                  ("memory in use", f"{stats['memory_bytes'] / 2**20:.0f} MiB" if stats.get("memory_bytes") else None),
                  ("cpu time", stats.get("cpu_seconds")), ("events", len(audit))])
    return 0


def _html(r: dict[str, Any]) -> str:
    import html

    ws, st = r["workspace"], r["stats"]
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
        for k, v in [("status", ws["status"]), ("runtime", ws["runtime"]), ("cpu", ws["resources"].get("cpu")),
                     ("memory", ws["resources"].get("memory")), ("gpu", ws["resources"].get("gpu")),
                     ("limits enforced", ws["limits_enforced"]), *[(f"now: {k}", v) for k, v in st.items()]]
    )
    events = "".join(
        f"<tr><td>{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(e['ts']))}</td><td>{html.escape(e['user'])}</td>"
        f"<td>{html.escape(e['action'])}</td><td>{html.escape(e['outcome'])}</td></tr>"
        for e in r["recent_events"]
    )
    name = html.escape(ws["name"])
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Workspace report: {name}</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
            "padding:4px 8px}</style></head><body>"
            f"<h1>Workspace report: {name}</h1><h2>Resources</h2><table>{rows}</table>"
            f"<h2>Recent activity</h2><table><tr><th>time (UTC)</th><th>user</th><th>action</th><th>outcome</th></tr>{events}</table>"
            "</body></html>\n")


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
                   help="text for a terminal (default), json, or a self-contained html page")


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
    jupyter.command("report", cmd_report, _report_args, help="a performance report (text, json or html)")
