"""``ml jupyter create|start|stop|list|info|status|restart|delete|stats|limits|access|revoke|share|audit``,
and the agent part of ``ml status`` (:func:`cmd_agent_status`; the command is declared with the runs)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..errors import EXIT_USAGE, InvalidArgument, InvalidState
from ..protocol.opcodes import Opcode
from .output import emit_json, human_age, print_kv, print_table, status_text

__all__ = ["register"]


def _load_yaml_file(path: str, what: str) -> dict[str, Any]:
    import yaml

    p = os.path.expanduser(path)
    try:
        with open(p, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh)
    except FileNotFoundError:
        raise InvalidArgument(f"{what} {p}: no such file") from None
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidArgument(f"{what} {p}: cannot read it as YAML", str(exc)[:300]) from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"{what} {p}: the top level must be a mapping")
    return doc


def _print_workspace(doc: dict[str, Any]) -> None:
    r = doc.get("resources") or {}
    per = (doc.get("limits") or {}).get("per_resource") or {}
    print_kv(
        [
            ("name", doc["name"]),
            ("id", doc["id"]),
            ("status", status_text(doc["status"]) + (f" ({doc['message']})" if doc.get("message") else "")),
            ("url", doc.get("url")),
            ("owner", doc.get("owner")),
            ("path", doc.get("path")),
            ("runtime", doc.get("runtime")),
            ("image", doc.get("image")),
            *[(key, f"{value} — {per[key]}" if r.get(key) and key in per else value)
              for key, value in (("cpu", r.get("cpu")), ("memory", r.get("memory")),
                                 ("gpu", f"{r.get('gpu')} × {r['gpu_type']}" if r.get("gpu_type") else r.get("gpu")),
                                 ("disk", r.get("disk")))],
            ("password", "yes (the owner's browser login)" if doc.get("password_protected") else "no"),
            ("experiment", doc.get("experiment")),
            ("created", human_age(doc.get("created_at"))),
            *_capacity_rows(doc),
        ]
    )


def _clock(ts: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def _capacity_rows(doc: dict[str, Any]) -> list[tuple[str, Any]]:
    """How it started (a warm pool claim or cold), idle since, why it counts as active, the cull to come."""
    rows: list[tuple[str, Any]] = []
    start = doc.get("start") or {}
    if start.get("kind") == "claim":
        rows.append(("started", f"claimed from warm pool {start.get('pool')} in {start.get('seconds', 0) * 1000:.0f} ms"))
    elif start.get("kind") == "cold":
        rows.append(("started", f"cold start in {start.get('seconds', 0):.1f} s"))
    act = doc.get("activity")
    if not act:
        return rows
    if act.get("active_because"):
        rows.append(("idle since", "not idle: active because " + "; ".join(act["active_because"])))
    elif act.get("idle_since"):
        rows.append(("idle since", f"{_clock(act['idle_since'])} ({human_age(act['idle_since'])})"
                     + (f"; last request by {act['last_person']}" if act.get("last_person") else "")))
    if act.get("will_stop_at"):
        what = "its idle kernels shut down" if act.get("action") == "kernels" else "stopped"
        why = "culling.max_age" if act.get("will_stop_why") == "max_age" else "idle"
        rows.append(("culling", f"will be {what} at {_clock(act['will_stop_at'])} ({why}) unless it is used"))
    elif not act.get("culling"):
        rows.append(("culling", "off (no culling: in agent.yaml)"))
    return rows


def _workspace_result(ctx: Any, reply: Any) -> int:
    if ctx.json:
        emit_json(reply.data)
    elif reply.data:
        _print_workspace(reply.data)
    else:
        print(reply.message)
    return 0


def cmd_create(ctx: Any) -> int:
    a = ctx.args
    body: dict[str, Any] = {
        "name": a.name,
        "cpu": a.cpu,
        "memory": a.memory,
        "gpu": a.gpu,
        "gpu_type": a.gpu_type,
        "disk": a.disk,
        "image": a.image,
        "password": a.password,
        "experiment": a.experiment,
    }
    config: dict[str, Any] = {}
    if a.template:
        local = next((p for p in (a.template, a.template + ".yaml") if os.path.isfile(p)), None)
        if local is not None:
            config.update(_load_yaml_file(local, "template"))
        else:
            body["template"] = a.template
    if a.config:
        for key, value in _load_yaml_file(a.config, "workspace config").items():
            if isinstance(value, dict) and isinstance(config.get(key), dict):
                config[key] = {**config[key], **value}
            else:
                config[key] = value
    if config:
        body["config"] = config
    reply = ctx.client.call(Opcode.CREATE_WORKSPACE, body, timeout=None)
    if not ctx.json:
        print(reply.message, file=sys.stderr)
    return _workspace_result(ctx, reply)


def cmd_start(ctx: Any) -> int:
    a = ctx.args
    workspace = os.path.realpath(os.path.expanduser(a.workspace)) if a.workspace else ""
    reply = ctx.client.call(
        Opcode.START_JUPYTER, {"name": a.name, "workspace": workspace, "password": a.password or ""}, timeout=None
    )
    if not ctx.json:
        print(reply.message, file=sys.stderr)
    return _workspace_result(ctx, reply)


def cmd_stop(ctx: Any) -> int:
    reply = ctx.client.call(Opcode.STOP_JUPYTER, {"service_id": ctx.args.service_id}, timeout=None)
    if ctx.json:
        emit_json({"ok": True, "message": reply.message})
    else:
        print(reply.message)
    return 0


def cmd_list(ctx: Any) -> int:
    reply = ctx.client.call(Opcode.LIST_JUPYTER)
    services = reply.data["services"]
    if ctx.json:
        emit_json(reply.data)
        return 0
    print_table(
        ["name", "id", "status", "url", "owner", "created"],
        [[s["name"], s["id"], status_text(s["status"]), s.get("url"), s.get("owner"), human_age(s.get("created_at"))]
         for s in services],
        empty="no workspaces yet: ml jupyter create my-workspace",
    )
    return 0


def _simple(opcode: Opcode, *, timeout: float | None = 30) -> Any:
    def run(ctx: Any) -> int:
        reply = ctx.client.call(opcode, {"name": ctx.args.name}, timeout=timeout)
        if ctx.json:
            emit_json(reply.data if reply.data is not None else {"ok": True, "message": reply.message})
        elif opcode in (Opcode.WORKSPACE_INFO, Opcode.RESTART_WORKSPACE):
            _print_workspace(reply.data)
        elif opcode == Opcode.WORKSPACE_LIMITS:
            res, per = reply.data["resources"], reply.data["limits"].get("per_resource") or {}
            print_table(["resource", "asked", "enforced"], [[k, res.get(k) or "-", per.get(k, "")] for k in per])
        elif reply.data is not None:
            _print_doc(reply.data)
        else:
            print(reply.message)
        return 0

    return run


def _print_doc(doc: dict[str, Any]) -> None:
    flat: list[tuple[str, Any]] = []
    for key, value in doc.items():
        if isinstance(value, dict):
            for k, v in value.items():
                flat.append((f"{key}.{k}", v))
        else:
            flat.append((key, status_text(value) if key == "status" else value))
    print_kv(flat)


def cmd_status_ws(ctx: Any) -> int:
    reply = ctx.client.call(Opcode.WORKSPACE_STATUS, {"name": ctx.args.name})
    if ctx.json:
        emit_json(reply.data)
    else:
        _print_doc(reply.data)
    return 0 if reply.data["status"] == "running" else InvalidState.exit_code


def cmd_delete(ctx: Any) -> int:
    a = ctx.args
    if not a.yes and sys.stdin.isatty() and not ctx.json:
        answer = input(f"Delete workspace {a.name} and the files the agent created for it? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("not deleted (answer y, or pass --yes)")
            return EXIT_USAGE
    reply = ctx.client.call(Opcode.DELETE_WORKSPACE, {"name": a.name}, timeout=None)
    if ctx.json:
        emit_json({"ok": True, "message": reply.message})
    else:
        print(reply.message)
    return 0


def _grant(ctx: Any, opcode: Opcode, kind: str, principal: str, role: str) -> int:
    """Grant ``role`` and say what changed: a new grant, a role changed from what it was, or nothing."""
    doc = ctx.client.call(opcode, {"name": ctx.args.name, kind: principal, "role": role}).data
    before = doc.get("previous_role")  # the agent answers what the grant replaced (None: new)
    if ctx.json:
        emit_json(doc)
    elif before is None:
        print(f"{kind} {principal} now has the {doc['role']} role on workspace {doc['workspace']} (new grant)")
    elif before != doc["role"]:
        print(f"{kind} {principal}: {before} -> {doc['role']} on workspace {doc['workspace']}")
    else:
        print(f"{kind} {principal} already had the {doc['role']} role on workspace {doc['workspace']} (unchanged)")
    return 0


def cmd_access(ctx: Any) -> int:
    a = ctx.args
    if a.user and a.team:
        raise InvalidArgument("name one who gets access: --user=NAME or --team=NAME, not both")
    if not a.user and not a.team:
        raise InvalidArgument("name who gets access: --user=NAME or --team=NAME")
    kind = "user" if a.user else "team"
    return _grant(ctx, Opcode.GRANT_ACCESS, kind, a.user or a.team, a.role)


def cmd_share(ctx: Any) -> int:
    return _grant(ctx, Opcode.SHARE_WORKSPACE, "team", ctx.args.team, ctx.args.role)


def cmd_revoke(ctx: Any) -> int:
    a = ctx.args
    reply = ctx.client.call(Opcode.REVOKE_ACCESS, {"name": a.name, "principal": a.principal})
    emit_json({"ok": True, "message": reply.message}) if ctx.json else print(reply.message)
    return 0


def cmd_agent_status(ctx: Any) -> int:
    reply = ctx.client.call(Opcode.AGENT_STATUS)
    doc = reply.data
    if ctx.json:
        emit_json(doc)
        return 0
    ag, rt = doc["agent"], doc["runtime"]
    print(f"agent {ctx.server}: version {ag['version']}, up {int(ag['uptime_s'])} s, you are {ag['user']} ({ag['role']})")
    print("runtime " + ", ".join(f"{k} {v}" for k, v in rt.items() if k not in ("name", "feed", "isolation")) + f" [{rt['name']}]")
    if isinstance(rt.get("feed"), dict):
        feed = rt["feed"]
        print(f"following: {feed.get('mode')}, position {feed.get('position')}"
              + (f" ({feed['last_error']})" if feed.get("last_error") else ""))
    iso = rt.get("isolation")
    if iso:
        if iso.get("enforced"):
            print(f"isolation: {iso['mode']}: {iso['how']}")
            for gap in iso.get("not_enforced") or []:
                print(f"  not enforced: {gap}")
        else:
            print(f"isolation: NONE: {iso['reason']}")
    counts = doc.get("workspaces") or {}
    print("workspaces: " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"))
    _print_devices(doc.get("devices"))
    for hook in _STATUS_PRINTERS:
        hook(doc)
    return 0


def _print_devices(section: dict[str, Any] | None) -> None:
    """The GPUs of the runtime's nodes, per node and type (Nomad): free of healthy, and total."""
    if section is None:
        return
    rows = section.get("gpus") or []
    free = sum(r["free"] for r in rows)
    print(f"GPUs: {free} free of {sum(r['healthy'] for r in rows)} healthy" if rows else "GPUs: none on the nodes")
    if rows:
        print_table(["node", "type", "free", "healthy", "total", "node status"],
                    [[r["node"], r["type"], r["free"], r["healthy"], r["total"],
                      (r.get("status") or "") + ("" if r.get("eligible", True) else ", ineligible")] for r in rows])
    if section.get("note"):
        print(f"  ({section['note']})")


def _iso(ts: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _print_capacity(doc: dict[str, Any]) -> None:
    """``ml status``'s warm pools (size, ready members, claims) and culling."""
    cap = doc.get("capacity")
    if not cap:
        return
    pools = cap.get("pools") or {}
    for p in pools.get("pools") or []:
        line = (f"warm pool {p['name']}: size {p['size']}, {p['ready']} ready, {p['preparing']} starting, "
                f"{p['claims']} claims, {p['misses']} misses")
        if p.get("claim_ms_p50") is not None:
            line += f", claim p50 {p['claim_ms_p50']} ms"
        if p.get("blocked") or p.get("last_error"):
            line += f" ({p.get('blocked') or p.get('last_error')})"
        print(line)
    if pools.get("unavailable"):
        print(f"warm pools: none ({pools['unavailable']})")
    c = cap.get("culling") or {}
    if c.get("enabled"):
        parts = [f"{k.replace('_', ' ')} {c[k]}" for k in ("idle_timeout", "gpu_idle_timeout", "max_age") if c.get(k)]
        print(f"culling: {', '.join(parts)}, every {c.get('check_interval')}, action {c.get('action')}")
    counters = cap.get("counters") or {}
    if counters:
        print("capacity counters: " + ", ".join(f"{k} {v}" for k, v in sorted(counters.items())))
    q = cap.get("quota")
    if q:
        used, lim = q["in_use"], q["limits"]
        shown = [f"{k} {used.get(k)}/{lim[k]}" for k in lim if lim[k] is not None]
        print(f"quota of {q['user']}: " + (", ".join(shown) or "no limits"))


# Other concerns (experiment runs) add printers for their part of `ml status`.
_STATUS_PRINTERS: list[Any] = [_print_capacity]


_ROLES = ["viewer", "collaborator", "editor", "owner"]
_ROLE_HELP = ("viewer: see it; collaborator: also start, stop, run; editor: also install packages, sync, link; "
              "owner: also grant access, delete")


def _name(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="workspace name")


def _create_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="workspace name (lowercase letters, digits, hyphens)")
    p.add_argument("--cpu", help="CPU cores, e.g. 4 or 0.5")
    p.add_argument("--memory", help="memory, e.g. 8g or 512m")
    p.add_argument("--gpu", type=int, help="number of GPUs")
    p.add_argument("--gpu-type", metavar="TYPE",
                   help="the kind of GPU (nomad runtime): a model such as H100 or A100-SXM4-80GB, or a MIG profile "
                        "such as 3g.40gb (MODEL:PROFILE for both); --gpu defaults to 1")
    p.add_argument("--disk", help="disk, e.g. 20g")
    p.add_argument("--image", help="workspace image (docker and nomad runtimes)")
    p.add_argument("--password", help="protect JupyterLab with a password instead of a token")
    p.add_argument("--experiment", help="link the workspace to this experiment (created if new)")
    p.add_argument("--template", help="a workspace template: a YAML file, or a name the agent knows")
    p.add_argument("--config", help="workspace-config.yaml (resources, environment, security)")


def _start_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", required=True, help="service name")
    p.add_argument("--workspace", help="directory to serve (absolute path on the agent's host)")
    p.add_argument("--password", help="password for the service")


def _stop_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("service_id", metavar="SERVICE_ID", help="service id (ws-...) or workspace name")


def _delete_args(p: argparse.ArgumentParser) -> None:
    _name(p)
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")


def _access_args(p: argparse.ArgumentParser) -> None:
    _name(p)
    p.add_argument("--user", help="user to grant")
    p.add_argument("--team", help="team to grant")
    p.add_argument("--role", default="viewer", choices=_ROLES, help=f"the role to grant (default viewer; {_ROLE_HELP})")


def _share_args(p: argparse.ArgumentParser) -> None:
    _name(p)
    p.add_argument("--team", required=True, help="team name (teams are listed per user in the agent's agent.yaml)")
    p.add_argument("--role", default="collaborator", choices=_ROLES,
                   help=f"the role to grant (default collaborator; {_ROLE_HELP})")


def _revoke_args(p: argparse.ArgumentParser) -> None:
    _name(p)
    p.add_argument("principal", help="user name, or team:NAME")


def register(jupyter: Any, top: Any) -> None:
    jupyter.command("create", cmd_create, _create_args, help="create a workspace and start JupyterLab",
                    description="Create a workspace and start its JupyterLab.")
    jupyter.command("start", cmd_start, _start_args, help="start a Jupyter service on a directory (0x0D)")
    jupyter.command("stop", cmd_stop, _stop_args, help="stop a service by id or workspace name (0x0E)")
    jupyter.command("list", cmd_list, help="list workspaces and services (0x0F)")
    for verb, opcode, helptext in (
        ("info", Opcode.WORKSPACE_INFO, "show a workspace's details"),
        ("restart", Opcode.RESTART_WORKSPACE, "restart a workspace's JupyterLab"),
        ("limits", Opcode.WORKSPACE_LIMITS, "resource limits and whether they are enforced"),
    ):
        jupyter.command(verb, _simple(opcode, timeout=None if verb == "restart" else 30), _name, help=helptext)
    jupyter.command("status", cmd_status_ws, _name, help="live status of a workspace (exit 4 unless running)")
    jupyter.command("delete", cmd_delete, _delete_args, help="stop a workspace and delete it with its files")
    jupyter.command("access", cmd_access, _access_args, help="grant a user or team a role on a workspace")
    jupyter.command("share", cmd_share, _share_args, help="share a workspace with a team")
    jupyter.command("revoke", cmd_revoke, _revoke_args, help="revoke a user's (or team:NAME's) access")
