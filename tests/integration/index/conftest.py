"""Fixtures: a wheelhouse, a local upstream index, the filtering index mounted at /index, a venv.

Everything listens on 127.0.0.1; nothing leaves the machine.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

sys.path.insert(0, str(Path(__file__).parent))

from localindex import ServerThread, build_wheel, make_upstream_app

from fetchml_agent.policy.engine import Approvals, Decision
from fetchml_agent.policy.index import IndexContext, IndexService, make_index_app, workspace_index_config
from fetchml_agent.policy.model import PackagePolicy
from fetchml_agent.policy.specs import SpecKind, parse_spec

REPO = Path(__file__).resolve().parents[3]


def load_spec_table() -> ModuleType:
    """The unit suite's spec table, loaded by path (tests are not a package)."""
    path = REPO / "tests" / "unit" / "policy" / "spec_table.py"
    spec = importlib.util.spec_from_file_location("fetchml_spec_table", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TABLE = load_spec_table()

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


def _table_wheels() -> dict[str, set[str]]:
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


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("wheelhouse")
    for name, versions in WHEELS.items():
        for version, requires in versions:
            build_wheel(d, name, version, requires)
    for name, versions in _table_wheels().items():
        for version in versions:
            if not list(d.glob(f"{name.replace('-', '_')}-{version}-*.whl")):
                build_wheel(d, name, version)
    return d


@pytest.fixture(scope="session")
def world(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    cache_dir = tmp_path_factory.mktemp("index-cache")
    contexts = {
        "ws": IndexContext(TABLE.POLICY, Approvals(TABLE.APPROVED), "ws"),
        "open": IndexContext(PackagePolicy(), Approvals(), "open"),
        "dry": IndexContext(replace(TABLE.POLICY, mode="dry_run"), Approvals(), "dry"),
    }
    decisions: list[tuple[str | None, Decision]] = []

    async def resolve(key: str) -> IndexContext | None:
        return contexts.get(key)

    async def on_decision(ctx: IndexContext, decision: Decision) -> None:
        decisions.append((ctx.workspace, decision))

    upstream_app = make_upstream_app(wheelhouse)
    with ServerThread(upstream_app) as upstream:
        index_app = make_index_app(upstream=f"{upstream.url}/simple/", cache_dir=cache_dir, resolve=resolve,
                                   on_decision=on_decision)

        @asynccontextmanager
        async def lifespan(_app: Starlette) -> AsyncIterator[None]:
            yield
            await index_app.state.index.aclose()

        agent = Starlette(routes=[Mount("/index", app=index_app)], lifespan=lifespan)
        with ServerThread(agent) as index:
            yield World(upstream, index, cache_dir, contexts, index_app.state.index, upstream_app, decisions)


@dataclass
class Venv:
    python: Path
    root: Path

    def installed(self) -> dict[str, str]:
        from fetchml_agent.policy.scan import installed_from_path

        site = next(self.root.glob("lib/python*/site-packages"))
        return {n: v for n, v in installed_from_path([site])}


@pytest.fixture
def venv(tmp_path: Path) -> Venv:
    root = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    return Venv(root / "bin" / "python", root)


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


def kind_of(raw: str, conda: bool) -> SpecKind:
    return parse_spec(raw, conda=conda).kind
