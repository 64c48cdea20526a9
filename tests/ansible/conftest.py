"""Fixtures for the Ansible plugin tests: run a module's ``main()`` in-process and catch its result.

Modules import their shared code as ``ansible.module_utils.fetchml_*``; in a real run Ansible ships
``plugins/module_utils/fetchml_*.py`` (symlinks into ``fetchml_agent``) with the module. Here the
same files are registered under those names, so the tests exercise the very code that ships.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest.importorskip("ansible", reason="the Ansible tests need the `ansible` extra (EXTRAS=dev,ansible)")

from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args

REPO = Path(__file__).resolve().parents[2]
PLUGINS = REPO / "plugins"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
# The ansible commands of the Python running the tests (the venv's in CI), else those on PATH.
_BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """Path of an Ansible command (``ansible``, ``ansible-inventory``, ``ansible-doc``)."""
    return str(_BIN / name) if (_BIN / name).exists() else name


def _register_module_utils() -> None:
    import ansible.module_utils as mu

    for link in sorted((PLUGINS / "module_utils").glob("fetchml_*.py")):
        name = f"ansible.module_utils.{link.stem}"
        if name in sys.modules:
            continue
        spec = importlib.util.spec_from_file_location(name, link)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        setattr(mu, link.stem, module)


_register_module_utils()


def load_plugin(kind: str, name: str) -> ModuleType:
    """Import ``plugins/<kind>/<name>.py`` as a fresh module."""
    path = PLUGINS / kind / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"fetchml_test_{kind}_{name}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ModuleExit(Exception):
    """``exit_json`` or ``fail_json`` was called; ``result`` holds its keyword arguments."""

    def __init__(self, result: dict[str, Any], failed: bool) -> None:
        super().__init__(result.get("msg", ""))
        self.result = result
        self.failed = failed


def run_module(module: ModuleType, args: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> ModuleExit:
    """Call ``module.main()`` with ``args`` and return how it finished (never returns normally)."""

    def exit_json(self: basic.AnsibleModule, **kwargs: Any) -> None:
        raise ModuleExit(kwargs, failed=False)

    def fail_json(self: basic.AnsibleModule, msg: str, **kwargs: Any) -> None:
        raise ModuleExit({"msg": msg, **kwargs}, failed=True)

    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)
    with patch_module_args(args), pytest.raises(ModuleExit) as caught:
        module.main()
    # Results must be JSON, as Ansible sends them back over the wire.
    json.dumps(caught.value.result)
    return caught.value


@pytest.fixture(scope="session")
def built_collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tarball that ``make collection`` builds (into a temporary directory), built once per session."""
    out = tmp_path_factory.mktemp("collection")
    proc = subprocess.run(
        ["make", "-s", "collection", f"COLLECTION_DIR={out}", f"VENV={Path(sys.executable).parent.parent}"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [tarball] = out.glob("fetchml-platform-*.tar.gz")
    assert proc.stdout.strip().endswith(tarball.name)
    return tarball
