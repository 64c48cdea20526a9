"""``ml jupyter scale|reset|monitor|logs|git|version|optimize|report``."""

from __future__ import annotations

import argparse
import html
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
    a = ctx.args
    samples: list[dict[str, Any]] = []
    tty = sys.stdout.isatty() and not ctx.json

    def on_log(chunk: bytes) -> None:
        for line in chunk.decode().splitlines():
            s = json.loads(line)
            samples.append(s)
            if ctx.json:
                continue
            mem = s.get("memory_bytes")
            text = (f"{time.strftime('%H:%M:%S', time.localtime(s['t']))}  {s['name']}  "
                    f"cpu {s.get('cpu_seconds', s.get('cpu_percent', '-'))}  "
                    f"memory {mem / 2**20:.0f} MiB  processes {s.get('processes', '-')}" if mem is not None else json.dumps(s))
            print(("\r" + text + "   ") if tty else text, end="" if tty else "\n", flush=True)

    ctx.client.on_log = on_log
    count = a.count if a.count else 1_000_000
    ctx.client.call(Opcode.MONITOR_WORKSPACE, {"name": a.name, "interval": a.interval, "count": count}, timeout=None)
    if tty:
        print()
    if ctx.json:
        emit_json({"name": a.name, "samples": samples})
    return 0


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


def register(jupyter: Any, top: Any, common: argparse.ArgumentParser) -> None:
    p = jupyter.add_parser("scale", parents=[common], help="change a workspace's resources (restarts it if running)")
    p.add_argument("name")
    p.add_argument("--cpu")
    p.add_argument("--memory")
    p.add_argument("--gpu", type=int)
    p.add_argument("--disk")
    p.set_defaults(func=cmd_scale)

    p = jupyter.add_parser("reset", parents=[common], help="restart clean; --hard also discards installed packages")
    p.add_argument("name")
    p.add_argument("--hard", action="store_true", help="discard every package installed into the workspace")
    p.set_defaults(func=cmd_reset)

    p = jupyter.add_parser("monitor", parents=[common], help="live resource use (Ctrl-C to stop)")
    p.add_argument("name")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between samples")
    p.add_argument("--count", type=int, default=0, help="stop after N samples (default: until interrupted)")
    p.set_defaults(func=cmd_monitor)

    p = jupyter.add_parser("logs", parents=[common], help="the workspace's JupyterLab server log")
    p.add_argument("name")
    p.add_argument("--lines", type=int, default=100)
    p.set_defaults(func=cmd_logs)

    p = jupyter.add_parser("git", parents=[common], help="git in the workspace: init, add, commit, status, log, diff ...")
    p.add_argument("name")
    p.add_argument("verb", help="git subcommand")
    p.add_argument("git_args", nargs=argparse.REMAINDER, help="its arguments, e.g. -m 'Initial commit'")
    p.set_defaults(func=cmd_git)

    p = jupyter.add_parser("version", parents=[common], help="save, list or restore versions of a notebook")
    p.add_argument("name")
    p.add_argument("notebook", help="path of the notebook inside the workspace")
    p.add_argument("--list", action="store_true", help="list the saved versions")
    p.add_argument("--restore", type=int, metavar="N", help="restore version N (the current one is saved first)")
    p.add_argument("-m", "--message", help="a note stored with the version")
    p.set_defaults(func=cmd_version)

    p = jupyter.add_parser("optimize", parents=[common], help="usage vs limits, idle kernels; --apply shuts them down")
    p.add_argument("name")
    p.add_argument("--apply", action="store_true")
    p.add_argument("--idle-minutes", type=float, default=60)
    p.set_defaults(func=cmd_optimize)

    p = jupyter.add_parser("report", parents=[common], help="a performance report (text, json or html)")
    p.add_argument("name")
    p.add_argument("--format", choices=["text", "json", "html"], default="text")
    p.set_defaults(func=cmd_report)
