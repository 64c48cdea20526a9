"""The developer entry points: `make lint` and `make molecule` install the tools they run (a fresh
clone has only what `make test` needs), and installing the package prints no setuptools warnings."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _dry_run(*targets: str) -> list[str]:
    """The commands ``make -n TARGET`` would run, for a clone whose venv does not exist yet."""
    cp = subprocess.run(["make", "-n", "-C", str(ROOT), "VENV=/nonexistent/venv", *targets],
                        capture_output=True, text=True, check=True, timeout=60)
    return cp.stdout.splitlines()


def _first(lines: list[str], pattern: str) -> int:
    return next(i for i, line in enumerate(lines) if re.search(pattern, line))


@pytest.mark.parametrize(("target", "tool"), [("lint", r"/yamllint "), ("lint-ansible", r"ansible-lint"),
                                              ("molecule-common", r"/molecule test"), ("test-ansible", r"pytest")])
def test_ansible_tools_are_installed_before_they_run(target: str, tool: str) -> None:
    lines = _dry_run(target)
    install = _first(lines, r"EXTRAS=dev,ansible scripts/dev\.sh venv")
    assert install < _first(lines, tool), "\n".join(lines)


def test_make_test_needs_only_the_dev_extra() -> None:
    lines = _dry_run("test")
    assert any(re.search(r"scripts/dev\.sh venv", line) for line in lines)
    assert not any("ansible" in line for line in lines), "\n".join(lines)


@pytest.mark.slow
def test_an_editable_install_prints_no_setuptools_warnings(tmp_path: Path) -> None:
    """What `make dev-up` runs (pip install -e, build isolation), into an empty environment."""
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=120)
    cp = subprocess.run([sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install",
                         "--no-deps", "--disable-pip-version-check", "-e", str(ROOT)],
                        capture_output=True, text=True, timeout=600)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    output = cp.stdout + cp.stderr
    found = re.findall(r"^.*(?:BuildBackendWarning|SetuptoolsDeprecationWarning|SetuptoolsWarning|deprecated).*$",
                       output, re.M)
    assert found == [], output
