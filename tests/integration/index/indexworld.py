"""The index tests' world: the spec table's wheels, the servers, a venv, a real pip.

Fixtures that build it are in conftest.py beside this file; test modules import the types from here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from starlette.applications import Starlette

from fetchml_agent.policy.engine import Decision
from fetchml_agent.policy.index import IndexContext, IndexService, workspace_index_config
from fetchml_agent.policy.scan import installed_from_path
from fetchml_agent.policy.specs import parse_spec
from tests.integration.index.localindex import ServerThread
from tests.unit.policy import spec_table as TABLE

__all__ = ["TABLE", "WHEELS", "Venv", "World", "pip_install", "table_wheels"]

# name -> [(version, requires)]
WHEELS: dict[str, list[tuple[str, list[str]]]] = {
    "alpha": [("1.0", []), ("2.0", [])],
    "beta": [("1.0", ["alpha>=1"])],
    "gamma": [("1.0", ["requests>=2"])],
    "requests": [("2.31.0", [])],
    "tensorflow": [("2.15.0", [])],
    "custom-package": [("1.0", []), ("1.5", []), ("2.5", [])],
    "six": [("1.16.0", [])],
}


def table_wheels() -> dict[str, set[str]]:
    """Every name the pip rows of the table mention, with 1.0, 1.5, 2.0 and each version they pin."""
    out: dict[str, set[str]] = {}
    for raw, conda, expected, _pkg, _rule in TABLE.ROWS:
        if conda or expected == "refused":
            continue
        spec = parse_spec(raw)
        if spec.name is None:
            continue
        versions = out.setdefault(spec.name, {"1.0", "1.5", "2.0"})
        for part in spec.specifier.split(","):
            if part.startswith("==") and "*" not in part and not part.startswith("==="):
                versions.add(part[2:])
    return out


@dataclass
class World:
    upstream: ServerThread
    index: ServerThread
    cache_dir: Path
    contexts: dict[str, IndexContext]
    service: IndexService
    upstream_app: Starlette
    decisions: list[tuple[str | None, Decision]] = field(default_factory=list)

    def index_url(self, key: str) -> str:
        return f"{self.index.url}/index/{key}/simple/"


@dataclass
class Venv:
    python: Path
    root: Path

    def installed(self) -> dict[str, str]:
        site = next(self.root.glob("lib/python*/site-packages"))
        return dict(installed_from_path([site]))


def pip_install(world: World, venv: Venv, key: str, *args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    """A real ``pip install`` into ``venv``, configured only by what workspace_index_config gives."""
    policy = world.contexts[key].policy
    cfg = workspace_index_config(world.index_url(key), policy, pip_conf_path=str(tmp / "pip.conf"))
    (tmp / "pip.conf").write_text(cfg.pip_conf)
    env = {k: v for k, v in os.environ.items() if k not in cfg.unset and not k.startswith("PIP_")}
    env.update(cfg.env)
    return subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv.python), "install", "--no-cache-dir", *args],
        env=env, capture_output=True, text=True, timeout=300, check=False)
