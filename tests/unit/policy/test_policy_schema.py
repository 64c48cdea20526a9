"""The policy document: schema errors, defaults, tightening and the environment overrides."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fetchml_agent.errors import InvalidArgument
from fetchml_agent.policy.schema import (
    DEFAULT_TRUSTED_CHANNELS,
    PACKAGE_MANAGEMENT_SCHEMA,
    PackagePolicy,
    WorkspaceSecurity,
    apply_environ,
    effective_policy,
    load_workspace_security_file,
    policy_from_document,
    workspace_security_from_document,
)

SEED_WORKSPACE_SECURITY = """\
# workspace-security.yaml
package_management:
  trusted_channels:
    - conda-forge
    - defaults
    - pytorch
    - nvidia
    - company-internal  # Custom channel
  blocked_packages:
    - requests
    - urllib3
    - socket
    - subprocess
    - os.system
  approval_required:
    - tensorflow
    - pytorch
    - custom-package
  allowlist:
    - numpy
    - pandas
    - scikit-learn
    - matplotlib
"""


def test_defaults_are_the_seeds() -> None:
    p = policy_from_document(None, source="agent.yaml")
    assert p.trusted_channels == ("conda-forge", "defaults", "pytorch", "nvidia") == DEFAULT_TRUSTED_CHANNELS
    assert p.blocked_packages == {"requests", "urllib3", "socket", "subprocess", "os-system"}
    assert p.approval_required == frozenset() and p.allowlist is None
    assert p.mode == "enforce" and p.startup_scan_list == p.blocked_packages
    assert p == PackagePolicy()


def test_global_document_keys() -> None:
    p = policy_from_document(
        {"blocked_packages": ["Aiohttp", "telnetlib"], "mode": "dry_run", "startup_blocked_packages": "off",
         "trusted_channels": ["https://mirror.invalid/conda-forge/", "conda-forge"], "allowlist": ["NumPy"]},
        source="agent.yaml")
    assert p.blocked_packages == {"aiohttp", "telnetlib"}
    assert p.dry_run and not p.startup_scan and p.startup_scan_list == frozenset()
    assert p.trusted_channels == ("https://mirror.invalid/conda-forge", "conda-forge") and p.allowlist == {"numpy"}
    assert p.to_dict()["startup_blocked_packages"] == "off"
    q = policy_from_document({"startup_blocked_packages": ["httpx"]}, source="agent.yaml")
    assert q.startup_scan_list == {"httpx"} and q.to_dict()["startup_blocked_packages"] == ["httpx"]


@pytest.mark.parametrize(("doc", "key"), [
    ({"blocked_packages": "requests"}, "package_management.blocked_packages"),
    ({"blocked_packages": ["req uests"]}, "package_management.blocked_packages[0]"),
    ({"blocked_packages": ["ok", "bad\n"]}, "package_management.blocked_packages[1]"),
    ({"trusted_channels": ["conda forge"]}, "package_management.trusted_channels[0]"),
    ({"mode": "audit"}, "package_management.mode"),
    ({"startup_blocked_packages": "on"}, "package_management.startup_blocked_packages"),
    ({"blocklist": ["x"]}, "package_management.blocklist"),
])
def test_schema_errors_name_the_file_and_the_key(doc: dict, key: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        policy_from_document(doc, source="/etc/fetchml/agent.yaml")
    assert str(info.value).startswith(f"/etc/fetchml/agent.yaml: invalid {key}:")
    assert info.value.fields["file"] == "/etc/fetchml/agent.yaml" and info.value.fields["key"] == key


def test_workspace_security_refuses_agent_only_keys_and_non_mappings() -> None:
    with pytest.raises(InvalidArgument, match=r"ws\.yaml: invalid security\.startup_blocked_packages"):
        workspace_security_from_document({"startup_blocked_packages": "off"}, source="ws.yaml")
    with pytest.raises(InvalidArgument, match="security must be a mapping"):
        workspace_security_from_document(["requests"], source="ws.yaml")


def test_schema_is_embeddable_in_a_larger_cerberus_schema() -> None:
    import cerberus

    v = cerberus.Validator({"package_management": {"type": "dict", "schema": PACKAGE_MANAGEMENT_SCHEMA}})
    assert v.validate({"package_management": {"blocked_packages": ["a"]}})
    assert not v.validate({"package_management": {"blocked_packages": ["a b"]}})


def test_seed_workspace_security_file(tmp_path: Path) -> None:
    f = tmp_path / "workspace-security.yaml"
    f.write_text(SEED_WORKSPACE_SECURITY)
    ws = load_workspace_security_file(f)
    assert ws.allowlist == {"numpy", "pandas", "scikit-learn", "matplotlib"}
    assert ws.approval_required == {"tensorflow", "pytorch", "custom-package"}
    eff = effective_policy(PackagePolicy(), ws)
    # A workspace tightens, never loosens: company-internal is not trusted globally, so it stays out.
    assert eff.trusted_channels == DEFAULT_TRUSTED_CHANNELS
    assert "os-system" in eff.blocked_packages and eff.allowlist == ws.allowlist


@pytest.mark.parametrize(("text", "message"), [
    ("package_management: [", "not valid YAML"),
    ("security: {}", "expected one top-level key, package_management:"),
    ("package_management:\n  allowlist: [1]\n", "invalid package_management.allowlist[0]"),
])
def test_bad_workspace_security_files(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "workspace-security.yaml"
    f.write_text(text)
    with pytest.raises(InvalidArgument, match=re.escape(message)) as info:
        load_workspace_security_file(f)
    assert str(f) in str(info.value)
    with pytest.raises(InvalidArgument, match="cannot read"):
        load_workspace_security_file(tmp_path / "missing.yaml")


def test_tightening_never_loosens() -> None:
    g = PackagePolicy(allowlist=frozenset({"numpy", "pandas"}), mode="dry_run")
    ws = WorkspaceSecurity(trusted_channels=("pytorch", "company-internal", "conda-forge"),
                           blocked_packages=frozenset({"aiohttp"}), approval_required=frozenset({"torch"}),
                           allowlist=frozenset({"pandas", "polars"}), mode="enforce")
    eff = effective_policy(g, ws)
    assert eff.trusted_channels == ("conda-forge", "pytorch")  # global order, intersection
    assert eff.blocked_packages == g.blocked_packages | {"aiohttp"}
    assert eff.approval_required == {"torch"} and eff.allowlist == {"pandas"} and eff.mode == "enforce"
    # an overlay cannot switch enforcement off, or drop blocked names by omitting them
    assert effective_policy(PackagePolicy(), WorkspaceSecurity(mode="dry_run", blocked_packages=frozenset())).mode \
        == "enforce"
    assert effective_policy(PackagePolicy(), WorkspaceSecurity(blocked_packages=frozenset())).blocked_packages \
        == PackagePolicy().blocked_packages
    # an allowlist set only by the workspace applies; None overlays are skipped
    assert effective_policy(PackagePolicy(), None, WorkspaceSecurity(allowlist=frozenset({"x"}))).allowlist == {"x"}
    seed_api = workspace_security_from_document({"trusted_channels": ["conda-forge"]}, source="API body")
    assert effective_policy(PackagePolicy(), seed_api).trusted_channels == ("conda-forge",)
    assert seed_api.to_dict() == {"trusted_channels": ["conda-forge"]}


def test_blocked_env_replaces_the_list_and_the_scan_follows_it() -> None:
    p = apply_environ(PackagePolicy(), {"FETCHML_JUPYTER_BLOCKED_PACKAGES": "aiohttp, telnetlib"})
    assert p.blocked_packages == {"aiohttp", "telnetlib"} and p.startup_scan_list == {"aiohttp", "telnetlib"}
    assert apply_environ(PackagePolicy(), {"FETCHML_JUPYTER_BLOCKED_PACKAGES": ""}).blocked_packages == frozenset()
    assert apply_environ(PackagePolicy(), {}) == PackagePolicy()


def test_seed_example_blocks_installs_of_requests_but_lets_base_images_start() -> None:
    env = {"FETCHML_JUPYTER_BLOCKED_PACKAGES": "requests,urllib3,httpx",
           "FETCHML_JUPYTER_STARTUP_BLOCKED_PACKAGES": "off"}
    p = apply_environ(PackagePolicy(), env)
    assert p.blocked_packages == {"requests", "urllib3", "httpx"}
    assert not p.startup_scan and p.startup_scan_list == frozenset()
    q = apply_environ(PackagePolicy(), {"FETCHML_JUPYTER_STARTUP_BLOCKED_PACKAGES": "Paramiko,telnetlib3"})
    assert q.startup_scan_list == {"paramiko", "telnetlib3"} and q.blocked_packages == PackagePolicy().blocked_packages
    assert apply_environ(PackagePolicy(), {"FETCHML_JUPYTER_STARTUP_BLOCKED_PACKAGES": " OFF "}).startup_scan is False


def test_env_names_are_validated_and_the_variable_named() -> None:
    with pytest.raises(InvalidArgument, match="FETCHML_JUPYTER_BLOCKED_PACKAGES: not valid package names: 'a b'"):
        apply_environ(PackagePolicy(), {"FETCHML_JUPYTER_BLOCKED_PACKAGES": "ok,a b"})
    with pytest.raises(InvalidArgument, match="FETCHML_JUPYTER_STARTUP_BLOCKED_PACKAGES"):
        apply_environ(PackagePolicy(), {"FETCHML_JUPYTER_STARTUP_BLOCKED_PACKAGES": "r\u0435quests"})
