"""Fixtures: the wheelhouse and upstream (session), an agent on them, a running workspace."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from tests.conftest import AgentProcess
from tests.integration.packages.world import ServerThread, agent_for, make_upstream, make_wheelhouse


@pytest.fixture(scope="session")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with make_upstream(make_wheelhouse(tmp_path_factory.mktemp("wheelhouse"))) as server:
        yield server


@pytest.fixture(scope="module")
def pkg_agent(upstream: ServerThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    a = agent_for(tmp_path_factory.mktemp("pkg-agent"), f"{upstream.url}/simple/")
    with a.running():
        yield a


@pytest.fixture
def workspace(pkg_agent: AgentProcess, request: pytest.FixtureRequest) -> Iterator[str]:
    """A running workspace owned by bob (bob is a plain user), deleted afterwards."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:30].strip("-")
    name = f"{base}-{random.randint(1000, 9999)}"
    pkg_agent.ml("jupyter", "create", name, user="bob")
    yield name
    pkg_agent.ml("jupyter", "delete", name, "--yes", check=False)

