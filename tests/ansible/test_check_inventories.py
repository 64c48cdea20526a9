"""The inventory schema check: errors name the file, the host or group, and the key."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO, tool

sys.path.insert(0, str(REPO / "scripts"))
import check_inventories as ci

SPECS = ci.load_role_specs()
VAULTED = "!vault |\n  $ANSIBLE_VAULT;1.1;AES256\n  6162636465\n"


def inventory(tmp_path: Path, files: dict[str, str]) -> Path:
    inv = tmp_path / "inv"
    for name, text in files.items():
        path = inv / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return inv


HOSTS = """\
all:
  children:
    gpu_clients:
      hosts:
        gpu-01:
          ansible_host: 10.0.0.11
    agents:
      hosts:
        agent-01:
"""


def messages(findings: list[ci.Finding]) -> list[str]:
    return [str(f) for f in findings]


def test_a_clean_inventory_passes(tmp_path):
    inv = inventory(tmp_path, {"hosts.yml": HOSTS, "group_vars/all.yml": "common_user: fetchml\n"})
    assert ci.check_inventory(inv, SPECS) == []


def test_typo_names_file_group_key_and_suggests(tmp_path):
    inv = inventory(tmp_path, {"hosts.yml": HOSTS, "group_vars/gpu_clients.yml": "common_usr: fetchml\n"})
    [finding] = ci.check_inventory(inv, SPECS)
    assert finding.file.endswith("inv/group_vars/gpu_clients.yml")
    assert finding.scope == "group gpu_clients"
    assert finding.key == "common_usr"
    assert finding.message == "no role declares this variable (did you mean common_user?)"


def test_wrong_type_and_choice(tmp_path):
    inv = inventory(
        tmp_path,
        {
            "hosts.yml": HOSTS,
            "host_vars/gpu-01.yml": "common_apply_kernel_settings: maybe\ncommon_time_sync: ntpd\n",
        },
    )
    found = {f.key: f for f in ci.check_inventory(inv, SPECS)}
    assert set(found) == {"common_apply_kernel_settings", "common_time_sync"}
    assert found["common_apply_kernel_settings"].scope == "host gpu-01"
    assert found["common_apply_kernel_settings"].message == "must be of boolean type, got 'maybe'"
    # The message names the allowed values (the role's argument spec `choices`).
    assert (
        found["common_time_sync"].message == "unallowed value ntpd (allowed: systemd-timesyncd, chrony, none)"
    )


def test_nested_options_are_checked(tmp_path):
    inv = inventory(
        tmp_path,
        {
            "hosts.yml": HOSTS,
            "group_vars/all/dirs.yml": "common_directories:\n  - {path: /x, mode: '0750', owner: root, colour: red}\n",
        },
    )
    [finding] = ci.check_inventory(inv, SPECS)
    assert finding.key == "common_directories[0].colour"
    assert finding.file.endswith("group_vars/all/dirs.yml")


def test_inline_vars_in_hosts_yml(tmp_path):
    hosts = HOSTS.replace("ansible_host: 10.0.0.11", "ansible_host: 10.0.0.11\n          common_grp: x")
    [finding] = ci.check_inventory(inventory(tmp_path, {"hosts.yml": hosts}), SPECS)
    assert (finding.file.endswith("hosts.yml"), finding.scope, finding.key) == (
        True,
        "host gpu-01",
        "common_grp",
    )


def test_expressions_and_vault_values_are_taken_as_run_time_values(tmp_path):
    inv = inventory(
        tmp_path,
        {
            "hosts.yml": HOSTS,
            "group_vars/all.yml": 'common_apply_kernel_settings: "{{ not in_container }}"\nvault_agent_token: '
            + VAULTED,
        },
    )
    assert ci.check_inventory(inv, SPECS) == []


def test_vault_variable_in_clear_is_an_error(tmp_path):
    inv = inventory(tmp_path, {"hosts.yml": HOSTS, "group_vars/all.yml": "vault_agent_token: s3cret\n"})
    [finding] = ci.check_inventory(inv, SPECS)
    assert finding.key == "vault_agent_token" and "ansible-vault" in finding.message


def test_secret_option_in_clear_is_an_error(tmp_path):
    specs = {"demo_token": ("demo", {"type": "str", "no_log": True})}
    inv = inventory(tmp_path, {"hosts.yml": HOSTS, "group_vars/agents.yml": "demo_token: s3cret\n"})
    [finding] = ci.check_inventory(inv, specs)
    assert (finding.key, finding.scope) == ("demo_token", "group agents")
    assert "secret in clear" in finding.message
    ok = inventory(
        tmp_path / "ok",
        {"hosts.yml": HOSTS, "group_vars/agents.yml": 'demo_token: "{{ vault_demo_token }}"\n'},
    )
    assert ci.check_inventory(ok, specs) == []


def test_vars_file_for_a_group_that_does_not_exist(tmp_path):
    inv = inventory(tmp_path, {"hosts.yml": HOSTS, "group_vars/gpu_client.yml": "common_user: x\n"})
    [finding] = ci.check_inventory(inv, SPECS)
    assert finding.scope == "group gpu_client"
    assert finding.message == "no such group in the inventory (did you mean gpu_clients?)"


def test_missing_hosts_yml(tmp_path):
    [finding] = ci.check_inventory(tmp_path, SPECS)
    assert "hosts.yml" in str(finding)


def test_every_role_variable_is_known():
    defaults = set()
    for path in (REPO / "roles").glob("*/defaults/main.yml"):
        import yaml

        defaults |= set(yaml.safe_load(path.read_text()) or {})
    assert defaults <= set(SPECS), sorted(defaults - set(SPECS))


@pytest.mark.parametrize(
    "inventory_dir", sorted(p.name for p in (REPO / "inventories").glob("*") if p.is_dir())
)
def test_the_repository_inventories_pass(inventory_dir):
    assert messages(ci.check_inventory(REPO / "inventories" / inventory_dir, SPECS)) == []


def test_command_line_exit_status(tmp_path):
    bad = inventory(tmp_path, {"hosts.yml": HOSTS, "group_vars/all.yml": "comon_user: x\n"})
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "check_inventories.py"), str(bad)],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "inv/group_vars/all.yml: group all: comon_user: no role declares this variable" in proc.stderr


def test_agent_sections_are_checked_with_the_agents_schema(tmp_path):
    inv = inventory(
        tmp_path,
        {
            "hosts.yml": HOSTS,
            "group_vars/agents.yml": (
                "fetchml_agent_nomad:\n  address: http://nomad:4646\n  datacenter: dc1\n"
                "fetchml_agent_package_management:\n  blocked_packages: requests\n"
            ),
        },
    )
    found = {f.key: f.message for f in ci.check_inventory(inv, SPECS)}
    assert set(found) == {
        "fetchml_agent_nomad.datacenter",
        "fetchml_agent_package_management.blocked_packages",
    }
    assert found["fetchml_agent_nomad.datacenter"].startswith("unknown key")
    assert "list" in found["fetchml_agent_package_management.blocked_packages"]


def test_templated_values_inside_agent_sections_pass(tmp_path):
    text = 'fetchml_agent_nomad:\n  address: "https://{{ groups.nomad_servers[0] }}:4646"\n  datacenters: [dc1]\n'
    inv = inventory(tmp_path, {"hosts.yml": HOSTS, "group_vars/agents.yml": text})
    assert ci.check_inventory(inv, SPECS) == []


def test_agent_users_verifier_format_and_legacy_hash(tmp_path):
    import hashlib

    legacy = hashlib.sha256(b"some-key").hexdigest()
    text = (
        "fetchml_agent_users:\n"
        f"  - {{name: old, api_key_sha256: {legacy}}}\n"
        "  - {name: typo, api_key_verifier: not-hex}\n"
        "  - {name: clear, api_key: s3cret-in-clear}\n"
        '  - {name: vaulted, api_key: "{{ vault_key }}"}\n'
        f"  - {{name: good, api_key_verifier: {'ab' * 32}}}\n"
    )
    inv = inventory(tmp_path, {"hosts.yml": HOSTS, "group_vars/agents.yml": text})
    found = {f.key: f.message for f in ci.check_inventory(inv, SPECS)}
    assert set(found) == {
        "fetchml_agent_users[0].api_key_sha256",
        "fetchml_agent_users[1].api_key_verifier",
        "fetchml_agent_users[2].api_key",
    }
    assert "could log in" in found["fetchml_agent_users[0].api_key_sha256"]
    assert "hash-key" in found["fetchml_agent_users[0].api_key_sha256"]
    assert "regex" in found["fetchml_agent_users[1].api_key_verifier"]
    assert "secret in clear" in found["fetchml_agent_users[2].api_key"]


def _encrypt(text: str, password_file: Path) -> str:
    proc = subprocess.run(
        [tool("ansible-vault"), "encrypt", "--vault-password-file", str(password_file), "--output", "-", "-"],
        input=text, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return proc.stdout


def test_files_encrypted_whole_are_checked_with_the_vault_password(tmp_path):
    password = tmp_path / "vault-pass"
    password.write_text("correct horse\n")
    secret = _encrypt("vault_nomad_gossip_key: abc\nnomad_gosip_key: def\n", password)
    inv = inventory(tmp_path, {"hosts.yml": HOSTS, "group_vars/all/main.yml": "common_user: x\n"})
    (inv / "group_vars/all/vault.yml").write_text(secret)

    # Without the password the file's keys cannot be read: nothing is reported against them, and the
    # caller learns which file was left out.
    skipped: list[str] = []
    assert ci.check_inventory(inv, SPECS, skipped=skipped) == []
    assert skipped == [str(inv / "group_vars/all/vault.yml")]

    # With it, a misspelled key inside is found; vault_ keys are fine (the whole file is encrypted).
    [finding] = ci.check_inventory(inv, SPECS, vault_password_file=password)
    assert (finding.file, finding.scope, finding.key) == (
        str(inv / "group_vars/all/vault.yml"),
        "group all",
        "nomad_gosip_key",
    )
    assert finding.message == "no role declares this variable (did you mean nomad_gossip_key?)"


def test_command_line_names_encrypted_files_it_could_not_check(tmp_path):
    password = tmp_path / "vault-pass"
    password.write_text("pw\n")
    inv = inventory(tmp_path, {"hosts.yml": HOSTS})
    (inv / "group_vars").mkdir()
    (inv / "group_vars/all.yml").write_text(_encrypt("vault_x: y\n", password))
    script = [sys.executable, str(REPO / "scripts" / "check_inventories.py"), str(inv)]
    proc = subprocess.run(script, capture_output=True, text=True, check=False, cwd=tmp_path)
    assert proc.returncode == 0
    assert "inv/group_vars/all.yml: encrypted with ansible-vault, not checked" in proc.stdout
    proc = subprocess.run(
        [*script, "--vault-password-file", str(password)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0 and "not checked" not in proc.stdout, proc.stdout + proc.stderr
