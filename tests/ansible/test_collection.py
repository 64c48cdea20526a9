"""The suite as the collection fetchml.platform: `make collection` builds it, `ansible-galaxy collection
install` puts it in a temporary path offline, and a playbook naming the roles by FQCN runs against it.

Everything runs from a temporary directory with an empty ansible.cfg, so nothing of this working tree
(its roles_path, plugin paths or collections/ links) can stand in for the installed collection.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from conftest import REPO, tool

import fetchml_agent

ROLES = sorted(p.name for p in (REPO / "roles").iterdir() if (p / "tasks" / "main.yml").exists())
DEV_INVENTORY = REPO / "inventories" / "dev" / "hosts.yml"


@pytest.fixture(scope="module")
def installed(built_collection: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The collection installed offline into a temporary path; the environment that finds it there."""
    home = tmp_path_factory.mktemp("consumer")
    (home / "ansible.cfg").write_text("[defaults]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "MOLECULE_"))}
    env.update(
        ANSIBLE_CONFIG=str(home / "ansible.cfg"),
        ANSIBLE_COLLECTIONS_PATH=str(home / "collections"),
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
        HOME=str(home),
    )
    proc = subprocess.run(
        [tool("ansible-galaxy"), "collection", "install", "--offline", "-p", str(home / "collections"), str(built_collection)],
        cwd=home, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "fetchml.platform:" in proc.stdout and "was installed successfully" in proc.stdout
    return {"cwd": str(home), **env}


def _run(argv: list[str], installed: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = dict(installed)
    cwd = env.pop("cwd")
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_galaxy_yml_names_the_collection_at_the_agents_version():
    meta = yaml.safe_load((REPO / "galaxy.yml").read_text())
    assert (meta["namespace"], meta["name"]) == ("fetchml", "platform")
    assert meta["version"] == fetchml_agent.__version__
    assert (REPO / meta["readme"]).exists()


def test_the_tarball_holds_the_collection_and_not_the_repository(built_collection: Path):
    with tarfile.open(built_collection) as tar:
        names = set(tar.getnames())
        links = {m.name: m.linkname for m in tar.getmembers() if m.issym()}
    for role in ROLES:
        assert f"roles/{role}/tasks/main.yml" in names
        assert f"roles/{role}/meta/argument_specs.yml" in names
        assert not any(n.startswith(f"roles/{role}/molecule") for n in names)
    for plugin in (
        "plugins/modules/gpu_facts.py",
        "plugins/modules/fetchml_workspace.py",
        "plugins/inventory/nomad_nodes.py",
        "plugins/filter/fetchml.py",
        "plugins/callback/plan.py",
        "playbooks/site.yml",
        "meta/runtime.yml",
        "scripts/check_inventories.py",
        "scripts/gitops_plan.py",
        "examples/gitops/Makefile",
    ):
        assert plugin in names
    # module_utils and the firewall template link into fetchml_agent/, which travels with them.
    assert links["plugins/module_utils/fetchml_gpus.py"] == "../../fetchml_agent/gpus.py"
    assert "fetchml_agent/gpus.py" in names and "fetchml_agent/netpolicy/fetchml.nft.j2" in names
    for absent in (
        "tests",
        "inventories",
        ".venv",
        "benchmarks",
        "pyproject.toml",
        "Makefile",
        "collections",
    ):
        assert not any(n == absent or n.startswith(absent + "/") for n in names), absent


def test_a_playbook_with_fqcn_roles_syntax_checks_against_the_dev_inventory(installed):
    plays = [
        {
            "name": "Nomad servers",
            "hosts": "nomad_servers",
            "roles": ["fetchml.platform.common", "fetchml.platform.nomad"],
        },
        {
            "name": "GPU clients",
            "hosts": "gpu_clients",
            "roles": [
                f"fetchml.platform.{r}" for r in ("common", "nvidia_gpu", "docker", "nomad", "network_policy")
            ],
        },
        {"name": "Images", "hosts": "gpu_clients", "roles": [{"role": "fetchml.platform.workspace_images"}]},
        {
            "name": "Agent",
            "hosts": "agents",
            "roles": ["fetchml.platform.encrypted_storage", "fetchml.platform.common", "fetchml.platform.fetchml_agent"],
        },
    ]
    named = {r if isinstance(r, str) else r["role"] for play in plays for r in play["roles"]}
    assert named == {f"fetchml.platform.{r}" for r in ROLES}
    playbook = Path(installed["cwd"]) / "fqcn.yml"
    playbook.write_text(yaml.safe_dump(plays, sort_keys=False))

    proc = _run(
        [tool("ansible-playbook"), "-i", str(DEV_INVENTORY), str(playbook), "--syntax-check"], installed
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The roles really came from the installed collection: their tasks list under their FQCN.
    proc = _run(
        [tool("ansible-playbook"), "-i", str(DEV_INVENTORY), str(playbook), "--list-tasks"], installed
    )
    assert proc.returncode == 0, proc.stderr
    for role in ROLES:
        assert f"fetchml.platform.{role} : " in proc.stdout, role

    # A role the collection does not have fails the same check (the check above is not vacuous).
    playbook.write_text(yaml.safe_dump([{"name": "x", "hosts": "all", "roles": ["fetchml.platform.nomads"]}]))
    proc = _run(
        [tool("ansible-playbook"), "-i", str(DEV_INVENTORY), str(playbook), "--syntax-check"], installed
    )
    assert proc.returncode != 0 and "fetchml.platform.nomads" in proc.stdout + proc.stderr


def test_the_collections_own_playbook_runs_its_roles(installed):
    proc = _run(
        [tool("ansible-playbook"), "-i", str(DEV_INVENTORY), "fetchml.platform.site", "--list-tasks"],
        installed,
    )
    assert proc.returncode == 0, proc.stderr
    assert "fetchml.platform.fetchml_agent : " in proc.stdout


def test_plugins_work_from_the_installed_collection(installed):
    # A module (with its module_utils packed from the collection), run for real on this machine.
    proc = _run([tool("ansible"), "localhost", "-c", "local", "-m", "fetchml.platform.gpu_facts"], installed)
    assert proc.returncode == 0 and '"fetchml_gpus"' in proc.stdout, proc.stdout + proc.stderr
    # A filter (it imports fetchml_agent from the collection).
    proc = _run(
        [
            tool("ansible"),
            "localhost",
            "-c",
            "local",
            "-m",
            "debug",
            "-a",
            "msg={{ '8g' | fetchml.platform.size_mb }}",
        ],
        installed,
    )
    assert proc.returncode == 0 and '"msg": 8192' in proc.stdout, proc.stdout + proc.stderr
    # The inventory plugin and the callback are documented under their collection names.
    for kind, name in (("inventory", "nomad_nodes"), ("callback", "plan"), ("module", "fetchml_workspace")):
        proc = _run([tool("ansible-doc"), "-t", kind, f"fetchml.platform.{name}"], installed)
        assert proc.returncode == 0 and "[WARNING]" not in proc.stderr, proc.stderr
        assert "ansible_collections/fetchml/platform/plugins" in proc.stdout
