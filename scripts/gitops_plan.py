#!/usr/bin/env python3
"""Plan, drift check and apply of an inventory: the steps of the GitOps pipeline (docs/gitops.md).

    scripts/gitops_plan.py plan  -i INVENTORY [--playbook P] [--output DIR] [-- ANSIBLE-PLAYBOOK ARGS]
    scripts/gitops_plan.py drift -i INVENTORY ...
    scripts/gitops_plan.py apply -i INVENTORY ...

``plan`` runs ``ansible-playbook --check --diff`` with the ``fetchml.platform.plan`` callback, which
shows what would change on which host and writes ``plan.json`` and ``plan.md`` to the output directory
(default ``build/plan/<inventory name>``). ``drift`` is the same run, and fails when anything would
change, naming each drifted task and host. ``apply`` runs for real (``--diff``, same summary, default
``build/apply/<inventory name>``). Arguments after ``--`` go to ``ansible-playbook`` as they are
(``--limit``, ``--vault-password-file``, ``-e``, ...).

Exit status: 0 when the run succeeded (and, for ``drift``, nothing would change); ansible-playbook's
own status when the run failed (2: a task failed, 4: a host was unreachable, ...); 10 (:data:`EXIT_DRIFT`)
when ``drift`` found changes. Standard library only: it runs from this repository and from the
installed collection alike.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["CALLBACK", "EXIT_DRIFT", "FORMAT", "drift_report", "inventory_name", "main", "run"]

CALLBACK = "fetchml.platform.plan"
# plan.json's layout: plugins/callback/plan.py's FORMAT (a test keeps them equal).
FORMAT = 1
EXIT_DRIFT = 10
EXIT_NO_PLAN = 1


def inventory_name(inventory: str) -> str:
    """``inventories/staging`` and ``inventories/staging/hosts.yml`` are both ``staging``."""
    path = Path(inventory.rstrip("/"))
    if path.suffix:
        return path.parent.name if path.stem in ("hosts", "inventory") and path.parent.name else path.stem
    return path.name


def _ansible_playbook() -> str:
    beside = Path(sys.executable).parent / "ansible-playbook"
    found = str(beside) if beside.exists() else shutil.which("ansible-playbook")
    if not found:
        raise SystemExit(
            "gitops_plan: ansible-playbook not found (install ansible-core in this Python's environment)"
        )
    return found


def drift_report(plan: dict[str, Any]) -> str:
    """The drift message: one line per task that would change, with its host, file and what differs."""
    changes = plan["changes"]
    hosts = sorted({c["host"] for c in changes})
    lines = [
        f"DRIFT in {plan['title']}: {len(changes)} task(s) would change on {len(hosts)} host(s) "
        f"({', '.join(hosts)}); the hosts no longer match the inventory:"
    ]
    for c in changes:
        what = "; ".join(c["details"])
        lines.append(f"  {c['host']}: {c['label']} ({c['path']})" + (f": {what}" if what else ""))
    return "\n".join(lines)


def run(mode: str, inventory: str, playbook: str, output: Path, extra: list[str]) -> int:
    """Run the playbook for ``mode`` (plan, drift, apply) and return the exit status described above."""
    output.mkdir(parents=True, exist_ok=True)
    for stale in ("plan.json", "plan.md"):
        (output / stale).unlink(missing_ok=True)
    enabled = [c for c in os.environ.get("ANSIBLE_CALLBACKS_ENABLED", "").split(",") if c.strip()]
    env = {
        **os.environ,
        "ANSIBLE_CALLBACKS_ENABLED": ",".join([*enabled, CALLBACK] if CALLBACK not in enabled else enabled),
        "FETCHML_PLAN_DIR": str(output),
        "FETCHML_PLAN_TITLE": inventory_name(inventory),
    }
    argv = [_ansible_playbook(), "-i", inventory, playbook, "--diff"]
    if mode in ("plan", "drift"):
        argv.append("--check")
    print("+ " + " ".join(argv + extra), flush=True)
    rc = subprocess.run(argv + extra, env=env, check=False).returncode
    plan_file = output / "plan.json"
    if not plan_file.exists():
        print(
            f"gitops_plan: {mode}: the run wrote no {plan_file} (ansible-playbook exited {rc})",
            file=sys.stderr,
        )
        return rc or EXIT_NO_PLAN
    plan = json.loads(plan_file.read_text())
    if plan.get("format") != FORMAT:
        print(f"gitops_plan: {plan_file}: format {plan.get('format')!r}, expected {FORMAT}", file=sys.stderr)
        return EXIT_NO_PLAN
    if rc != 0:
        print(
            f"gitops_plan: {mode}: ansible-playbook exited {rc}; the summary is in {output}", file=sys.stderr
        )
        return rc
    if mode == "drift" and plan["changes"]:
        print(drift_report(plan), file=sys.stderr)
        return EXIT_DRIFT
    if mode == "drift":
        print(f"NO DRIFT in {plan['title']}: {len(plan['hosts'])} host(s) match the inventory.")
    return 0


def main(argv: list[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in args_in:
        cut = args_in.index("--")
        args_in, extra = args_in[:cut], args_in[cut + 1 :]
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="Arguments after -- go to ansible-playbook as they are."
    )
    parser.add_argument("mode", choices=["plan", "drift", "apply"])
    parser.add_argument("-i", "--inventory", required=True, help="inventory directory or file")
    parser.add_argument("--playbook", default="playbooks/site.yml", help="default: %(default)s")
    parser.add_argument("--output", type=Path, help="default: build/plan/<inventory name> (build/apply/... for apply)")
    args = parser.parse_args(args_in)
    output = args.output or Path("build", "apply" if args.mode == "apply" else "plan", inventory_name(args.inventory))
    return run(args.mode, args.inventory, args.playbook, output, extra)


if __name__ == "__main__":
    sys.exit(main())
