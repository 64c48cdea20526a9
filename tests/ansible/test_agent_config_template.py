"""The fetchml_agent role's agent.yaml template, rendered by Ansible, is what the agent accepts.

Users given by ``api_key`` (a vault value) or ``api_key_verifier`` come out as verifiers that let
exactly those keys in; nothing in the rendered file is the key or logs in; ``api_key_sha256`` fails
the role's asserts with the way to replace it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml
from conftest import REPO, tool

from fetchml_agent.auth import KeyTable, api_key_verifier
from fetchml_agent.config import parse_config
from fetchml_agent.protocol import api_key_hash

ROLE = REPO / "roles" / "fetchml_agent"


def _play(tmp_path: Path, users: str, tasks: str, runtime: str = "local") -> subprocess.CompletedProcess[str]:
    play = tmp_path / "play.yml"
    play.write_text(
        textwrap.dedent(
            f"""\
            - hosts: localhost
              gather_facts: true
              vars_files:
                - {ROLE}/defaults/main.yml
                - {ROLE}/vars/main.yml
              tasks:
            """
        )
        + textwrap.indent(textwrap.dedent(tasks), "    ")
    )
    overrides = tmp_path / "overrides.yml"
    overrides.write_text(
        f"fetchml_agent_runtime: {runtime}\nfetchml_agent_config_dir: {tmp_path}\nfetchml_agent_users: {users}\n"
    )
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
    }
    return subprocess.run(
        [tool("ansible-playbook"), "-i", "localhost,", "-c", "local", "-e",
         f"ansible_python_interpreter={sys.executable}", "-e", f"@{overrides}", str(play)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


def test_rendered_users_hold_verifiers_that_admit_exactly_their_keys(tmp_path: Path) -> None:
    alice_key, bob_key = "vault-alice-key-0123456789", "bob-key-0123456789"
    users = (
        f"[{{name: alice, role: admin, api_key: {alice_key}}}, "
        f"{{name: bob, api_key_verifier: {api_key_verifier(bob_key)}, teams: [vision]}}]"
    )
    out = tmp_path / "agent.yaml"
    proc = _play(
        tmp_path,
        users,
        f"""\
        - name: Render agent.yaml as the role does.
          ansible.builtin.template:
            src: {ROLE}/templates/agent.yaml.j2
            dest: {out}
            mode: "0600"
        """,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = out.read_text()
    assert alice_key not in text and "api_key_sha256" not in text
    for key in (alice_key, bob_key):
        assert hashlib.sha256(key.encode()).hexdigest()[:32] not in text  # the wire value, hex
    config = parse_config(yaml.safe_load(text), path=out)
    table = KeyTable((u.key_verifier, u.name) for u in config.users)
    assert table.lookup(api_key_hash(alice_key)) == "alice"
    assert table.lookup(api_key_hash(bob_key)) == "bob"
    assert table.lookup(api_key_hash("someone-else")) is None


def test_role_asserts_refuse_api_key_sha256_with_the_way_out(tmp_path: Path) -> None:
    legacy = hashlib.sha256(b"old-key").hexdigest()
    proc = _play(
        tmp_path,
        f"[{{name: old, api_key_sha256: {legacy}}}]",
        f"""\
        - name: Run the role's asserts.
          ansible.builtin.include_tasks: {ROLE}/tasks/asserts.yml
        """,
    )
    assert proc.returncode != 0
    assert "api_key_sha256 is refused" in proc.stdout and "api_key_verifier" in proc.stdout
    assert "hash-key" in proc.stdout


def test_metrics_scrape_key_and_prometheus_scrape_configuration(tmp_path: Path) -> None:
    """agent.yaml gets the scrape key's verifier (never the key); the scrape configuration names the
    agent's address, the /metrics path and the key's file, which holds exactly the key; the
    dashboard lands in Grafana's provisioning directory."""
    scrape_key = "vault-scrape-key-0123456789"
    out, scrape, grafana = tmp_path / "agent.yaml", tmp_path / "scrape", tmp_path / "grafana"
    scrape.mkdir()
    grafana.mkdir()
    (tmp_path / "more.yml").write_text(
        f"fetchml_agent_metrics_scrape_key: {scrape_key}\nfetchml_agent_prometheus_scrape_dir: {scrape}\n"
        "fetchml_agent_listen: 10.1.2.3:9101\nfetchml_agent_usage: {interval: 30s}\n"
        "fetchml_agent_metrics: {workspace_labels: true}\nfetchml_agent_prometheus_group: root\n"
        f"fetchml_agent_grafana_dashboard_dir: {grafana}\n"
    )
    proc = _play(
        tmp_path,
        "[{name: alice, role: admin, api_key: alice-key-0123456789}]",
        f"""\
        - name: Load the monitoring variables.
          ansible.builtin.include_vars: {tmp_path / "more.yml"}
        - name: Render agent.yaml as the role does.
          ansible.builtin.template:
            src: {ROLE}/templates/agent.yaml.j2
            dest: {out}
            mode: "0600"
        - name: Install the dashboard, the scrape key and the scrape configuration (the role's tasks).
          ansible.builtin.include_role:
            name: {ROLE}
            tasks_from: monitoring.yml
        """,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = out.read_text()
    assert scrape_key not in text
    raw = yaml.safe_load(text)
    assert raw["metrics"] == {"workspace_labels": True, "scrape_key_verifier": api_key_verifier(scrape_key)}
    assert raw["usage"] == {"interval": "30s"}
    parse_config(raw, path=out)
    job = yaml.safe_load((scrape / "fetchml-agent-localhost.yml").read_text())["scrape_configs"][0]
    assert job["metrics_path"] == "/metrics" and job["scheme"] == "http"
    assert job["static_configs"][0]["targets"] == ["10.1.2.3:9101"]
    key_file = Path(job["authorization"]["credentials_file"])
    assert key_file.read_text() == scrape_key and key_file.stat().st_mode & 0o777 == 0o640
    assert (grafana / "fetchml-agent.json").read_bytes() == (ROLE / "files" / "grafana" / "fetchml-agent.json").read_bytes()


def test_prometheus_scrape_dir_without_a_way_in_fails_the_asserts(tmp_path: Path) -> None:
    (tmp_path / "more.yml").write_text(f"fetchml_agent_prometheus_scrape_dir: {tmp_path}\n")
    proc = _play(
        tmp_path,
        "[]",
        f"""\
        - name: Load the monitoring variables.
          ansible.builtin.include_vars: {tmp_path / "more.yml"}
        - name: Run the role's asserts.
          ansible.builtin.include_tasks: {ROLE}/tasks/asserts.yml
        """,
    )
    assert proc.returncode != 0
    assert "fetchml_agent_metrics_scrape_key" in proc.stdout
