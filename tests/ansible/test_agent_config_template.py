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


def _play(tmp_path: Path, users: str, tasks: str) -> subprocess.CompletedProcess[str]:
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
        f"fetchml_agent_runtime: local\nfetchml_agent_config_dir: {tmp_path}\nfetchml_agent_users: {users}\n"
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
