"""A run's environment: the lock queued with the snapshot and the step that installs it
(fetchml_agent/experiments/environment.py, env_step.py), with real pip against a local index."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fetchml_agent.experiments.environment import LOCK_DIR, REPORT, environment_view, lock_text, write_lock
from tests.integration.packages.world import ServerThread, make_upstream, make_wheelhouse


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_wheelhouse(tmp_path_factory.mktemp("wheels"))


@pytest.fixture(scope="module")
def index(wheels: Path) -> Iterator[ServerThread]:
    with make_upstream(wheels) as server:
        yield server


def test_the_lock_pins_each_distribution_once_sorted_and_nothing_is_written_without_one(tmp_path: Path) -> None:
    assert lock_text([("beta", "1.0"), ("Alpha", "2.0"), ("beta", "1.0")]).splitlines()[1:] == ["Alpha==2.0", "beta==1.0"]
    assert write_lock(tmp_path / "none", []) is None and not (tmp_path / "none").exists()
    written = write_lock(tmp_path / "work", [("beta", "1.0"), ("alpha", "2.0")])
    lock = (tmp_path / "work" / LOCK_DIR / "environment.lock").read_bytes()
    assert written == {"lock": hashlib.sha256(lock).hexdigest(), "packages": 2}
    assert (tmp_path / "work" / LOCK_DIR / "environment_step.py").is_file()
    # before the run reports, clients see what it will install
    assert environment_view(tmp_path) == {**written, "status": "pending"}
    assert environment_view(tmp_path / "elsewhere") is None
    # with every file's hash pip checks each one; one without a hash (an older record) drops them all
    assert lock_text([("beta", "1.0", "ab" * 32), ("alpha", "2.0", "cd" * 32)]).splitlines()[1:] == [
        f"alpha==2.0 --hash=sha256:{'cd' * 32}", f"beta==1.0 --hash=sha256:{'ab' * 32}"]
    assert lock_text([("beta", "1.0", "ab" * 32), ("alpha", "2.0", "")]).splitlines()[1:] == ["alpha==2.0", "beta==1.0"]


def _step(work: Path, report: Path, index: ServerThread, cache: Path | None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIP_INDEX_URL": f"{index.url}/simple/", "PIP_NO_CACHE_DIR": "1", "NOMAD_TASK_DIR": str(work)}
    env.pop("FETCHML_ENV_CACHE", None)
    if cache is not None:
        env["FETCHML_ENV_CACHE"] = str(cache)
    return subprocess.run([sys.executable, str(work / LOCK_DIR / "environment_step.py"),
                           str(work / LOCK_DIR / "environment.lock"), str(report)],
                          env=env, capture_output=True, text=True, timeout=300)


def test_the_step_installs_once_per_lock_and_the_notebook_imports_from_it(tmp_path: Path, index: ServerThread) -> None:
    work, cache = tmp_path / "work", tmp_path / "cache"
    write_lock(work, [("beta", "1.0"), ("alpha", "2.0")])
    reports: list[dict[str, Any]] = []
    for n in range(2):
        cp = _step(work, tmp_path / f"report-{n}.json", index, cache)
        assert cp.returncode == 0, cp.stderr
        reports.append(json.loads((tmp_path / f"report-{n}.json").read_text()))
        path = cp.stdout.strip()
        assert path.split(os.pathsep)[0].startswith(str(cache))
        imported = subprocess.run([sys.executable, "-c", "import beta_mod, alpha_mod; print(beta_mod.VERSION, alpha_mod.VERSION)"],
                                  env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True)
        assert imported.stdout.split() == ["1.0", "2.0"], imported.stderr
    assert [r["cached"] for r in reports] == [False, True] and reports[0]["lock"] == reports[1]["lock"]
    assert reports[0]["status"] == "ok" and reports[0]["cache"] == "shared" and reports[0]["packages"] == 2
    assert [p.name for p in cache.iterdir()] == [reports[0]["lock"][:32]]  # no partial directory left


def test_hashes_in_the_lock_are_checked(tmp_path: Path, index: ServerThread, wheels: Path) -> None:
    wheel = next(wheels.glob("alpha-2.0-*.whl"))
    good = hashlib.sha256(wheel.read_bytes()).hexdigest()
    for sha, code in ((good, 0), ("0" * 64, 3)):
        work = tmp_path / sha[:4]
        write_lock(work, [("alpha", "2.0", sha)])
        cp = _step(work, tmp_path / f"{sha[:4]}.json", index, tmp_path / "cache")
        assert cp.returncode == code, cp.stderr
    report = json.loads((tmp_path / "0000.json").read_text())
    assert report["status"] == "failed" and "HASH" in report["error"].upper(), report


def test_a_lock_the_index_cannot_serve_fails_the_step_naming_pips_error(tmp_path: Path, index: ServerThread) -> None:
    work = tmp_path / "work"
    write_lock(work, [("alpha", "9.9")])
    cp = _step(work, tmp_path / REPORT, index, None)  # no cache volume: the task's own directory
    assert cp.returncode == 3 and "the run's environment could not be installed" in cp.stderr
    report = json.loads((tmp_path / REPORT).read_text())
    assert report["status"] == "failed" and report["cache"] == "task" and "alpha==9.9" in report["error"], report
    assert not [p for p in (work / "fetchml-env").iterdir()]  # the partial install is gone
    assert environment_view(tmp_path) == report
