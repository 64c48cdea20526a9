"""examples/gitops/, the inventory-repository template: its pipelines validate against the public GitHub
workflow and GitLab CI schemas and call only make targets its Makefile has; its vault files are
encrypted; and with the collection installed from the tarball, its own `make schema syntax` passes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, tool

EXAMPLE = REPO / "examples" / "gitops"
GITHUB = EXAMPLE / ".github" / "workflows" / "gitops.yml"
GITLAB = EXAMPLE / ".gitlab-ci.yml"
TEMPLATE_PASSWORD = "fetchml-gitops-template"
ENVIRONMENTS = ("staging", "production")


@pytest.mark.parametrize(
    ("path", "schema"),
    [(GITHUB, ["vendor.github-workflows"]), (GITLAB, ["vendor.gitlab-ci", "--data-transform", "gitlab-ci"])],
    ids=["github", "gitlab"],
)
def test_pipelines_validate_against_the_public_schemas(path: Path, schema: list[str]):
    # The schemas are the ones check-jsonschema vendors (no network): GitHub's workflow schema and
    # GitLab's CI schema as published by SchemaStore and GitLab.
    proc = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", *schema, str(path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _scripts(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for item in node:
            yield from _scripts(item)


def _github_commands() -> list[str]:
    workflow = yaml.safe_load(GITHUB.read_text())
    return [step["run"] for job in workflow["jobs"].values() for step in job["steps"] if "run" in step]


def _gitlab_commands() -> list[str]:
    pipeline = yaml.safe_load(GITLAB.read_text())
    found: list[str] = []
    for job in pipeline.values():
        if isinstance(job, dict):
            for key in ("before_script", "script", "after_script"):
                found += _scripts(job.get(key))
    return found


# `make` where a shell command starts: a line's start, or after ; && || | or (.
_MAKE = re.compile(r"(?:^|[;&|(])[ \t]*make[ \t]+([^;&|>\n)]*)", re.MULTILINE)
_EXPRESSION = re.compile(r"\$\{\{.*?\}\}")


def make_targets(commands: list[str]) -> set[str]:
    """Every target named on a `make` command line (VAR=value arguments and options left out)."""
    targets: set[str] = set()
    for command in commands:
        for match in _MAKE.finditer(_EXPRESSION.sub("X", command)):
            targets |= {t for t in match.group(1).split() if "=" not in t and not t.startswith("-")}
    return targets


def test_make_targets_are_found_on_make_command_lines():
    assert make_targets(
        [
            "make deps && make plan INVENTORY=inventories/${{ matrix.environment }}",
            "echo; make -s drift V=1 > out",
            "apt-get install -y make git",
        ]
    ) == {
        "deps",
        "plan",
        "drift",
    }


@pytest.mark.parametrize("source", ["github", "gitlab"])
def test_pipeline_steps_call_only_targets_the_makefile_has(source: str):
    commands = _github_commands() if source == "github" else _gitlab_commands()
    targets = make_targets(commands)
    # Every stage of the workflow is there: setup, PR checks and plan, apply, drift.
    assert {"deps", "check", "plan", "apply", "drift"} <= targets
    for target in sorted(targets):
        proc = subprocess.run(
            ["make", "-n", "-C", str(EXAMPLE), target, "INVENTORY=inventories/staging"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, f"{source}: make {target}: {proc.stderr}"


def test_apply_reaches_production_only_after_staging_and_an_approval():
    jobs = yaml.safe_load(GITHUB.read_text())["jobs"]
    assert jobs["apply-production"]["needs"] == "apply-staging"
    assert jobs["apply-production"]["environment"] == "production"  # required reviewers approve it
    assert jobs["drift"]["if"].startswith("github.event_name == 'schedule'")
    gitlab = yaml.safe_load(GITLAB.read_text())
    assert gitlab["apply:production"]["needs"] == ["apply:staging"]
    assert gitlab["apply:production"]["rules"][0]["when"] == "manual"
    assert gitlab["apply:production"]["rules"][0]["allow_failure"] is False


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_secrets_are_vault_encrypted_with_the_template_password(environment: str, tmp_path: Path):
    vault = EXAMPLE / "inventories" / environment / "group_vars" / "all" / "vault.yml"
    assert vault.read_text().startswith("$ANSIBLE_VAULT;1.1;AES256\n")
    password = tmp_path / "pw"
    password.write_text(TEMPLATE_PASSWORD + "\n")
    proc = subprocess.run(
        [tool("ansible-vault"), "view", "--vault-password-file", str(password), str(vault)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    secrets = yaml.safe_load(proc.stdout)
    assert secrets and all(key.startswith("vault_") for key in secrets)
    # Every vault_ variable the clear-text files refer to is defined in the encrypted file.
    referred: set[str] = set()
    for path in (EXAMPLE / "inventories" / environment).rglob("*.yml"):
        if path != vault:
            referred |= set(re.findall(r"\bvault_[a-z0-9_]+", path.read_text()))
    assert referred and referred <= set(secrets)


@pytest.fixture(scope="module")
def template(built_collection: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A copy of the template with the collection installed from the tarball, as `make collections` does."""
    repo = tmp_path_factory.mktemp("inventory-repo") / "repo"
    shutil.copytree(EXAMPLE, repo, symlinks=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "MOLECULE_"))}
    # As in CI: Ansible runs ci/vault-password.sh, which prints the secret.
    env.update(
        ANSIBLE_VAULT_PASSWORD_FILE="ci/vault-password.sh",
        ANSIBLE_VAULT_PASSWORD=TEMPLATE_PASSWORD,
        HOME=str(repo.parent),
    )
    proc = subprocess.run(
        ["make", "collections", f"COLLECTION_TARBALL={built_collection}", f"VENV={Path(sys.executable).parent.parent}"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (repo / "collections/ansible_collections/fetchml/platform/scripts/gitops_plan.py").exists()
    return repo, env


def _make(template: tuple[Path, dict[str, str]], *targets: str) -> subprocess.CompletedProcess[str]:
    repo, env = template
    return subprocess.run(
        ["make", *targets, f"VENV={Path(sys.executable).parent.parent}"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def test_the_template_passes_its_own_checks(template):
    proc = _make(template, "schema", "lint", "syntax")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for environment in ENVIRONMENTS:
        assert f"inventories/{environment}: OK" in proc.stdout
        assert f"--- inventories/{environment}" in proc.stdout
    # The vault files were decrypted and checked, not skipped.
    assert "not checked" not in proc.stdout


def test_a_bad_value_in_the_template_names_file_key_and_allowed_values(template):
    repo, _ = template
    main = repo / "inventories" / "staging" / "group_vars" / "all" / "main.yml"
    original = main.read_text()
    try:
        main.write_text(original + "common_time_sync: ntpd\nnomad_node_clas: t4\n")
        proc = _make(template, "schema")
    finally:
        main.write_text(original)
    assert proc.returncode != 0
    assert (
        "inventories/staging/group_vars/all/main.yml: group all: common_time_sync: "
        "unallowed value ntpd (allowed: systemd-timesyncd, chrony, none)"
    ) in proc.stderr
    assert (
        "inventories/staging/group_vars/all/main.yml: group all: nomad_node_clas: "
        "no role declares this variable (did you mean nomad_node_class?)"
    ) in proc.stderr


def test_docs_name_only_variables_the_roles_declare():
    sys.path.insert(0, str(REPO / "scripts"))
    import check_inventories

    known = set(check_inventories.load_role_specs())
    text = (REPO / "docs" / "gitops.md").read_text().split("<!-- group-variables -->")[0]
    prefixes = tuple(f"{p.name}_" for p in (REPO / "roles").iterdir())
    groups = {"nomad_servers", "gpu_clients", "agents"}
    named = {m for m in re.findall(r"`([a-z0-9_]+)`", text) if m.startswith(prefixes) and m not in groups}
    assert len(named) > 20
    assert named <= known, sorted(named - known)
