"""The role table on the docker runtime: the same cells as on the local runtime, in a container
whose JupyterLab reaches the agent only through the index-only listener."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import AgentProcess, free_port
from tests.integration.docker import conftest as docker_fixtures

from . import test_roles_local as cells
from .conftest import World, make_world, users

pytestmark = [pytest.mark.docker, pytest.mark.slow]

docker_client = docker_fixtures.docker_client  # the docker tests' fixtures: engine and image
workspace_image = docker_fixtures.workspace_image
PREFIX = f"fmltest-{os.getpid()}-acc"
TABLE = f"fmltest_{os.getpid()}_acc"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, docker_client: Any, workspace_image: str) -> Iterator[World]:
    a = AgentProcess(tmp_path_factory.mktemp("access-docker"), free_port(), {
        "users": users(), "runtime": "docker",
        "docker": {"prefix": PREFIX, "firewall_table": TABLE, "image": workspace_image},
        "package_management": {"startup_blocked_packages": "off"},
    })
    try:
        a.start()
        yield make_world(a, "droles")
    finally:
        a.stop()
        label = {"label": [f"io.fetchml.instance={PREFIX}"]}
        for c in docker_client.containers.list(all=True, filters=label):
            c.remove(force=True)
        for n in docker_client.networks.list(filters=label):
            n.remove()
        for v in docker_client.volumes.list(filters=label):
            v.remove(force=True)
        subprocess.run(["nft", "delete", "table", "inet", TABLE], capture_output=True)


ctx = cells.ctx
test_role_table_cell = cells.test_role_table_cell
test_refusal_names_the_role_needed = cells.test_refusal_names_the_role_needed
test_audit_records_who_did_what = cells.test_audit_records_who_did_what
test_an_execution_is_audited_when_the_client_leaves_before_the_reply = (
    cells.test_an_execution_is_audited_when_the_client_leaves_before_the_reply)
