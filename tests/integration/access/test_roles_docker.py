"""The role table on the docker runtime: the same cells as on the local runtime, in a container
whose JupyterLab reaches the agent only through the index-only listener."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.docker import conftest as docker_fixtures

from . import test_roles_local as cells
from .conftest import World, make_world, users
from .docker_world import docker_agent

pytestmark = [pytest.mark.docker, pytest.mark.slow]

docker_client = docker_fixtures.docker_client  # the docker tests' fixtures: engine and image
workspace_image = docker_fixtures.workspace_image


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, docker_client: Any, workspace_image: str) -> Iterator[World]:
    with docker_agent(tmp_path_factory.mktemp("access-docker"), "acc", docker_client, workspace_image,
                      {"users": users()}) as a:
        yield make_world(a, "droles")


ctx = cells.ctx
test_role_table_cell = cells.test_role_table_cell
test_refusal_names_the_role_needed = cells.test_refusal_names_the_role_needed
test_audit_records_who_did_what = cells.test_audit_records_who_did_what
test_an_execution_is_audited_when_the_client_leaves_before_the_reply = (
    cells.test_an_execution_is_audited_when_the_client_leaves_before_the_reply)
