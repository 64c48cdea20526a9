"""GPUs as Nomad sees them, through NomadRuntime: ``--gpu-type`` (a model or a MIG profile) becomes a
device constraint, the free GPUs per node and type, and an unplaceable request that names the
constraint no node satisfies.

A cluster of its own, with whole H100s, an H100 in MIG mode and a CPU node, as the double
fingerprints them like the NVIDIA device plugin does (tests/nomad_double/devices.py). A real Nomad
would need such GPUs: these tests run against the double only.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fetchml_agent.errors import InsufficientResources
from fetchml_agent.runtimes.base import Resources, WorkspaceSpec
from fetchml_agent.runtimes.nomad import NomadRuntime
from tests.nomad_double import DoubleGPU, DoubleNode, NomadDouble
from tests.nomad_double.devices import H100
from tests.nomad_double.fixtures import IDLE_IMAGE, WORKSPACE_IMAGE

MIG = DoubleGPU(mig=("3g.40gb", "3g.40gb", "1g.10gb"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NomadDouble]:
    if __import__("os").environ.get("FETCHML_TEST_NOMAD_ADDR"):
        pytest.skip("needs the Nomad double's H100 and MIG nodes")
    nodes = [DoubleNode("h100-a", gpus=[H100, H100]), DoubleNode("mig-a", gpus=[MIG]), DoubleNode("cpu-a")]
    with NomadDouble(nodes=nodes, images=[WORKSPACE_IMAGE, IDLE_IMAGE],
                     root=tmp_path_factory.mktemp("gpus")) as double:
        yield double
    assert double.contract is not None and double.contract.violations == []


def settings(double: NomadDouble, **extra: Any) -> dict[str, Any]:
    return {"address": double.address, "allowed_images": ["fetchml/*"], "default_image": WORKSPACE_IMAGE.name,
            "start_timeout": 60, "job_prefix": f"g{secrets.token_hex(2)}-", **extra}


def spec(name: str, gpu: int, gpu_type: str | None) -> WorkspaceSpec:
    return WorkspaceSpec(id=f"w-{uuid.uuid4().hex[:8]}", name=name, owner="alice", path=Path("/unused"),
                         token=secrets.token_hex(24), resources=Resources(cpu=1, memory_mb=1024, gpu=gpu, gpu_type=gpu_type))


def run(double: NomadDouble, fn: Any, **extra: Any) -> Any:
    async def scenario() -> Any:
        rt = NomadRuntime(settings(double, **extra))
        try:
            await rt.open()
            return await fn(rt)
        finally:
            await rt.close()

    return asyncio.run(scenario())


def _devices_of(double: NomadDouble, job_id: str) -> list[dict[str, Any]]:
    alloc = next(a for a in double.allocations() if a["JobID"] == job_id and a["DesiredStatus"] == "run")
    return [d for t in alloc["AllocatedResources"]["Tasks"].values() for d in t["Devices"] or []]


def test_a_mig_profile_places_the_workspace_on_a_mig_device_and_a_model_never_does(cluster: NomadDouble) -> None:
    async def scenario(rt: NomadRuntime) -> Any:
        mig = await rt.start(spec("mig-ws", 1, "3g.40gb"))
        whole = await rt.start(spec("whole-ws", 2, "h100"))
        held = {name: _devices_of(cluster, s.state["job_id"]) for name, s in (("mig", mig), ("whole", whole))}
        inventory = await rt.device_inventory()
        for name, started in (("mig-ws", mig), ("whole-ws", whole)):
            await rt.remove(spec(name, 0, None), started.state)
        return held, inventory

    held, inventory = run(cluster, scenario)
    assert [(d["Name"], len(d["DeviceIDs"])) for d in held["mig"]] == [("NVIDIA H100 80GB HBM3 MIG 3g.40gb", 1)]
    assert [(d["Name"], len(d["DeviceIDs"])) for d in held["whole"]] == [("NVIDIA H100 80GB HBM3", 2)]
    rows = {(r["node"], r["type"]): r for r in inventory["gpus"]}
    # while both ran: one of the two 3g.40gb devices and both whole H100s were held
    assert rows[("mig-a", "NVIDIA H100 80GB HBM3 MIG 3g.40gb")]["free"] == 1
    assert rows[("mig-a", "NVIDIA H100 80GB HBM3 MIG 1g.10gb")]["free"] == 1
    assert rows[("h100-a", "NVIDIA H100 80GB HBM3")]["free"] == 0
    assert inventory["note"] == ""


def test_the_device_request_carries_the_type_as_a_model_constraint(cluster: NomadDouble) -> None:
    async def scenario(rt: NomadRuntime) -> Any:
        started = await rt.start(spec("typed", 1, "1g.10gb"))
        try:
            job = cluster.jobs()[("default", started.state["job_id"])]
            return job, _devices_of(cluster, started.state["job_id"])
        finally:
            await rt.remove(spec("typed", 0, None), started.state)

    job, devices = run(cluster, scenario)
    [request] = job["TaskGroups"][0]["Tasks"][0]["Resources"]["Devices"]
    assert request["Constraints"][0] == {"LTarget": "${device.model}", "Operand": "=",
                                         "RTarget": "NVIDIA H100 80GB HBM3 MIG 1g.10gb"}
    assert [d["Name"] for d in devices] == ["NVIDIA H100 80GB HBM3 MIG 1g.10gb"]
    assert devices[0]["DeviceIDs"][0].startswith("MIG-")


def test_a_request_no_node_can_satisfy_names_the_constraint(cluster: NomadDouble) -> None:
    memory = {"gpu": {"constraints": [{"attribute": "${device.attr.memory}", "operator": ">=", "value": "40 GiB"}]}}

    async def attempt(rt: NomadRuntime, s: WorkspaceSpec) -> str:
        with pytest.raises(InsufficientResources) as info:
            await rt.start(s)
        return info.value.message

    both = run(cluster, lambda rt: attempt(rt, spec("forty", 1, "3g.40gb")), **memory)
    # an H100's 3g.40gb MIG device has 39.5 GiB: each constraint alone is met somewhere, not both
    assert "no GPU has both ${device.model} = \"NVIDIA H100 80GB HBM3 MIG 3g.40gb\" and " in both
    assert "${device.attr.memory} >= \"40 GiB\"" in both and "40448 MiB" in both
    unknown = run(cluster, lambda rt: attempt(rt, spec("volta", 1, "V100")))
    assert 'no GPU in the cluster has ${device.model} = "V100"' in unknown
    assert "NVIDIA H100 80GB HBM3 MIG 1g.10gb" in unknown  # the types there are
    too_many = run(cluster, lambda rt: attempt(rt, spec("three", 3, "h100")))
    assert "no node has 3 healthy GPUs of that kind (most: 2 on h100-a" in too_many
    # nothing of a refused workspace stays in Nomad
    assert not [j for (_, j) in cluster.jobs() if j.endswith(("ws-forty", "ws-volta", "ws-three"))
                and not cluster.jobs()[("default", j)]["Stop"]]


def test_all_gpus_of_the_kind_in_use(cluster: NomadDouble) -> None:
    async def scenario(rt: NomadRuntime) -> str:
        first = await rt.start(spec("only", 1, "1g.10gb"))
        try:
            with pytest.raises(InsufficientResources) as info:
                await rt.start(spec("second", 1, "1g.10gb"))
            return info.value.message
        finally:
            await rt.remove(spec("only", 0, None), first.state)

    message = run(cluster, scenario)
    assert "no node with a free GPU" in message
    assert "all matching GPUs are in use: no node has 1 free (most free: 0 on mig-a" in message
