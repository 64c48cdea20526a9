"""A real pip installs through the filtering index into a real venv (no network: 127.0.0.1 only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.index.indexworld import Venv, World, pip_install

pytestmark = pytest.mark.slow


def test_allowed_install_pulls_its_dependency_through_the_index(world: World, venv: Venv, tmp_path: Path) -> None:
    before = sum(world.upstream_app.state.hits[p] for p in list(world.upstream_app.state.hits))
    result = pip_install(world, venv, "ws", "beta", tmp=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Looking in indexes: {world.index_url('ws')}" in result.stdout
    assert venv.installed() == {"alpha": "2.0", "beta": "1.0"}
    after = sum(world.upstream_app.state.hits.values())
    assert after > before  # it really came from the upstream, through the agent
    cached = {p.name.split("-", 1)[1] for p in (world.cache_dir / "files").glob("*/*")}
    assert {"beta-1.0-py3-none-any.whl.metadata", "alpha-2.0-py3-none-any.whl"} <= cached


def test_blocked_install_fails_and_pip_shows_the_policy_reason(world: World, venv: Venv, tmp_path: Path) -> None:
    result = pip_install(world, venv, "ws", "requests", tmp=tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "requests is blocked by the package policy (blocked_packages)" in out
    assert "No matching distribution found for requests" in out
    assert venv.installed() == {}


def test_a_dependency_on_a_blocked_package_fails_the_whole_install(world: World, venv: Venv, tmp_path: Path) -> None:
    result = pip_install(world, venv, "ws", "gamma", tmp=tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "requests is blocked by the package policy" in out and "gamma" in out
    assert venv.installed() == {}


def test_approval_required_and_approved_version_ranges(world: World, venv: Venv, tmp_path: Path) -> None:
    denied = pip_install(world, venv, "ws", "tensorflow", tmp=tmp_path)
    assert denied.returncode != 0
    assert "tensorflow needs an approved request" in denied.stdout + denied.stderr
    # custom-package is approved for >=1.0,<2: pip sees 1.0 and 1.5 only
    ok = pip_install(world, venv, "ws", "custom-package", tmp=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert venv.installed() == {"custom-package": "1.5"}
    outside = pip_install(world, venv, "ws", "custom-package==2.5", tmp=tmp_path)
    assert outside.returncode != 0 and "from versions: 1.0, 1.5" in outside.stdout + outside.stderr


def test_the_same_package_installs_where_the_policy_allows_it(world: World, venv: Venv, tmp_path: Path) -> None:
    # "open" has the seed's default policy: tensorflow needs no approval there
    result = pip_install(world, venv, "open", "tensorflow", "six==1.16.0", tmp=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert venv.installed() == {"six": "1.16.0", "tensorflow": "2.15.0"}

