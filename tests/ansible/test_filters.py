"""The shared filters: the agent's conversions, reached through Ansible's templating."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from ansible.errors import AnsibleFilterError
from conftest import REPO, load_plugin, tool

from fetchml_agent.units import parse_size_mb

filters = load_plugin("filter", "fetchml").FilterModule().filters()


@pytest.mark.parametrize(
    ("raw", "mb"), [("8g", 8192), ("512m", 512), ("1t", 1048576), ("8Gi", 8192), (300, 300)]
)
def test_size_mb_is_the_agent_conversion(raw, mb):
    assert filters["size_mb"](raw) == mb == parse_size_mb(raw)


def test_size_mb_error_names_the_value():
    with pytest.raises(AnsibleFilterError, match="'eight gigs'"):
        filters["size_mb"]("eight gigs")
    with pytest.raises(AnsibleFilterError, match="memory"):
        filters["size_mb"]("x", "memory")


def test_size_str_round_trip():
    assert filters["size_str"](8192) == "8g"
    assert filters["size_str"]("1536") == "1536m"
    with pytest.raises(AnsibleFilterError):
        filters["size_str"]("8g")


def test_package_names():
    assert filters["pep503_name"]("Friendly.Bard") == "friendly-bard"
    assert filters["pep503_names"](["Requests", "requests", "os.system", "Scikit_Learn"]) == [
        "os-system",
        "requests",
        "scikit-learn",
    ]
    with pytest.raises(AnsibleFilterError):
        filters["pep503_names"]("requests")
    with pytest.raises(AnsibleFilterError):
        filters["pep503_name"]("")


def test_filters_load_through_ansible_cfg_from_another_directory(tmp_path):
    """ansible.cfg's filter_plugins finds the file, and the file finds fetchml_agent by itself."""
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_LOCALHOST_WARNING": "0",
    }
    expr = "{{ ('8g' | size_mb) ~ ' ' ~ (['Py.Torch', 'numpy'] | pep503_names | join(',')) }}"
    proc = subprocess.run(
        [tool("ansible"), "localhost", "-i", "localhost,", "-c", "local", "-e",
         f"ansible_python_interpreter={sys.executable}", "-m", "ansible.builtin.debug", "-a", f"msg={expr}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "8192 numpy,py-torch" in proc.stdout


SCAN = json.dumps([{"name": "Requests", "version": "2.32.5"}, {"name": "jupyterlab", "version": "4.6.6"}])


def test_startup_scan_argv_is_the_agents():
    from fetchml_agent.policy.scan import SCAN_ARGV

    assert filters["startup_scan_argv"]("") == list(SCAN_ARGV)


def test_startup_scan_refuses_a_blocked_package_with_the_default_policy():
    found = filters["startup_scan_findings"](SCAN, {}, {})
    assert found["packages"] == ["Requests==2.32.5"]
    assert "blocked packages" in found["message"]
    assert "FETCHML_JUPYTER_STARTUP_BLOCKED_PACKAGES" in found["details"]


def test_startup_scan_off_or_another_list_passes():
    assert (
        filters["startup_scan_findings"](SCAN, {}, {"FETCHML_JUPYTER_STARTUP_BLOCKED_PACKAGES": "off"})[
            "packages"
        ]
        == []
    )
    custom = {"FETCHML_JUPYTER_STARTUP_BLOCKED_PACKAGES": "paramiko"}
    assert (
        filters["startup_scan_findings"](SCAN, {"blocked_packages": ["requests"]}, custom)["packages"] == []
    )


def test_startup_scan_follows_the_configured_blocked_list():
    assert filters["startup_scan_findings"](SCAN, {"blocked_packages": ["JupyterLab"]}, {})["packages"] == [
        "jupyterlab==4.6.6"
    ]


def test_startup_scan_rejects_what_the_agent_rejects():
    with pytest.raises(AnsibleFilterError, match="package_management"):
        filters["startup_scan_findings"](SCAN, {"blocked_packages": "requests"}, {})
    with pytest.raises(AnsibleFilterError, match="package list"):
        filters["startup_scan_findings"]("not json", {}, {})
