"""make plan / make drift: real ansible-playbook runs on this machine (local connection) through the
plan callback (plugins/callback/plan.py) and scripts/gitops_plan.py.

Two inventory hosts both run locally, each managing a file of its own in a temporary directory, so a
change made by hand to one file is drift on exactly one host.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import PLUGINS, REPO, load_plugin

plan_callback = load_plugin("callback", "plan")
_spec = importlib.util.spec_from_file_location("gitops_plan", REPO / "scripts" / "gitops_plan.py")
assert _spec and _spec.loader
gitops_plan = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gitops_plan)

PLAYBOOK = """\
- name: Demo
  hosts: all
  gather_facts: false
  tasks:
    - name: Write the managed file.
      ansible.builtin.copy:
        dest: "{{ demo_dir }}/{{ inventory_hostname }}.conf"
        content: "listen = {{ demo_port }}\\nsecret = {{ demo_secret }}\\n"
        mode: "0644"

    - name: Create the data directories.
      ansible.builtin.file:
        path: "{{ demo_dir }}/{{ inventory_hostname }}-{{ item }}"
        state: directory
        mode: "0755"
      loop: [cache, logs]

    - name: Fail when asked to.
      ansible.builtin.fail:
        msg: "asked to fail on {{ inventory_hostname }}"
      when: demo_fail | default(false) | bool
"""


@pytest.fixture
def site(tmp_path: Path) -> dict[str, Path]:
    data = tmp_path / "data"
    data.mkdir()
    inv = tmp_path / "inventories" / "demo"
    inv.mkdir(parents=True)
    (inv / "hosts.yml").write_text(
        textwrap.dedent(
            f"""\
            all:
              hosts:
                web-1: {{demo_port: 8001}}
                web-2: {{demo_port: 8002}}
              vars:
                ansible_connection: local
                ansible_python_interpreter: {sys.executable}
                demo_dir: {data}
                demo_secret: hunter2-{tmp_path.name}
            """
        )
    )
    playbook = tmp_path / "site.yml"
    playbook.write_text(PLAYBOOK)
    return {"root": tmp_path, "data": data, "inventory": inv, "playbook": playbook, "out": tmp_path / "plan"}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "MOLECULE_"))}
    env["ANSIBLE_CONFIG"] = str(REPO / "ansible.cfg")
    return env


def gitops(mode: str, site: dict[str, Path], *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, str(REPO / "scripts" / "gitops_plan.py"), mode, "-i", str(site["inventory"])]
    argv += ["--playbook", str(site["playbook"]), "--output", str(site["out"]), "--", *extra]
    return subprocess.run(
        argv, cwd=site["root"], env=_env(), capture_output=True, text=True, timeout=300, check=False
    )


def make(target: str, site: dict[str, Path]) -> subprocess.CompletedProcess[str]:
    argv = ["make", "-s", target, f"INVENTORY={site['inventory']}", f"PLAYBOOK={site['playbook']}"]
    argv += [f"PLAN_OUTPUT={site['out']}", f"VENV={Path(sys.executable).parent.parent}"]
    return subprocess.run(
        argv, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300, check=False
    )


def plan_json(site: dict[str, Path]) -> dict:
    return json.loads((site["out"] / "plan.json").read_text())


def test_plan_of_a_fresh_inventory_lists_every_change_per_host_and_changes_nothing(site):
    proc = gitops("plan", site)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(site["data"].iterdir()) == []  # check mode
    plan = plan_json(site)
    assert plan["check_mode"] is True and plan["title"] == "demo"
    assert sorted(plan["hosts"]) == ["web-1", "web-2"]
    assert {(c["host"], c["label"]) for c in plan["changes"]} == {
        (h, t)
        for h in ("web-1", "web-2")
        for t in ("Write the managed file.", "Create the data directories.")
    }
    [conf] = [c for c in plan["changes"] if c["host"] == "web-1" and c["action"] == "ansible.builtin.copy"]
    assert conf["path"] == "site.yml:5"  # relative to where it ran
    assert conf["details"] == [f"{site['data']}/web-1.conf: +2 -0 lines"]
    [dirs] = [c for c in plan["changes"] if c["host"] == "web-2" and c["action"] == "ansible.builtin.file"]
    assert dirs["details"] == [
        f"{site['data']}/web-2-cache: state absent → directory",
        f"{site['data']}/web-2-logs: state absent → directory",
    ]
    # The summary table is in the log, and in Markdown for the pipeline's artifact.
    assert "PLAN demo: 4 task(s) would change on 2 of 2 host(s), 0 failed, 0 unreachable" in proc.stdout
    md = (site["out"] / "plan.md").read_text()
    assert md.startswith("# Plan (check mode): demo\n")
    assert "| web-1 | 2 | 0 | no |" in md and "## web-2" in md
    assert "| would change | Write the managed file. | `site.yml:5` |" in md
    # What changed is described, the content is not: the templated secret is in neither file.
    secret = f"hunter2-{site['root'].name}"
    assert secret not in md and secret not in (site["out"] / "plan.json").read_text()


def test_no_drift_after_apply_then_drift_names_the_task_and_the_host(site):
    proc = gitops("apply", site)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    applied = plan_json(site)
    assert applied["check_mode"] is False and len(applied["changes"]) == 4
    assert (site["data"] / "web-1.conf").read_text().startswith("listen = 8001\n")

    proc = make("plan", site)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert plan_json(site)["changes"] == []
    assert "No changes: every host is as the inventory describes it." in proc.stdout
    proc = make("drift", site)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "NO DRIFT in demo: 2 host(s) match the inventory." in proc.stdout

    # Someone edits one managed file by hand. (make runs from the repository: the playbook's path is
    # outside it, so it is shown whole.)
    (site["data"] / "web-2.conf").write_text("listen = 9999\n")
    proc = make("drift", site)
    # make fails (status 2) and names the script's status: 10 is drift, not a failed run.
    assert proc.returncode == 2 and f"Error {gitops_plan.EXIT_DRIFT}" in proc.stderr, (
        proc.stdout + proc.stderr
    )
    assert "DRIFT in demo: 1 task(s) would change on 1 host(s) (web-2)" in proc.stderr
    assert (
        f"  web-2: Write the managed file. ({site['playbook']}:5): {site['data']}/web-2.conf: +2 -1 lines"
        in proc.stderr
    )
    assert "web-1:" not in proc.stderr
    assert (site["data"] / "web-2.conf").read_text() == "listen = 9999\n"  # drift detection changes nothing
    assert [c["host"] for c in plan_json(site)["changes"]] == ["web-2"]


def test_a_failing_task_is_ansibles_failure_not_drift(site):
    proc = gitops("drift", site, "-e", "demo_fail=true", "--limit", "web-1")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "ansible-playbook exited 2" in proc.stderr and "DRIFT" not in proc.stderr
    plan = plan_json(site)
    assert list(plan["hosts"]) == ["web-1"] and plan["limit"] == "web-1"
    [failure] = plan["failures"]
    assert (failure["host"], failure["label"], failure["message"]) == (
        "web-1",
        "Fail when asked to.",
        "asked to fail on web-1",
    )
    assert "| FAILED | Fail when asked to." in (site["out"] / "plan.md").read_text()


def test_an_unreachable_host_is_reported(site):
    hosts = site["inventory"] / "hosts.yml"
    hosts.write_text(
        hosts.read_text().replace(
            "web-2: {demo_port: 8002}",
            "web-2: {demo_port: 8002, ansible_connection: ssh, ansible_host: 127.0.0.1, ansible_port: 9}",
        )
    )
    proc = gitops("plan", site)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    plan = plan_json(site)
    assert [u["host"] for u in plan["unreachable"]] == ["web-2"]
    assert plan["hosts"]["web-2"]["unreachable"] is True


def test_a_run_that_never_starts_writes_no_plan_and_says_so(site):
    site["playbook"].write_text("- hosts: all\n  tasks: [{ansible.builtin.nope: {}}]\n")
    proc = gitops("plan", site)
    assert proc.returncode not in (0, gitops_plan.EXIT_DRIFT)
    assert "the run wrote no" in proc.stderr and "plan.json" in proc.stderr


def test_make_plan_and_drift_need_an_inventory():
    for target in ("plan", "drift"):
        proc = subprocess.run(["make", "-s", target], cwd=REPO, capture_output=True, text=True, check=False)
        assert proc.returncode == 2
        assert f"usage: make {target} INVENTORY=inventories/<environment>" in proc.stderr


def test_plan_json_format_is_shared():
    assert plan_callback.FORMAT == gitops_plan.FORMAT
    assert (PLUGINS / "callback" / "plan.py").exists()


@pytest.mark.parametrize(
    ("inventory", "name"),
    [
        ("inventories/staging", "staging"),
        ("inventories/staging/", "staging"),
        ("inventories/staging/hosts.yml", "staging"),
        ("/tmp/x/molecule/inventory", "inventory"),
        ("prod.yml", "prod"),
    ],
)
def test_inventory_names(inventory, name):
    assert gitops_plan.inventory_name(inventory) == name


def test_describe_diff_says_what_without_the_content():
    assert plan_callback.describe_diff(
        {"before": "a\nb\n", "after": "a\nc\nd\n", "before_header": "/etc/x", "after_header": "/etc/x"}
    ) == ["/etc/x: +2 -1 lines"]
    assert plan_callback.describe_diff(
        {
            "before": {"path": "/srv", "mode": "0755", "state": "directory"},
            "after": {"path": "/srv", "mode": "0750", "state": "directory"},
        }
    ) == ["/srv: mode 0755 → 0750"]
    assert plan_callback.describe_diff(
        [{"prepared": "The following NEW packages will be installed:\n  jq\n"}]
    ) == ["The following NEW packages will be installed:"]
    assert plan_callback.describe_diff({}) == []
