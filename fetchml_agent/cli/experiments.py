"""``ml jupyter link|queue|sync|metadata|export``, ``ml cancel RUN_ID``, and the runs part of
``ml status`` (``ml status [RUN_ID] [--workspace WS] [--experiment EXP] [--watch]``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from ..errors import InvalidArgument, InvalidState, NotSupported
from ..protocol.opcodes import Opcode
from .output import emit_json, human_age, print_kv, print_table, status_text, stderr

__all__ = ["parse_parameter", "register"]

_FINISHED = ("succeeded", "failed", "cancelled")


# -- formatting ---------------------------------------------------------------------------------


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{seconds:.1f}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _memory(n: int | None) -> str:
    if not n:
        return "-"
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _environment(env: dict[str, Any] | None, status: str) -> str | None:
    """The run's environment step (issue #18), apart from the notebook: what the lock holds and
    whether it was installed, found in the cache, or failed."""
    if not env:
        return None
    what = f"{env.get('packages')} package{'s' if env.get('packages') != 1 else ''} (lock {str(env.get('lock'))[:12]})"
    if env.get("status") == "pending":
        return f"{what}, " + ("being installed" if status == "running" else "installed when the run starts")
    if env.get("status") == "failed":
        return f"{what}, failed after {_duration(env.get('duration_s'))}: {env.get('error')}"
    how = "cached, nothing installed" if env.get("cached") else "installed"
    return f"{what}, {how} in {_duration(env.get('duration_s'))}"


def _detail(run: dict[str, Any]) -> str:
    status = run["status"]
    if status == "queued":
        return f"queued {human_age(run.get('queued_at'))}"
    if status == "running":
        parts = [_duration(run.get("elapsed_s"))]
        if run.get("current_cell"):
            total = f"/{run['cells_total']}" if run.get("cells_total") else ""
            parts.append(f"cell {run['current_cell']}{total}")
        if (run.get("retries") or 0) > 0:
            parts.append(f"attempt {run.get('attempt') or 1}/{run['retries'] + 1}")
        return ", ".join(parts)
    if status == "succeeded":
        return f"{_duration(run.get('duration_s'))}, peak {_memory(run.get('peak_memory_bytes'))}"
    return run.get("message") or status


def _runs_table(runs: list[dict[str, Any]], empty: str) -> None:
    print_table(
        ["run", "experiment", "workspace", "target", "status", "detail"],
        [[r["id"], r["experiment"], r["workspace"], r["target"], status_text(r["status"]), _detail(r)] for r in runs],
        empty=empty,
    )


def _print_status_runs(doc: dict[str, Any]) -> None:
    """The runs section of ``ml status``: a status line, then the queue, the running, the latest."""
    section = doc.get("runs")
    if section is None:
        return
    counts = section.get("counts") or {}
    order = ["queued", "running", "succeeded", "failed", "cancelled"]
    print("runs: " + (", ".join(f"{counts[s]} {s}" for s in order if counts.get(s)) or "none yet"))
    shown = section.get("running", []) + section.get("queued", [])
    shown += [r for r in section.get("recent", []) if r["id"] not in {s["id"] for s in shown}]
    if shown:
        print()
        _runs_table(shown, "")


def _print_run(run: dict[str, Any]) -> None:
    error = run.get("error") or {}
    print_kv(
        [
            ("run", run["id"]),
            ("status", status_text(run["status"]) + (f" ({run['message']})" if run.get("message") else "")),
            ("experiment", run["experiment"]),
            ("workspace", run["workspace"]),
            ("user", run.get("user")),
            (run["kind"], run["target"]),
            ("parameters", json.dumps(run.get("parameters") or {}, sort_keys=True)),
            ("environment", _environment(run.get("environment"), run["status"])),
            ("queued", human_age(run.get("queued_at"))),
            ("started", human_age(run.get("started_at"))),
            ("elapsed" if run["status"] == "running" else "duration",
             _duration(run.get("elapsed_s") if run["status"] == "running" else run.get("duration_s"))),
            ("cell", f"{run['current_cell']}/{run.get('cells_total') or '?'}" if run.get("current_cell") else None),
            ("attempt", f"{run.get('attempt') or 0} of {(run.get('retries') or 0) + 1}"),
            ("timeout", f"{run['timeout_s']:g} s" if run.get("timeout_s") else "none"),
            ("gpus", ",".join(map(str, run.get("gpu_indexes") or [])) or run.get("gpus")),
            ("exit status", run.get("exit_code")),
            ("peak memory", _memory(run.get("peak_memory_bytes"))),
            ("output notebook", run.get("output_notebook")),
            ("outputs", ", ".join(run.get("outputs") or []) or None),
        ]
    )
    for warning in run.get("warnings") or []:
        print(f"warning: {warning}")
    metrics = run.get("metrics") or []
    if metrics:
        latest: dict[str, dict[str, Any]] = {}
        for m in metrics:
            latest[m["name"]] = m
        print()
        print_table(["metric", "last value", "step", "records"],
                    [[name, m.get("value"), m.get("step"), sum(1 for x in metrics if x["name"] == name)] for name, m in latest.items()])
    if error.get("traceback"):
        print(f"\nfailing cell {error.get('cell')}:\n{error['traceback']}")


# -- commands -----------------------------------------------------------------------------------


def parse_parameter(text: str) -> tuple[str, Any]:
    """``key=value`` with papermill's typing of ``-p`` values: True/False/None, int, float, else text."""
    key, sep, raw = text.partition("=")
    if not sep or not key.isidentifier():
        raise InvalidArgument(f"-p {text!r}: expected key=value with a Python identifier as key, e.g. -p lr=0.01")
    value: Any = raw
    if raw in ("True", "False", "None"):
        value = {"True": True, "False": False, "None": None}[raw]
    else:
        for convert in (int, float):
            try:
                value = convert(raw)
                break
            except ValueError:
                continue
    return key, value


def cmd_link(ctx: Any) -> int:
    a = ctx.args
    doc = ctx.client.call(Opcode.LINK_EXPERIMENT, {"name": a.name, "experiment_id": a.experiment_id}).data
    if ctx.json:
        emit_json(doc)
    elif doc["linked"]:
        made = "created experiment" if doc["created"] else "experiment"
        print(f"{made} {doc['experiment']} linked to workspace {doc['workspace']} (linked: {', '.join(doc['experiments'])})")
    else:
        print(f"experiment {doc['experiment']} was already linked to workspace {doc['workspace']}")
    return 0


def _wait(ctx: Any, run_id: str) -> dict[str, Any]:
    last = None
    while True:
        run = ctx.client.call(Opcode.RUN_INFO, {"run_id": run_id}).data
        key = (run["status"], run.get("attempt"), run.get("current_cell"))
        if key != last and not ctx.json:
            stderr(f"  … {run_id}: {run['status']} {_detail(run)}")
            last = key
        if run["status"] in _FINISHED:
            return dict(run)
        time.sleep(0.1 if run["status"] == "queued" else 0.25)


def cmd_queue(ctx: Any) -> int:
    a = ctx.args
    body: dict[str, Any] = {
        "workspace": a.workspace,
        "experiment": a.experiment,
        "notebook": a.notebook,
        "script": a.script,
        "parameters": dict(parse_parameter(p) for p in a.parameters or []),
    }
    if a.config:
        local = os.path.expanduser(a.config)
        if os.path.isfile(local):
            from .workspaces import _load_yaml_file

            body["config"] = _load_yaml_file(local, "experiment config")
            body["config_name"] = os.path.basename(local)
        else:
            body["config_path"] = a.config
    run = ctx.client.call(Opcode.QUEUE_RUN, body, timeout=120).data
    if not ctx.json:
        print(f"queued {run['id']} ({run['kind']} {run['target']}) in experiment {run['experiment']}")
        for warning in [] if a.wait else run.get("warnings") or []:
            stderr(f"warning: {warning}")
    if a.wait:
        run = _wait(ctx, run["id"])
        if not ctx.json:
            _print_run(run)
    if ctx.json:
        emit_json(run)
    return 0 if not a.wait or run["status"] == "succeeded" else InvalidState.exit_code


def cmd_sync(ctx: Any) -> int:
    a = ctx.args
    doc = ctx.client.call(Opcode.SYNC_WORKSPACE, {"name": a.name, "direction": a.direction, "experiment": a.experiment},
                          timeout=600).data
    if ctx.json:
        emit_json(doc)
    else:
        print(f"synced {doc['workspace']} {doc['direction']} experiment {doc['experiment']}: {len(doc['copied'])} copied, "
              f"{doc['unchanged']} unchanged, {len(doc['conflicts'])} conflicts")
        for c in doc["copied"]:
            print(f"  copied   {c['path']} -> {c['to']}")
        for k in doc.get("kept", []):
            print(f"  kept     {k['path']} (newer in the {k['newer']})")
        for path in doc.get("unresolved", []):
            print(f"  unresolved conflict: {path} (delete its .conflict-experiment copy once merged)")
        for c in doc["conflicts"]:
            print(f"  CONFLICT {c['path']}: both sides changed; the experiment's version is in {c['experiment_copy']}")
    return InvalidState.exit_code if doc["conflicts"] or doc.get("unresolved") else 0


def _print_metadata(doc: dict[str, Any]) -> None:
    w = doc["workspace"]
    print_kv([
        ("workspace", f"{w['name']} ({w['id']})"),
        ("owner", w["owner"]),
        ("created", human_age(w["created_at"])),
        ("modified", human_age(w["modified_at"])),
        ("status", status_text(w["status"])),
        ("current experiment", w.get("current_experiment")),
    ])
    print("\nlinked experiments:")
    print_table(["experiment", "linked", "by", "current"],
                [[e["id"], human_age(e["linked_at"]), e["linked_by"], "yes" if e["current"] else ""] for e in doc["experiments"]],
                empty="  none")
    print("\nresource usage:")
    print_table(["run", "experiment", "status", "duration", "peak memory", "gpus"],
                [[r["run_id"], r["experiment"], status_text(r["status"]), _duration(r["duration_s"]), _memory(r["peak_memory_bytes"]),
                  ",".join(map(str, r["gpu_indexes"])) or r["gpus"]] for r in doc["resource_usage"]], empty="  no runs yet")
    print("\npackage installations:")
    print_table(["when", "user", "action", "outcome", "details"],
                [[human_age(p["ts"]), p["user"], p["action"], p["outcome"], json.dumps(p["details"], sort_keys=True)]
                 for p in doc["packages"]], empty="  none recorded")
    print("\nnotebook executions:")
    print_table(["run", "target", "parameters", "status", "queued", "message"],
                [[r["run_id"], r["target"], json.dumps(r["parameters"], sort_keys=True), status_text(r["status"]),
                  human_age(r["queued_at"]), r["message"]] for r in doc["notebook_executions"]], empty="  none")
    print("\nsync history:")
    print_table(["when", "experiment", "direction", "user", "copied", "conflicts"],
                [[human_age(s["ts"]), s["experiment_id"], s["direction"], s["user"], len(s["copied"]), len(s["conflicts"])]
                 for s in doc["sync_history"]], empty="  none")


def cmd_metadata(ctx: Any) -> int:
    reply = ctx.client.call(Opcode.WORKSPACE_METADATA, {"name": ctx.args.name})
    emit_json(reply.data) if ctx.json else _print_metadata(reply.data)
    return 0


def cmd_export(ctx: Any) -> int:
    a = ctx.args
    doc = ctx.client.call(Opcode.EXPORT_WORKSPACE, {"name": a.name, "format": a.format}, timeout=300).data
    if a.format == "json":
        text = json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n"
        if a.output and a.output != "-":
            _write(a.output, text)
            stderr(f"wrote {a.output}")
        else:
            sys.stdout.write(text)
        return 0
    from .export import csv_tables

    out = a.output or f"{a.name}-export"
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as exc:
        raise InvalidArgument(f"--output {out}: cannot create the directory ({exc.strerror})") from None
    written = []
    for table, text in csv_tables(doc).items():
        written.append(os.path.join(out, f"{table}.csv"))
        _write(written[-1], text)
    if ctx.json:
        emit_json({"ok": True, "files": written})
    else:
        print("\n".join(written))
    return 0


def _write(path: str, text: str) -> None:
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise InvalidArgument(f"cannot write {path} ({exc.strerror})", "choose another --output") from None


def cmd_cancel(ctx: Any) -> int:
    run = ctx.client.call(Opcode.CANCEL_RUN, {"run_id": ctx.args.run_id}, timeout=120).data
    emit_json(run) if ctx.json else print(f"{run['id']} is {run['status']}" + (f" ({run['message']})" if run.get("message") else ""))
    return 0


def _status_once(ctx: Any) -> int:
    a = ctx.args
    if a.run:
        run = ctx.client.call(Opcode.RUN_INFO, {"run_id": a.run}).data
        emit_json(run) if ctx.json else _print_run(run)
        return 0
    if a.workspace or a.experiment or a.state:
        doc = ctx.client.call(Opcode.RUN_STATUS, {"workspace": a.workspace, "experiment": a.experiment,
                                                  "status": a.state, "limit": a.limit}).data
        if ctx.json:
            emit_json(doc)
        else:
            _runs_table(doc["runs"], "no runs")
            if doc["total"] > len(doc["runs"]):
                print(f"({len(doc['runs'])} of {doc['total']} shown; --limit N for more)")
        return 0
    from .workspaces import cmd_agent_status

    return cmd_agent_status(ctx)


def cmd_status(ctx: Any) -> int:
    a = ctx.args
    if not a.watch:
        return _status_once(ctx)
    try:
        return _watch_changes(ctx) if ctx.json else _watch(ctx)
    except KeyboardInterrupt:
        return 0


_MIN_REDRAW_S = 0.1


def _subscription(a: Any) -> dict[str, Any]:
    topics = ["runs"] if a.run or a.experiment or a.state else ["workspaces", "runs"]
    return {"topics": topics, "workspace": a.workspace}


def _watch(ctx: Any) -> int:
    """Show the status again as soon as something changes (the agent's subscribe, 0x2F), and every
    ``--interval`` seconds for the clocks; an agent without it is asked every interval."""
    a = ctx.args
    shown = 0
    changes: list[bytes] = []
    ctx.client.on_log = changes.append
    subscribe = True
    last = 0.0
    while True:
        time.sleep(max(0.0, last + _MIN_REDRAW_S - time.monotonic()))  # a burst of changes: one redraw
        last = time.monotonic()
        seq = ctx.client.call(Opcode.AGENT_STATUS).data.get("live_seq")  # what the view below includes
        if sys.stdout.isatty():
            sys.stdout.write("\x1b[H\x1b[2J")
        elif shown:
            print()
        print(time.strftime("%H:%M:%S") + f"  (live; at least every {a.interval:g} s; Ctrl-C stops)")
        _status_once(ctx)
        sys.stdout.flush()
        shown += 1
        if a.count and shown >= a.count:
            return 0
        if subscribe and seq is not None:
            try:  # returns at the first change after what was shown, or after the interval
                ctx.client.call(Opcode.SUBSCRIBE, {**_subscription(a), "after": seq, "max_events": 1,
                                                   "timeout": a.interval}, timeout=a.interval + 30)
                continue
            except NotSupported:
                subscribe = False  # an agent from before live updates
        time.sleep(a.interval)


def _watch_changes(ctx: Any) -> int:
    """``--watch --json``: each change as one JSON line, as the agent sends it (``--count N``: N)."""
    a = ctx.args

    def show(chunk: bytes) -> None:
        sys.stdout.write(chunk.decode("utf-8", "replace"))
        sys.stdout.flush()

    ctx.client.on_log = show
    ctx.client.call(Opcode.SUBSCRIBE, {**_subscription(a), "max_events": a.count or 0}, timeout=None)
    return 0


def _link_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="workspace name")
    p.add_argument("experiment_id", metavar="EXPERIMENT_ID", help="experiment id, e.g. exp-123")


def _queue_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workspace", required=True, help="workspace to run from")
    p.add_argument("--experiment", help="experiment id (default: the config's, else the workspace's linked one)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--notebook", help="notebook to run, relative to the workspace")
    what.add_argument("--script", help="Python script to run, relative to the workspace")
    p.add_argument("--config", help="experiment-config.yaml: a local file, or a path in the workspace")
    p.add_argument("-p", "--parameter", dest="parameters", action="append", metavar="KEY=VALUE",
                   help="a parameter injected after the notebook's `parameters` cell (repeatable)")
    p.add_argument("--wait", action="store_true", help="wait for the run to finish (exit 4 unless it succeeded)")


def _sync_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="workspace name")
    way = p.add_mutually_exclusive_group(required=True)
    way.add_argument("--to-experiment", dest="direction", action="store_const", const="to-experiment",
                     help="notebooks, scripts and config files into the experiment")
    way.add_argument("--from-experiment", dest="direction", action="store_const", const="from-experiment",
                     help="results, output notebooks and metrics into experiments/<id>/")
    way.add_argument("--full", dest="direction", action="store_const", const="full", help="both ways")
    p.add_argument("--experiment", help="which linked experiment (default: the workspace's current one)")


def _name(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="workspace name")


def _export_args(p: argparse.ArgumentParser) -> None:
    _name(p)
    p.add_argument("--format", choices=["json", "csv"], default="json",
                   help="json: one document (stdout or --output FILE); csv: one file per table in --output DIR")
    p.add_argument("--output", help="file (json) or directory (csv; default ./NAME-export)")


def _cancel_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_id", metavar="RUN_ID", help="run id (run-...)")


def _status_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", nargs="?", metavar="RUN_ID", help="show one run in detail")
    p.add_argument("--workspace", help="list the runs of a workspace")
    p.add_argument("--experiment", help="list the runs of an experiment")
    p.add_argument("--state", choices=["queued", "running", "succeeded", "failed", "cancelled"],
                   help="list the runs in this state")
    p.add_argument("--limit", type=int, default=50, help="at most this many runs in a list (default 50)")
    p.add_argument("--watch", action="store_true",
                   help="show it again as soon as something changes, until Ctrl-C (with --json: each change as a "
                        "JSON line)")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes without a change (default 2)")
    p.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)  # tests: stop --watch after N


def register(jupyter: Any, top: Any) -> None:
    from .workspaces import _STATUS_PRINTERS

    _STATUS_PRINTERS.append(_print_status_runs)
    jupyter.command("link", cmd_link, _link_args, help="link a workspace to an experiment (created if new)")
    jupyter.command("queue", cmd_queue, _queue_args, help="queue a notebook or script run in an experiment",
                    description="Snapshot the workspace's notebooks, scripts and config now and queue a headless run "
                                "(papermill for notebooks) in the workspace's own environment.")
    jupyter.command("sync", cmd_sync, _sync_args, help="sync a workspace with its experiment",
                    description="Sync files between a workspace and an experiment. A file somebody changed is never "
                                "overwritten: conflicts are written beside it (docs/experiments.md).")
    jupyter.command("metadata", cmd_metadata, _name, help="a workspace's tracked metadata")
    jupyter.command("export", cmd_export, _export_args, help="export a workspace's metadata (json or csv)")
    top.command("cancel", cmd_cancel, _cancel_args, help="cancel a queued or running run")
    top.command("status", cmd_status, _status_args, help="the agent, its runtime, your workspaces and runs")
