"""The packages tests' world: tiny wheels, a local upstream index, and an agent that uses it.

Shared by the tests beside this file and by ``benchmarks/bench_packages.py``. Nothing leaves
127.0.0.1: the upstream is a real uvicorn serving wheels the tests build.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import AgentProcess, free_port
from tests.integration.index.localindex import ServerThread, build_wheel, make_upstream_app

__all__ = ["BLOCKED", "POLICY", "WHEELS", "ServerThread", "agent_for", "make_upstream", "make_wheelhouse",
           "site_packages", "workspace_python"]

# name -> [(version, requires)]; none of these names is in the agent's own environment.
WHEELS: dict[str, list[tuple[str, list[str]]]] = {
    "alpha": [("1.0", []), ("2.0", [])],
    "beta": [("1.0", ["alpha>=1"])],
    "leftpad": [("1.0", [])],
    "netlib": [("1.0", [])],
    "webtool": [("1.0", ["netlib>=1"])],
    "custom-package": [("1.0", []), ("1.5", []), ("2.5", [])],
    "sixish": [("1.16.0", [])],
}

BLOCKED = ["requests", "urllib3", "socket", "subprocess", "os.system", "netlib"]
POLICY: dict[str, Any] = {"blocked_packages": BLOCKED, "approval_required": ["custom-package", "tensorflow"]}


def make_wheelhouse(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, versions in WHEELS.items():
        for version, requires in versions:
            build_wheel(directory, name, version, requires)
    return directory


def make_upstream(wheelhouse: Path) -> ServerThread:
    """A started-on-enter local simple index over ``wheelhouse``."""
    return ServerThread(make_upstream_app(wheelhouse))


def agent_for(root: Path, upstream_url: str, policy: dict[str, Any] | None = None,
              **extra: Any) -> AgentProcess:
    """An (unstarted) agent whose package index filters ``upstream_url`` with ``policy``."""
    return AgentProcess(root, free_port(), {
        "package_management": POLICY if policy is None else policy,
        "package_index": {"upstream": upstream_url},
        **extra,
    })


def workspace_python(agent: AgentProcess, name: str) -> Path:
    """The local runtime's Python of workspace ``name`` (its venv)."""
    ws_id = agent.ml_json("jupyter", "info", name)["id"]
    return agent.data_dir / "envs" / ws_id / "bin" / "python"


def site_packages(agent: AgentProcess, name: str) -> Path:
    """The workspace venv's site-packages: what the workspace installed itself."""
    return next(workspace_python(agent, name).parent.parent.glob("lib/python*/site-packages"))
