"""Revocation, sessions, MFA, allowlists and live collaboration on the docker runtime.

The same tests as on the local runtime (test_revoke_sessions_mfa, test_collaboration), against
workspaces in containers whose JupyterLab reaches the agent only through the index-only listener
and is reached through a port published on the host's loopback. There JupyterLab sees every
client as the workspace network's gateway; the runtime tells the extension that this address
stands for the loopback it was published on, so the allowlist cells (127.0.0.1 refused for carol,
a trusted proxy's X-Forwarded-For believed) hold as they do locally.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.docker import conftest as docker_fixtures

from . import test_collaboration as collab
from . import test_revoke_sessions_mfa as policy
from .conftest import World, users
from .docker_world import docker_agent
from .lab import Lab

pytestmark = [pytest.mark.docker, pytest.mark.slow]

docker_client = docker_fixtures.docker_client
workspace_image = docker_fixtures.workspace_image


@pytest.fixture(scope="module")
def pw(tmp_path_factory: pytest.TempPathFactory, docker_client: Any, workspace_image: str) -> Iterator[World]:
    extra = {"users": users({"carol": {"allowed_networks": ["10.0.0.0/8"]}}), "access": policy.ACCESS}
    with docker_agent(tmp_path_factory.mktemp("policy-docker"), "pol", docker_client, workspace_image, extra) as a:
        yield policy.make_world_without_carol(a)


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory, docker_client: Any, workspace_image: str) -> Iterator[dict[str, Lab]]:
    with docker_agent(tmp_path_factory.mktemp("collab-docker"), "col", docker_client, workspace_image,
                      {"users": users()}) as a:
        yield collab.make_team(a)


test_revoke_closes_an_open_kernel_connection = policy.test_revoke_closes_an_open_kernel_connection
test_role_change_takes_effect_on_new_requests_and_open_kernels = (
    policy.test_role_change_takes_effect_on_new_requests_and_open_kernels)
test_session_idle_timeout_and_ml_auth_sessions = policy.test_session_idle_timeout_and_ml_auth_sessions
test_session_max_lifetime = policy.test_session_max_lifetime
test_ending_a_session_with_ml = policy.test_ending_a_session_with_ml
test_mfa_enrolment_and_browser_login = policy.test_mfa_enrolment_and_browser_login
test_mfa_required_for_admin_operations = policy.test_mfa_required_for_admin_operations
test_allowlists_on_the_api_and_on_jupyterlab = policy.test_allowlists_on_the_api_and_on_jupyterlab
test_workspace_password_is_the_owners = policy.test_workspace_password_is_the_owners
test_two_collaborators_and_a_viewer = collab.test_two_collaborators_and_a_viewer
test_viewer_cannot_save_through_the_rest_api_either = collab.test_viewer_cannot_save_through_the_rest_api_either


def test_the_gateway_stands_for_the_loopback(pw: World, docker_client: Any) -> None:
    """Why the allowlist cells above needed the alias: JupyterLab's peer is the network's gateway,
    an address inside carol's 10/8, so every client on this host would have passed her list."""
    prefix = pw.agent.extra["docker"]["prefix"]
    container = docker_client.containers.get(f"{prefix}-{pw.workspace}")
    env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
    net = docker_client.networks.get(f"{prefix}-{pw.workspace}")
    gateway = net.attrs["IPAM"]["Config"][0]["Gateway"]
    assert env["FETCHML_ACCESS_PEER_ALIASES"] == f"{gateway}=127.0.0.1"
    assert ipaddress.ip_address(gateway) in ipaddress.ip_network("10.0.0.0/8")
    logs = container.logs().decode(errors="replace")
    assert f"@{gateway})" in logs  # the peer JupyterLab itself logged for the requests above
