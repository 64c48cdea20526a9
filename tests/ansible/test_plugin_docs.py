"""Every plugin documents itself: the YAML parses, ``ansible-doc`` renders it, and each module's
documented options match its argument_spec (name, type, default, choices, required, no_log)."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest
import yaml
from ansible.module_utils import basic
from conftest import PLUGINS, REPO, load_plugin, tool

MODULES = sorted(p.stem for p in (PLUGINS / "modules").glob("*.py"))
PLUGIN_FILES = [("module", "modules", m) for m in MODULES] + [("inventory", "inventory", "nomad_nodes")]


@pytest.mark.parametrize(("doc_type", "folder", "name"), PLUGIN_FILES)
def test_doc_strings_are_yaml(doc_type, folder, name):
    plugin = load_plugin(folder, name)
    doc = yaml.safe_load(plugin.DOCUMENTATION)
    assert doc.get("module", doc.get("name")) == name
    assert doc["short_description"] and doc["description"]
    assert yaml.safe_load(plugin.EXAMPLES)
    if doc_type == "module":
        assert yaml.safe_load(plugin.RETURN)


@pytest.mark.parametrize(("doc_type", "folder", "name"), PLUGIN_FILES)
def test_ansible_doc_renders(doc_type, folder, name):
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}
    proc = subprocess.run(
        [tool("ansible-doc"), "-t", doc_type, name],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0 and "[WARNING]" not in proc.stderr, proc.stderr
    assert name in proc.stdout


class _Spec(Exception):
    pass


def _argument_spec(name: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    captured: dict[str, Any] = {}

    def capture(self: Any, argument_spec: dict[str, Any], **kwargs: Any) -> None:
        captured.update(argument_spec)
        raise _Spec

    monkeypatch.setattr(basic.AnsibleModule, "__init__", capture)
    with pytest.raises(_Spec):
        load_plugin("modules", name).main()
    return captured


def _compare(doc: dict[str, Any], spec: dict[str, Any], where: str) -> None:
    assert set(doc) == set(spec), f"{where}: documented {sorted(doc)} but the spec has {sorted(spec)}"
    for key, d in doc.items():
        s = spec[key]
        assert d.get("type", "str") == s.get("type", "str"), f"{where}.{key}: type"
        assert d.get("default") == s.get("default"), f"{where}.{key}: default"
        assert d.get("choices") == s.get("choices"), f"{where}.{key}: choices"
        assert bool(d.get("required")) == bool(s.get("required")), f"{where}.{key}: required"
        if s.get("options"):
            _compare(d.get("suboptions", {}), s["options"], f"{where}.{key}")


@pytest.mark.parametrize("name", MODULES)
def test_module_documentation_matches_argument_spec(name, monkeypatch):
    doc = yaml.safe_load(load_plugin("modules", name).DOCUMENTATION)
    _compare(doc.get("options", {}), _argument_spec(name, monkeypatch), name)
