"""Ansible callback plugin ``plan``: what a run changed, or would change in check mode, per host."""

# ruff: noqa: E402  (Ansible reads DOCUMENTATION before the imports)
from __future__ import annotations

DOCUMENTATION = r"""
---
name: plan
type: aggregate
short_description: A per-host summary of what a run would change (check mode) or changed
description:
  - Records every task that reports a change, fails, or finds its host unreachable, and at the end of the
    run shows a table of them per host and writes C(plan.json) and C(plan.md) (the same table in Markdown,
    for a pipeline's summary page or an artifact) to O(output_dir).
  - Run with C(--check --diff) it is the plan of a GitOps pipeline; C(scripts/gitops_plan.py) runs it so
    (C(make plan), C(make drift)) and reads C(plan.json) to decide whether an inventory drifted.
  - A change is named by host, role, task, the task's file and line, and what changed as far as it is
    known without the content itself (a file's path and its added and removed lines, attributes such as
    C(mode) or C(state), the first line of a package manager's plan, the loop items that changed). Diff
    text is never written to the files; tasks with C(no_log) show no detail at all.
  - "Enable it with C(callbacks_enabled = fetchml.platform.plan) in ansible.cfg or
    C(ANSIBLE_CALLBACKS_ENABLED=fetchml.platform.plan)."
version_added: "0.1.0"
author: FetchML
requirements:
  - enabled in C(callbacks_enabled)
options:
  output_dir:
    description: Directory for C(plan.json) and C(plan.md) (created). Empty writes no files, the table is still shown.
    type: path
    default: ""
    env:
      - name: FETCHML_PLAN_DIR
    ini:
      - section: fetchml_plan
        key: output_dir
  title:
    description: Heading of the summary, such as the inventory's name. Empty uses the inventory sources.
    type: str
    default: ""
    env:
      - name: FETCHML_PLAN_TITLE
    ini:
      - section: fetchml_plan
        key: title
"""

import difflib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ansible import context
from ansible.playbook.handler import Handler
from ansible.plugins.callback import CallbackBase

__all__ = ["FORMAT", "CallbackModule", "describe_diff", "render_markdown", "render_text"]

# Version of plan.json's layout; scripts/gitops_plan.py refuses another.
FORMAT = 1

_MAX_DETAIL = 160


def _short(text: Any) -> str:
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return line if len(line) <= _MAX_DETAIL else line[: _MAX_DETAIL - 1] + "…"


def _line_counts(before: str, after: str) -> tuple[int, int]:
    added = removed = 0
    for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0):
        if line.startswith("+") and not line.startswith("+++"):
            added += 1
        elif line.startswith("-") and not line.startswith("---"):
            removed += 1
    return added, removed


def describe_diff(diff: Any) -> list[str]:
    """What one result's ``diff`` (a dict or a list of them) says changed, without the content itself."""
    parts: list[str] = []
    for entry in diff if isinstance(diff, list) else [diff]:
        if not isinstance(entry, Mapping):
            continue
        where = entry.get("after_header") or entry.get("before_header") or ""
        before, after = entry.get("before"), entry.get("after")
        if entry.get("prepared"):
            parts.append(_short(entry["prepared"]))
        elif isinstance(before, str) and isinstance(after, str):
            added, removed = _line_counts(before, after)
            parts.append(f"{where or 'content'}: +{added} -{removed} lines".strip())
        elif isinstance(before, Mapping) or isinstance(after, Mapping):
            before_map = before if isinstance(before, Mapping) else {}
            after_map = after if isinstance(after, Mapping) else {}
            keys = [k for k in after_map if k != "path" and before_map.get(k) != after_map.get(k)]
            changes = ", ".join(f"{k} {before_map.get(k, '-')} → {after_map[k]}" for k in keys)
            path = after_map.get("path") or before_map.get("path") or where
            parts.append(f"{path}: {changes}" if path and changes else (changes or str(path)))
        elif where:
            parts.append(str(where))
    return [p for p in parts if p]


def _item_label(item_result: Mapping[str, Any]) -> str:
    label = item_result.get("_ansible_item_label", item_result.get("item"))
    if isinstance(label, Mapping):
        for key in ("name", "path", "dest", "src", "key"):
            if key in label:
                return _short(label[key])
        return _short(json.dumps(label, sort_keys=True, default=str))
    return _short(label)


def _details(result: Mapping[str, Any]) -> list[str]:
    if result.get("_ansible_no_log"):
        return ["(no_log: details hidden)"]
    details = describe_diff(result.get("diff", []))
    loop = result.get("results")
    if isinstance(loop, list):
        for item in loop:
            if isinstance(item, Mapping) and item.get("changed"):
                inner = ["(no_log)"] if item.get("_ansible_no_log") else describe_diff(item.get("diff", []))
                details.append("; ".join(inner) if inner else f"item {_item_label(item)}")
    return details


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]


def render_text(plan: Mapping[str, Any]) -> str:
    """The summary for a terminal or a CI log: one line per changed or failed task, per host."""
    verb = "would change" if plan["check_mode"] else "changed"
    changes, failures, unreachable = plan["changes"], plan["failures"], plan["unreachable"]
    hosts = sorted(plan["hosts"])
    touched = sorted({c["host"] for c in changes})
    lines = [
        f"PLAN {plan['title']}: {len(changes)} task(s) {verb} on {len(touched)} of {len(hosts)} host(s), "
        f"{len(failures)} failed, {len(unreachable)} unreachable"
        + ("" if plan["check_mode"] else " (not a check-mode run: these changes were applied)")
    ]
    rows = [["HOST", "STATUS", "TASK", "WHERE", "WHAT"]]
    for c in changes:
        rows.append([c["host"], verb, c["label"], c["path"], "; ".join(c["details"]) or "-"])
    for f in failures:
        rows.append([f["host"], "FAILED", f["label"], f["path"], f["message"]])
    for u in unreachable:
        rows.append([u["host"], "UNREACHABLE", "-", "-", u["message"]])
    if len(rows) > 1:
        lines += _table(rows)
    else:
        lines.append("No changes: every host is as the inventory describes it.")
    return "\n".join(lines)


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(plan: Mapping[str, Any]) -> str:
    """The same summary as Markdown: a table of hosts, then one table per host that has something to show."""
    verb = "would change" if plan["check_mode"] else "changed"
    kind = "Plan (check mode)" if plan["check_mode"] else "Run"
    out = [f"# {kind}: {_md(plan['title'])}", ""]
    changes, failures, unreachable = plan["changes"], plan["failures"], plan["unreachable"]
    if not (changes or failures or unreachable):
        out += [
            f"No changes on {len(plan['hosts'])} host(s): every host is as the inventory describes it.",
            "",
        ]
    out += [f"| Host | Tasks that {verb} | Failed | Unreachable |", "|---|---|---|---|"]
    for host, stats in sorted(plan["hosts"].items()):
        out.append(
            f"| {_md(host)} | {stats['changed']} | {stats['failures']} | {'yes' if stats['unreachable'] else 'no'} |"
        )
    for host in sorted(plan["hosts"]):
        mine = [
            ("changed" if not plan["check_mode"] else "would change", c) for c in changes if c["host"] == host
        ]
        mine += [("FAILED", f) for f in failures if f["host"] == host]
        gone = [u for u in unreachable if u["host"] == host]
        if not (mine or gone):
            continue
        out += ["", f"## {_md(host)}", "", "| Status | Task | Where | What |", "|---|---|---|---|"]
        for status, e in mine:
            what = "; ".join(e["details"]) if status != "FAILED" else e["message"]
            out.append(f"| {status} | {_md(e['label'])} | `{_md(e['path'])}` | {_md(what) or '-'} |")
        for u in gone:
            out.append(f"| UNREACHABLE | - | - | {_md(u['message'])} |")
    return "\n".join(out) + "\n"


class CallbackModule(CallbackBase):  # type: ignore[misc]
    """Collects changes, failures and unreachable hosts; shows and writes the summary at the end."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "fetchml.platform.plan"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._changes: list[dict[str, Any]] = []
        self._failures: list[dict[str, Any]] = []
        self._unreachable: list[dict[str, str]] = []
        self._playbooks: list[str] = []

    # --- what each result says -------------------------------------------------------------------
    @staticmethod
    def _where(task: Any) -> str:
        path = task.get_path() or ""
        file, _, line = path.rpartition(":")
        if not file:
            return path
        try:
            rel = os.path.relpath(file)
        except ValueError:
            rel = file
        return f"{file if rel.startswith('..') else rel}:{line}"

    def _entry(self, result: Any) -> dict[str, Any]:
        task = result.task
        role = task._role.get_name(include_role_fqcn=False) if task._role else ""
        name = task.name or task.action
        handler = isinstance(task, Handler)
        label = (f"{role} : {name}" if role else name) + (" (handler)" if handler else "")
        return {
            "host": result.host.get_name(),
            "label": label,
            "task": name,
            "role": role,
            "action": task.action,
            "path": self._where(task),
            "handler": handler,
        }

    def v2_playbook_on_start(self, playbook: Any) -> None:
        self._playbooks.append(str(playbook._file_name))

    def v2_runner_on_ok(self, result: Any) -> None:
        if result.is_changed():
            self._changes.append({**self._entry(result), "details": _details(result.result)})

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        if ignore_errors:
            return
        data = result.result
        message = (
            "(no_log)" if data.get("_ansible_no_log") else _short(data.get("msg") or data.get("stderr") or "")
        )
        self._failures.append({**self._entry(result), "message": message})

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._unreachable.append(
            {"host": result.host.get_name(), "message": _short(result.result.get("msg", ""))}
        )

    # --- the summary -----------------------------------------------------------------------------
    def _plan(self, stats: Any) -> dict[str, Any]:
        args = context.CLIARGS
        sources: Iterable[str] = args.get("inventory") or ()
        title = self.get_option("title") or ", ".join(str(s) for s in sources) or "(no inventory)"
        hosts = {}
        for host in sorted(stats.processed):
            summary = stats.summarize(host)
            hosts[host] = {
                "changed": sum(1 for c in self._changes if c["host"] == host),
                "failures": sum(1 for f in self._failures if f["host"] == host),
                "unreachable": bool(summary.get("unreachable")),
                "ok": summary.get("ok", 0),
                "skipped": summary.get("skipped", 0),
            }
        return {
            "format": FORMAT,
            "title": title,
            "check_mode": bool(args.get("check")),
            "inventory": [str(s) for s in sources],
            "playbooks": self._playbooks,
            "limit": args.get("subset") or "",
            "hosts": hosts,
            "changes": self._changes,
            "failures": self._failures,
            "unreachable": self._unreachable,
        }

    def v2_playbook_on_stats(self, stats: Any) -> None:
        plan = self._plan(stats)
        self._display.display("\n" + render_text(plan))
        out = self.get_option("output_dir")
        if not out:
            return
        directory = Path(out)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "plan.json").write_text(json.dumps(plan, indent=2, sort_keys=True, default=str) + "\n")
        (directory / "plan.md").write_text(render_markdown(plan))
        self._display.display(f"plan written to {directory / 'plan.json'} and {directory / 'plan.md'}")
