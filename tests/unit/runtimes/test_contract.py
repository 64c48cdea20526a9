"""The runtime contract: each runtime's declared capabilities agree with the interfaces it
implements and the allocators it owns, and an absent feature is a clear 0x15."""

from __future__ import annotations

from pathlib import Path

import pytest

from fetchml_agent.errors import ErrorCode, NotSupported
from fetchml_agent.runtimes.base import (
    ImageBuilder,
    PackageIndexReach,
    PackageInventory,
    RunBackend,
    Runtime,
    capability,
    find_capability,
)
from fetchml_agent.runtimes.docker import DockerRuntime
from fetchml_agent.runtimes.local import LocalRuntime
from fetchml_agent.runtimes.nomad import NomadRuntime


def _runtimes(tmp_path: Path) -> list[Runtime]:
    return [
        LocalRuntime(tmp_path, gpus=[{"index": 0}]),
        DockerRuntime(gpus=[0, 1]),
        NomadRuntime({"address": "http://127.0.0.1:4646"}),
    ]


def test_declared_capabilities_match_what_each_runtime_implements(tmp_path: Path) -> None:
    for rt in _runtimes(tmp_path):
        caps = rt.capabilities
        assert (rt.gpus is None) == caps.places_gpus, rt.name
        if caps.package_scan in ("host", "image"):
            assert isinstance(rt, PackageInventory), rt.name
        assert isinstance(rt, RunBackend), rt.name  # every runtime runs experiments: one run path


def test_the_three_runtimes_declare_what_the_service_layer_reads(tmp_path: Path) -> None:
    local, docker, nomad = _runtimes(tmp_path)
    assert local.capabilities.host_files and not docker.capabilities.host_files and not nomad.capabilities.host_files
    assert nomad.capabilities.schedules_runs and not local.capabilities.schedules_runs
    assert [rt.capabilities.package_scan for rt in (local, docker, nomad)] == ["host", "image", "workload"]
    assert local.ports is not None and docker.ports is None and nomad.ports is None
    assert local.gpu_capacity() == 1 and docker.gpu_capacity() == 2 and nomad.gpu_capacity() is None


def test_an_absent_feature_is_not_supported_naming_runtime_and_feature(tmp_path: Path) -> None:
    local, docker, nomad = _runtimes(tmp_path)
    with pytest.raises(NotSupported, match="the local runtime cannot build images") as info:
        capability(local, ImageBuilder)
    assert info.value.code == ErrorCode.NOT_SUPPORTED and "runtime: docker" in info.value.details
    with pytest.raises(NotSupported, match="the nomad runtime cannot build images"):
        capability(nomad, ImageBuilder)
    assert capability(docker, ImageBuilder) is docker
    # the local runtime reaches the agent on its loopback; an index-only listener only with local.isolation: users
    assert find_capability(local, PackageIndexReach) is local and local.index is None
    assert local.index_base_url("http") is None
    assert find_capability(nomad, PackageIndexReach) is nomad
