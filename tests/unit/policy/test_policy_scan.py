"""The startup scan against a real environment and pip's JSON listing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fetchml_agent.errors import InvalidArgument, PolicyDenied
from fetchml_agent.policy.scan import (
    SCAN_ARGV,
    blocked_installed,
    check_startup,
    installed_from_json,
    installed_from_path,
)
from fetchml_agent.policy.schema import PackagePolicy, apply_environ

PIP_LIST = json.dumps([{"name": "Requests", "version": "2.31.0"}, {"name": "numpy", "version": "1.26.4"},
                       {"name": "urllib3", "version": "2.0.7"}, {"name": "httpx", "version": "0.28.1"}])


def _dist(site: Path, name: str, version: str) -> None:
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def test_blocked_packages_stop_the_start_and_the_message_says_what_to_do() -> None:
    with pytest.raises(PolicyDenied) as info:
        check_startup(installed_from_json(PIP_LIST), PackagePolicy(), workspace="ds1")
    err = info.value
    assert err.message == ("workspace ds1 cannot start: its environment already contains blocked packages: "
                           "Requests 2.31.0, urllib3 2.0.7")
    assert "FETCHML_JUPYTER_STARTUP_BLOCKED_PACKAGES" in err.details and "off" in err.details
    assert err.fields["packages"] == ["Requests==2.31.0", "urllib3==2.0.7"]
    assert err.fields["rule"] == "startup_blocked_packages"


def test_seed_example_off_lets_an_image_with_requests_start() -> None:
    env = {"FETCHML_JUPYTER_BLOCKED_PACKAGES": "requests,urllib3,httpx",
           "FETCHML_JUPYTER_STARTUP_BLOCKED_PACKAGES": "off"}
    check_startup(installed_from_json(PIP_LIST), apply_environ(PackagePolicy(), env))
    # without "off" the replaced blocked list is what the scan looks for
    with pytest.raises(PolicyDenied, match=r"httpx 0\.28\.1"):
        check_startup(installed_from_json(PIP_LIST), apply_environ(PackagePolicy(), env | {
            "FETCHML_JUPYTER_STARTUP_BLOCKED_PACKAGES": "httpx"}))


def test_scan_of_a_site_packages_directory(tmp_path: Path) -> None:
    _dist(tmp_path, "Os.System", "0.1")
    _dist(tmp_path, "six", "1.16.0")
    assert installed_from_path([tmp_path]) == [("Os.System", "0.1"), ("six", "1.16.0")]
    assert blocked_installed(installed_from_path([tmp_path]), PackagePolicy().startup_scan_list) == [
        ("Os.System", "0.1")]


def test_scan_argv_runs_in_a_real_interpreter_and_reads_like_pip_list(tmp_path: Path) -> None:
    _dist(tmp_path, "requests", "2.0.0")
    out = subprocess.run([sys.executable, *SCAN_ARGV], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}).stdout
    installed = installed_from_json(out)
    assert ("requests", "2.0.0") in installed
    assert any(n.lower() == "pip" for n, _ in installed)  # the interpreter's own distributions too


def test_unreadable_listing_is_an_error_not_a_pass() -> None:
    with pytest.raises(InvalidArgument, match="startup scan could not read"):
        installed_from_json("Package Version\n------- -------")
