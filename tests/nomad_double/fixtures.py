"""pytest fixtures: a Nomad to test against, the double by default or a real one.

With ``FETCHML_TEST_NOMAD_ADDR`` set (e.g. ``http://127.0.0.1:4646`` of a ``nomad agent -dev``),
the same tests run against that Nomad instead of the double:

``FETCHML_TEST_NOMAD_TOKEN``     ACL token (a management token), if ACLs are on
``FETCHML_TEST_NOMAD_IMAGE``     a workspace image with JupyterLab (default quay.io/jupyter/base-notebook:latest)
``FETCHML_TEST_NOMAD_SNAPSHOT_VOLUME`` / ``..._SNAPSHOT_DIR``  a host volume name and the host
                                 directory it maps to, for the experiment-run tests
``FETCHML_TEST_NOMAD_ENV_CACHE_VOLUME``  a host volume runs may write (nomad.env_cache_volume):
                                 without it the runs' environment step is checked uncached
``FETCHML_TEST_NOMAD_GPUS``      set to 1 when the cluster has a free GPU
``FETCHML_TEST_NOMAD_CACERT``    the CA bundle of an https:// Nomad whose certificate the system does
                                 not trust (the agent's nomad.tls.ca; the tests' own requests too)
``FETCHML_TEST_NOMAD_AGENT_HOST`` an address of this host that allocations reach (the package tests)

Tests that need a knob only the double has (make it slow, watch its internals) say so and are
skipped against a real Nomad.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fetchml_jupyter import SERVER_EXTENSIONS

from .cluster import CONTAINER_DEFAULT_PATH, DoubleImage, DoubleNode
from .server import NomadDouble

__all__ = [
    "CRASH_IMAGE",
    "IDLE_IMAGE",
    "WORKSPACE_IMAGE",
    "NomadTarget",
    "closed_port",
    "make_double",
    "nomad_contract",
    "nomad_target",
]

# The directory the workspace image ships the ``fetchml`` helper from (images/workspace/fetchml).
_HELPER_DIR = Path(__file__).resolve().parents[2] / "images" / "workspace"

# A workspace image as the double knows it: JupyterLab, papermill and pip in a Python environment
# at /opt/fetchml/venv that is first on the image's PATH (each task gets its own, over the packages
# of the environment the tests run in: what a task installs stays in it, as in a container's
# layer; programs are found through the image's PATH, never the test runner's), the ``fetchml``
# helper as the real image ships it, a home directory, and a user config that lets Jupyter run as
# root (the double runs tasks as the test user, which is root on these machines) and enables the
# server extensions the real image enables (images/workspace/jupyter_server_config.py: the
# fetchml_jupyter access extension, live collaboration, terminals).
_IMAGE_PYTHON = "/opt/fetchml/venv"
_IMAGE_CONFIG = {"ServerApp": {"allow_root": True, "jpserver_extensions": SERVER_EXTENSIONS}}
WORKSPACE_IMAGE = DoubleImage(
    "fetchml/workspace:test",
    env={"HOME": "/home/jovyan", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(_HELPER_DIR),
         "VIRTUAL_ENV": _IMAGE_PYTHON, "PATH": f"{_IMAGE_PYTHON}/bin:{CONTAINER_DEFAULT_PATH}"},
    paths=("/home/jovyan", "/home/jovyan/work"),
    files={"/home/jovyan/.jupyter/jupyter_server_config.json": json.dumps(_IMAGE_CONFIG)},
    workdir="/home/jovyan",
    pull_seconds=0.2,
    python_env=_IMAGE_PYTHON,
)
IDLE_IMAGE = DoubleImage("fetchml/idle:test", kind="idle")
# An image whose entrypoint exits 1 whatever the command: a task that keeps crashing.
CRASH_IMAGE = DoubleImage("fetchml/crash:test", env={"PATH": os.pathsep.join([str(Path(sys.executable).parent), CONTAINER_DEFAULT_PATH])},
                          entrypoint=("python3", "-c", "import sys; sys.exit(1)"))
SNAPSHOT_VOLUME = "fetchml-snapshots"
ENV_CACHE_VOLUME = "fetchml-env-cache"


def closed_port() -> int:
    """A local TCP port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class NomadTarget:
    """What the tests talk to: an address, a token, an image, and the double when it is one."""

    address: str
    token: str | None
    image: str
    double: NomadDouble | None
    snapshot_volume: str | None
    snapshot_dir: Path | None
    has_gpu: bool
    env_cache_volume: str | None = None  # a host volume runs may write (nomad.env_cache_volume)
    ca: str | None = None  # the CA bundle of an https:// Nomad (nomad.tls.ca)
    extra: dict[str, Any] = field(default_factory=dict)

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """A ``nomad:`` config section for this target."""
        section: dict[str, Any] = {
            "address": self.address,
            "token": self.token,
            "allowed_images": ["fetchml/*", "quay.io/jupyter/*", self.image],
            "default_image": self.image,
            "allowed_host_volumes": ["fetchml-*"],
            "datacenters": ["*"],
            "start_timeout": 60,
            "pull_timeout": 300,
            "defaults": {"cpu": 1, "memory_mb": 1024, "disk_mb": 1024},
            "job_prefix": f"t{secrets.token_hex(3)}-",
        }
        if self.ca:
            section["tls"] = {"ca": self.ca}
        section.update(overrides)
        return section

    def need_double(self, why: str) -> NomadDouble:
        if self.double is None:
            pytest.skip(f"needs the Nomad double: {why}")
        return self.double


def make_double(tmp: Path) -> tuple[NomadDouble, str]:
    """A double with one GPU node and one CPU node, ACLs on, and its management token."""
    snapshots, env_cache = tmp / "snapshots", tmp / "env-cache"
    snapshots.mkdir(parents=True, exist_ok=True)
    env_cache.mkdir(parents=True, exist_ok=True)
    volumes = {SNAPSHOT_VOLUME: str(snapshots), ENV_CACHE_VOLUME: str(env_cache)}
    nodes = [
        DoubleNode("gpu-1", gpus=1, host_volumes=volumes),
        DoubleNode("cpu-1", host_volumes=volumes),
    ]
    token = "management-" + secrets.token_hex(8)
    double = NomadDouble(
        nodes=nodes, images=[WORKSPACE_IMAGE, IDLE_IMAGE, CRASH_IMAGE], acl={token: {"*"}}, root=tmp / "nomad"
    )
    return double, token


@pytest.fixture(scope="module")
def nomad_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NomadTarget]:
    address = os.environ.get("FETCHML_TEST_NOMAD_ADDR")
    if address:
        snap_dir = os.environ.get("FETCHML_TEST_NOMAD_SNAPSHOT_DIR")
        ca = os.environ.get("FETCHML_TEST_NOMAD_CACERT") or None
        before = os.environ.get("REQUESTS_CA_BUNDLE")
        if ca:  # the tests' own requests to Nomad trust it too
            os.environ["REQUESTS_CA_BUNDLE"] = ca
        yield NomadTarget(
            address=address.rstrip("/"),
            token=os.environ.get("FETCHML_TEST_NOMAD_TOKEN") or None,
            image=os.environ.get("FETCHML_TEST_NOMAD_IMAGE", "quay.io/jupyter/base-notebook:latest"),
            double=None,
            snapshot_volume=os.environ.get("FETCHML_TEST_NOMAD_SNAPSHOT_VOLUME") or None,
            snapshot_dir=Path(snap_dir) if snap_dir else None,
            has_gpu=os.environ.get("FETCHML_TEST_NOMAD_GPUS", "0") not in ("", "0"),
            env_cache_volume=os.environ.get("FETCHML_TEST_NOMAD_ENV_CACHE_VOLUME") or None,
            ca=ca,
        )
        if ca:
            if before is None:
                os.environ.pop("REQUESTS_CA_BUNDLE", None)
            else:
                os.environ["REQUESTS_CA_BUNDLE"] = before
        return
    tmp = tmp_path_factory.mktemp("nomad")
    double, token = make_double(tmp)
    with double:
        yield NomadTarget(
            address=double.address,
            token=token,
            image=WORKSPACE_IMAGE.name,
            double=double,
            snapshot_volume=SNAPSHOT_VOLUME,
            snapshot_dir=tmp / "snapshots",
            has_gpu=True,
            env_cache_volume=ENV_CACHE_VOLUME,
        )


@pytest.fixture(autouse=True)
def nomad_contract(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fails the test during which the double saw a request or gave an answer that breaks Nomad's
    OpenAPI description (``contract.py``): the agent sent what Nomad does not take, or the double
    answered what Nomad does not answer."""
    if "nomad_target" not in request.fixturenames:
        yield
        return
    double = request.getfixturevalue("nomad_target").double
    contract = double.contract if double is not None else None
    seen = len(contract.violations) if contract is not None else 0
    yield
    if contract is not None and len(contract.violations) > seen:
        lines = "\n".join(contract.violations[seen:])
        pytest.fail(
            f"Nomad's OpenAPI description does not allow what passed the double:\n{lines}", pytrace=False
        )
