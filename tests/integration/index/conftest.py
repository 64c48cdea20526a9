"""Fixtures: a wheelhouse, a local upstream index, the filtering index mounted at /index, a venv.

Everything listens on 127.0.0.1; nothing leaves the machine.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from fetchml_agent.policy.engine import Approvals, Decision
from fetchml_agent.policy.index import IndexContext, make_index_app
from fetchml_agent.policy.schema import PackagePolicy
from tests.integration.index.indexworld import TABLE, WHEELS, Venv, World, table_wheels
from tests.integration.index.localindex import ServerThread, build_wheel, make_upstream_app


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("wheelhouse")
    for name, versions in WHEELS.items():
        for version, requires in versions:
            build_wheel(d, name, version, requires)
    for name, table_versions in table_wheels().items():
        for version in table_versions:
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


@pytest.fixture
def venv(tmp_path: Path) -> Venv:
    root = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    return Venv(root / "bin" / "python", root)
