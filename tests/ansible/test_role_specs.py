"""Every role declares each variable once: defaults/main.yml and meta/argument_specs.yml agree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

ROLES = sorted(p.name for p in (REPO / "roles").iterdir() if (p / "tasks" / "main.yml").exists())


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


@pytest.mark.parametrize("role", ROLES)
def test_defaults_and_argument_specs_agree(role):
    base = REPO / "roles" / role
    defaults = _load(base / "defaults" / "main.yml")
    options = _load(base / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    assert set(defaults) == set(options), (
        f"only in defaults: {sorted(set(defaults) - set(options))}; "
        f"only in argument_specs: {sorted(set(options) - set(defaults))}"
    )
    for name, spec in options.items():
        assert name.startswith(role + "_"), f"{name} is not prefixed with {role}_"
        assert spec.get("description"), f"{name} has no description"
        default = defaults[name]
        if isinstance(default, str):
            default = " ".join(default.split())  # folded YAML strings
        documented = spec.get("default")
        if isinstance(documented, str):
            documented = " ".join(documented.split())
        assert documented == default, f"{name}: argument_specs says {documented!r}, defaults say {default!r}"


@pytest.mark.parametrize("role", ROLES)
def test_role_layout(role):
    base = REPO / "roles" / role
    tasks = _load(base / "tasks" / "main.yml")
    assert tasks[0]["ansible.builtin.import_tasks"] == "asserts.yml", "asserts.yml comes first"
    for part in (
        "README.md",
        "meta/main.yml",
        "molecule/default/molecule.yml",
        "molecule/default/converge.yml",
        "molecule/default/verify.yml",
    ):
        assert (base / part).exists(), f"{role} lacks {part}"
    readme = (base / "README.md").read_text()
    for name in _load(base / "defaults" / "main.yml"):
        assert f"`{name}`" in readme, f"{role}/README.md does not document {name}"


def test_readme_tables_are_current():
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "role_readme.py"), "--check"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
