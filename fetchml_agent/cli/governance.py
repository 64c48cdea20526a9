"""``ml jupyter audit`` (the trail, its exports, ``--verify``, ``--verify-export``) and ``ml admin``
(``retention``, ``user export``, ``user erase``). See docs/audit.md."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from typing import Any

from ..errors import EXIT_TAMPERED, InvalidArgument
from ..protocol.opcodes import Opcode
from .output import emit_json, print_kv, print_table, status_text

__all__ = ["register"]

_CSV_FIELDS = ["id", "time", "ts", "user", "action", "workspace", "workspace_id", "outcome", "details", "digest"]


def _iso(ts: float | None) -> str:
    if not ts:
        return "-"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _csv() -> Any:
    import csv

    return csv


def _verify_report(ctx: Any, doc: dict[str, Any], what: str) -> int:
    if ctx.json:
        emit_json(doc)
    elif doc["ok"]:
        print(f"{what}: intact ({doc['checked']} events checked"
              + (f" in {doc['seconds']:.2f} s" if "seconds" in doc else "") + ")")
    else:
        bad = doc["first_bad"] or {}
        print(f"{what}: BROKEN at event {bad.get('id')}: {bad.get('kind')}", file=sys.stderr)
        print(f"    {bad.get('message')}", file=sys.stderr)
        print(f"    {doc['checked']} events before it verified", file=sys.stderr)
    if not ctx.json:
        for note in doc.get("notes") or []:
            print(f"note: {note}", file=sys.stderr)
    return 0 if doc["ok"] else EXIT_TAMPERED


def cmd_audit(ctx: Any) -> int:
    a = ctx.args
    if a.verify:
        reply = ctx.client.call(Opcode.AUDIT_VERIFY, {"name": a.name}, timeout=600)
        return _verify_report(ctx, reply.data, "audit chain")
    if a.verify_export:
        events = _read_export(a.verify_export)
        reply = ctx.client.call(Opcode.AUDIT_VERIFY_EXPORT, {"events": events, "source": str(a.verify_export)},
                                timeout=600)
        return _verify_report(ctx, reply.data, f"export {a.verify_export}")
    reply = ctx.client.call(Opcode.AUDIT_LOG, {"name": a.name, "limit": a.limit, "action": a.action})
    events = reply.data["events"]
    if a.export == "csv":
        out = _csv().writer(sys.stdout)
        out.writerow(_CSV_FIELDS)
        for e in events:
            out.writerow([e["id"], _iso(e["ts"]), repr(e["ts"]), e["user"], e["action"], e["workspace"] or "",
                          e.get("workspace_id") or "", e["outcome"], json.dumps(e["details"], sort_keys=True),
                          e.get("digest", "")])
        return 0
    if ctx.json or a.export == "json":
        emit_json(reply.data)
        return 0
    print_table(
        ["id", "time", "user", "action", "outcome", "details"],
        [[e["id"], _iso(e["ts"]), e["user"], e["action"], status_text(e["outcome"]),
          ", ".join(f"{k}={v}" for k, v in sorted(e["details"].items()))[:80]] for e in events],
        empty="no audit events",
    )
    return 0


def _read_export(path: str) -> list[dict[str, Any]]:
    """The events of an ``--export=csv`` or ``--export=json`` file, as the agent compares them."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise InvalidArgument(f"{path}: cannot read the export ({exc.strerror})") from None
    events: list[dict[str, Any]] = []
    if text.lstrip().startswith("{"):
        try:
            doc = json.loads(text)
            rows = doc["events"]
        except (ValueError, KeyError, TypeError):
            raise InvalidArgument(f"{path}: not an audit export (expected ml jupyter audit --export=json)") from None
        for e in rows:
            if not isinstance(e, dict) or "id" not in e or "digest" not in e:
                raise InvalidArgument(f"{path}: an event without id or digest; export again with this ml")
            events.append({k: e.get(k) for k in ("id", "ts", "user", "action", "workspace", "outcome", "details",
                                                 "digest")})
        return events
    import io

    reader = _csv().DictReader(io.StringIO(text))
    if not reader.fieldnames or not {"id", "digest"} <= set(reader.fieldnames):
        raise InvalidArgument(f"{path}: not an audit export with digests (expected the columns "
                              f"{', '.join(_CSV_FIELDS)})", "export again: ml jupyter audit [WS] --export=csv")
    for number, row in enumerate(reader, start=2):
        try:
            event: dict[str, Any] = {"id": int(row["id"]), "digest": row["digest"]}
            if row.get("ts"):
                event["ts"] = float(row["ts"])
            for k in ("user", "action", "workspace", "outcome"):
                if k in row:
                    event[k] = row[k] or None
            if row.get("details"):
                event["details"] = json.loads(row["details"])
        except (ValueError, TypeError) as exc:
            raise InvalidArgument(f"{path}:{number}: cannot read this row ({exc})") from None
        events.append(event)
    return events


# -- ml admin ---------------------------------------------------------------------------------------


def cmd_retention(ctx: Any) -> int:
    a = ctx.args
    reply = ctx.client.call(Opcode.RETENTION, {"run": bool(a.run)}, timeout=600)
    doc = reply.data
    if ctx.json:
        emit_json(doc)
        return 0
    plan = doc["plan"]
    keep = plan["settings"]["keep"]
    print(f"retention (daily at {plan['settings']['at']}; next {_iso(plan['next_run'])}):")
    rows = []
    for category in ("audit", "runs", "logs", "metrics"):
        entry = plan.get(category) or {}
        if keep.get(category) is None:
            rows.append([category, "forever", "-", "-"])
        elif category == "audit":
            what = f"{entry.get('events', 0)} events" + (f" (ids ≤ {entry['through_id']})" if entry.get("through_id") else "")
            rows.append([category, keep[category], what, "yes"])
        else:
            n = entry.get("would_remove")
            what = "-" if n is None else f"{n} {entry.get('unit', 'rows')}"
            rows.append([category, keep[category], what, "yes" if entry.get("enforced") else "not yet (kept)"])
    print_table(["category", "keep", "next purge removes" if not a.run else "removed before", "enforced"], rows)
    if a.run:
        removed = doc["removed"].get("audit")
        print(f"purged {removed['removed']} audit events through id {removed['through_id']}; a signed checkpoint "
              "keeps the rest verifiable" if removed else "no audit events to purge")
        for category in ("runs", "logs", "metrics"):
            if category in doc["removed"]:
                print(f"purged {doc['removed'][category]['removed']} {category}")
    elif plan["audit"].get("by_action"):
        print("by action: " + ", ".join(f"{k} {v}" for k, v in sorted(plan["audit"]["by_action"].items())))
    return 0


def _csv_text(rows: list[dict[str, Any]]) -> str:
    import io

    buf = io.StringIO()
    fields: list[str] = []
    for row in rows:
        for k in row:
            if k not in fields:
                fields.append(k)
    writer = _csv().DictWriter(buf, fieldnames=fields or ["empty"])
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v for k, v in row.items()})
    return buf.getvalue()


def cmd_user_export(ctx: Any) -> int:
    a = ctx.args
    reply = ctx.client.call(Opcode.USER_EXPORT, {"user": a.user}, timeout=600)
    doc = reply.data
    import zipfile

    out = a.output or f"fetchml-user-{a.user}-{time.strftime('%Y%m%d-%H%M%S')}.zip"
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("README.txt", f"Everything the FetchML agent held about {doc['user']} at "
                                       f"{_iso(doc['generated_at'])}: one JSON and one CSV file per section.\n")
        for section, rows in sorted(doc["sections"].items()):
            archive.writestr(f"{section}.json", json.dumps(rows, indent=2, sort_keys=True, default=str) + "\n")
            archive.writestr(f"{section}.csv", _csv_text(rows))
    os.chmod(out, 0o600)
    summary = {k: len(v) for k, v in doc["sections"].items()}
    if ctx.json:
        emit_json({"user": doc["user"], "archive": str(out), "sections": summary})
    else:
        print(f"wrote {out}: " + ", ".join(f"{k} {v}" for k, v in sorted(summary.items())))
    return 0


def cmd_user_erase(ctx: Any) -> int:
    a = ctx.args
    if not a.yes and sys.stdin.isatty():
        answer = input(f"erase {a.user}: pseudonymize them in every record and refuse their key? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing erased")
            return 1
    reply = ctx.client.call(Opcode.USER_ERASE, {"user": a.user, "transfer_to": a.transfer_to}, timeout=600)
    doc = reply.data
    if ctx.json:
        emit_json(doc)
        return 0
    print(reply.message)
    print_kv([("pseudonym", doc["pseudonym"]), ("workspaces transferred", ", ".join(doc["transferred"]) or "none")])
    for where, n in sorted(doc["changed"].items()):
        print(f"  {where}: {n}")
    if doc["remaining"]:
        print("still mentioned (not rewritten): " + ", ".join(f"{k} {v}" for k, v in sorted(doc["remaining"].items())),
              file=sys.stderr)
    return 0


def _print_status(doc: dict[str, Any]) -> None:
    audit = doc.get("audit")
    if not audit:
        return
    keep = (audit.get("retention") or {}).get("keep", {}).get("audit")
    line = (f"audit: {audit['events']} events (ids {audit['first_id'] or '-'}–{audit['last_id']}), key "
            f"{audit['key_id']}, retention {keep or 'forever'}")
    if audit.get("purged_through"):
        line += f", purged through {audit['purged_through']}"
    print(line)
    if audit.get("erased_accounts_in_config"):
        print(f"  erased accounts still in agent.yaml (their keys are refused; delete the entries): "
              f"{', '.join(audit['erased_accounts_in_config'])}")


def _audit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="workspace name (admins may omit it for the whole log)")
    p.add_argument("--export", choices=["csv", "json"], help="print the report as CSV or JSON (with each digest)")
    p.add_argument("--limit", type=int, default=1000, help="newest N events (default 1000)")
    p.add_argument("--action", help="only actions starting with this, e.g. package.")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--verify", action="store_true", help="admin: check the audit chain; exit 9 when it is broken")
    g.add_argument("--verify-export", metavar="FILE", help="admin: check an earlier --export file against the agent")


def _retention_args(p: argparse.ArgumentParser) -> None:
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="show what the next purge would remove (the default)")
    mode.add_argument("--run", action="store_true", help="purge now")


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("user", help="user name (as in agent.yaml)")
    p.add_argument("-o", "--output", help="archive path (default fetchml-user-NAME-DATE.zip)")


def _erase_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("user", help="user name (as in agent.yaml)")
    p.add_argument("--transfer-to", dest="transfer_to", metavar="OTHER", help="hand their workspaces to OTHER")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")


def register(jupyter: Any, top: Any) -> None:
    from .workspaces import _STATUS_PRINTERS

    _STATUS_PRINTERS.append(_print_status)
    jupyter.command("audit", cmd_audit, _audit_args, help="a workspace's audit trail (owner or admin); verify it",
                    description="Show, export or verify the audit trail (docs/audit.md). Exit 9 when --verify or "
                                "--verify-export finds a change.")
    admin = top.group("admin", help="administration: retention, GDPR requests (admin role)",
                      description="Agent administration; every command needs the admin role and is audited.",
                      dest="admin_verb", metavar="VERB", what="what to administer (ml admin VERB --help for each)")
    admin.command("retention", cmd_retention, _retention_args,
                  help="what the daily purge removes (retention: in agent.yaml), or purge now")
    user = admin.group("user", help="GDPR requests: export or erase a person's data",
                       description="Everything the agent holds about a person, as an archive; or erase them.",
                       dest="user_verb", metavar="VERB", what="what to do (ml admin user VERB --help for each)")
    user.command("export", cmd_user_export, _export_args,
                 help="write everything held about a user as a zip of JSON and CSV")
    user.command("erase", cmd_user_erase, _erase_args, help="pseudonymize a user everywhere and refuse their key")
