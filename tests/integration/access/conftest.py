"""A world for the access tests: an agent whose users hold every workspace role.

bob owns the workspace; carol is a viewer, dave a collaborator, erin an editor; frank was a
collaborator and is revoked; grace has no role (a stranger). Everything runs for real: the agent
process, the ``ml`` command, the workspace's JupyterLab with the fetchml_jupyter extension.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fetchml_agent.auth import api_key_verifier
from tests.conftest import KEYS, AgentProcess, free_port

from .lab import Lab, base_and_token

PEOPLE = {"viewer": "carol", "collaborator": "dave", "editor": "erin", "owner": "bob", "revoked": "frank",
          "stranger": "grace"}
for _name in ("dave", "erin", "frank", "grace"):
    KEYS.setdefault(_name, f"key-{_name}-0123456789")


def users(extra: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    out = []
    for name, key in KEYS.items():
        u: dict[str, Any] = {"name": name, "role": "admin" if name == "admin" else "user",
                             "api_key_verifier": api_key_verifier(key)}
        if name == "dave":
            u["display_name"] = "Dave Collab"
        u.update((extra or {}).get(name, {}))
        out.append(u)
    return out


@dataclass
class World:
    agent: AgentProcess
    workspace: str
    urls: dict[str, str]  # role -> the URL `ml jupyter info` printed for that person

    def lab(self, role: str, **kw: Any) -> Lab:
        base, token = base_and_token(self.urls[role])
        return Lab(base, token, **kw)

    @property
    def base(self) -> str:
        return base_and_token(self.urls["owner"])[0]


def make_world(agent: AgentProcess, name: str) -> World:
    agent.ml("jupyter", "create", name, user="bob")
    for role in ("viewer", "collaborator", "editor"):
        agent.ml("jupyter", "access", name, f"--user={PEOPLE[role]}", f"--role={role}", user="bob")
    agent.ml("jupyter", "access", name, "--user=frank", "--role=collaborator", user="bob")
    urls = {role: agent.ml_json("jupyter", "info", name, user=PEOPLE[role])["url"]
            for role in ("viewer", "collaborator", "editor", "owner", "revoked")}
    agent.ml("jupyter", "revoke", name, "frank", user="bob")
    return World(agent, name, urls)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    a = AgentProcess(tmp_path_factory.mktemp("access"), free_port(), {"users": users()})
    with a.running():
        yield make_world(a, "roles")


def agent_with(root: Path, access: dict[str, Any], user_extra: dict[str, dict[str, Any]] | None = None) -> AgentProcess:
    return AgentProcess(root, free_port(), {"users": users(user_extra), "access": access})
