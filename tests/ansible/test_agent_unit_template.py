"""The fetchml_agent role's systemd unit, rendered by Ansible: the capabilities each runtime gets.

The local runtime's unit holds exactly the capabilities the agent checks before it switches users
(fetchml_agent/privilege.py), ambient and bounding, with the hardening that still works with them;
``local.isolation: none`` grants none; docker gets CAP_NET_ADMIN only. agent.yaml names the
workspaces directory the unit lets the agent write.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from test_agent_config_template import ROLE, _play

from fetchml_agent.privilege import FIREWALL, SWITCH_USERS


def _render(tmp_path: Path, runtime: str, local: str = "{}") -> tuple[dict[str, list[str]], dict]:
    unit, config = tmp_path / "agent.service", tmp_path / "agent.yaml"
    proc = _play(
        tmp_path,
        "[{name: admin, role: admin, api_key: unit-test-key-0123456789}]",
        f"""\
        - name: Render the unit and agent.yaml as the role does.
          ansible.builtin.template:
            src: "{ROLE}/templates/{{{{ item.src }}}}"
            dest: "{{{{ item.dest }}}}"
            mode: "0600"
          loop:
            - {{src: fetchml-agent.service.j2, dest: {unit}}}
            - {{src: agent.yaml.j2, dest: {config}}}
          vars:
            fetchml_agent_local: {local}
        """,
        runtime=runtime,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    keys: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            keys.setdefault(key, []).append(value)
    return keys, yaml.safe_load(config.read_text())


def test_local_unit_holds_exactly_the_capabilities_the_agent_checks(tmp_path: Path) -> None:
    unit, config = _render(tmp_path, "local")
    want = set(SWITCH_USERS + FIREWALL)
    assert set(unit["AmbientCapabilities"][0].split()) == want, unit
    assert set(unit["CapabilityBoundingSet"][0].split()) == want, unit
    assert unit["User"] == ["fetchml"] and unit["NoNewPrivileges"] == ["yes"] and unit["ProtectSystem"] == ["strict"]
    assert unit["RestrictSUIDSGID"] == ["yes"] and unit["ProtectHome"] == ["yes"]
    workspaces = config["local"]["workspaces_dir"]
    assert workspaces == "/var/lib/fetchml-workspaces"
    assert unit["ReadWritePaths"][0].split() == ["/var/lib/fetchml/agent", workspaces]


def test_local_unit_without_firewall_or_isolation(tmp_path: Path) -> None:
    unit, _ = _render(tmp_path, "local", "{firewall: false}")
    assert set(unit["AmbientCapabilities"][0].split()) == set(SWITCH_USERS), unit
    unit, config = _render(tmp_path, "local", "{isolation: none}")
    assert unit["AmbientCapabilities"] == [""] and unit["CapabilityBoundingSet"] == [""], unit
    assert "workspaces_dir" not in config["local"] and unit["ReadWritePaths"][0].split() == ["/var/lib/fetchml/agent"]


@pytest.mark.parametrize(("runtime", "caps"), [("docker", "CAP_NET_ADMIN"), ("nomad", "")])
def test_other_runtimes_keep_their_capabilities(tmp_path: Path, runtime: str, caps: str) -> None:
    unit, config = _render(tmp_path, runtime)
    assert unit["AmbientCapabilities"] == [caps] and unit["CapabilityBoundingSet"] == [caps], unit
    assert "local" not in config


def test_workspace_owners_need_a_uid_of_their_own_in_the_range(tmp_path: Path) -> None:
    proc = _play(
        tmp_path,
        "[{name: admin, role: admin, api_key: unit-test-key-0123456789}]",
        textwrap.dedent(f"""\
        - name: The role's asserts.
          ansible.builtin.import_tasks: {ROLE}/tasks/asserts.yml
          vars:
            fetchml_agent_workspace_owners: [{{name: alice, uid: 61000}}, {{name: bob, uid: 1000}}]
        """),
    )
    assert proc.returncode != 0
    assert "each entry needs a name and its own uid in local.uid_range 61000-61999" in proc.stdout, proc.stdout
