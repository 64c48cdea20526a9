"""The suite's leftover check (tests/leaks.py) fails a session that leaves a process behind."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytest_plugins = ["pytester"]

_LEAKY = """
import subprocess

def test_starts_and_forgets(tmp_path):
    subprocess.Popen(["sleep", "300"], cwd=tmp_path, start_new_session=True)
"""

_TIDY = """
import subprocess

def test_starts_and_stops(tmp_path):
    proc = subprocess.Popen(["sleep", "300"], cwd=tmp_path, start_new_session=True)
    proc.kill()
    proc.wait()
"""


@pytest.mark.parametrize(("source", "leaks"), [(_LEAKY, True), (_TIDY, False)], ids=["leaky", "tidy"])
def test_a_session_that_leaves_a_process_fails_and_the_process_is_ended(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, source: str, leaks: bool
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("FETCHML_TEST_LEAK_GRACE_S", "1")
    pytester.makepyfile(source)
    result = pytester.runpytest_subprocess("-p", "tests.leaks")
    assert result.ret == (pytest.ExitCode.TESTS_FAILED if leaks else pytest.ExitCode.OK)
    assert ("leftovers" in result.stdout.str()) is leaks
    left = subprocess.run(["pgrep", "-f", "sleep 300$"], capture_output=True, text=True).stdout
    assert not any(str(pytester.path) in _cwd(pid) for pid in left.split())


def _cwd(pid: str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""
