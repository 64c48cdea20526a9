"""The Nomad double's GPUs as the NVIDIA device plugin fingerprints them, and placement on them.

The fingerprint follows hashicorp/nomad-device-nvidia (MIG devices as their own groups, NUL-padded
bus ids, its attribute names and units); placement and its failure metrics follow Nomad's
scheduler (``missing devices``, ``devices: no devices match request``). See ``devices.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.nomad_double import DoubleNode, NomadDouble
from tests.nomad_double.devices import A100_40GB, H100, DoubleGPU, parse_attribute
from tests.nomad_double.fixtures import IDLE_IMAGE

H100_MIG = DoubleGPU(mig=("3g.40gb", "3g.40gb"))


@pytest.fixture(scope="module")
def double(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NomadDouble]:
    nodes = [DoubleNode("full", gpus=[H100, H100]), DoubleNode("mig", gpus=[H100_MIG]), DoubleNode("cpu")]
    with NomadDouble(nodes=nodes, images=[IDLE_IMAGE], root=tmp_path_factory.mktemp("gpus")) as d:
        yield d
    assert d.contract is not None and d.contract.violations == []


def _node(double: NomadDouble, name: str) -> dict[str, Any]:
    stub = next(n for n in requests.get(f"{double.address}/v1/nodes", timeout=10).json() if n["Name"] == name)
    return dict(requests.get(f"{double.address}/v1/node/{stub['ID']}", timeout=10).json())


def _place(double: NomadDouble, job_id: str, device: dict[str, Any]) -> dict[str, Any]:
    """Register a one-task job asking for ``device``; its evaluation once scheduled."""
    task = {
        "Name": "t",
        "Driver": "docker",
        "Config": {"image": IDLE_IMAGE.name},
        "Resources": {"CPU": 100, "MemoryMB": 64, "Devices": [device]},
    }
    job = {"Job": {"ID": job_id, "Datacenters": ["*"], "TaskGroups": [{"Name": "g", "Tasks": [task]}]}}
    eval_id = requests.post(f"{double.address}/v1/jobs", json=job, timeout=10).json()["EvalID"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ev = requests.get(f"{double.address}/v1/evaluation/{eval_id}", timeout=10).json()
        if ev["Status"] != "pending":
            return dict(ev)
        time.sleep(0.02)
    raise AssertionError("never scheduled")


def _devices(double: NomadDouble, job_id: str) -> list[dict[str, Any]]:
    allocs = requests.get(f"{double.address}/v1/job/{job_id}/allocations", timeout=10).json()
    full = requests.get(f"{double.address}/v1/allocation/{allocs[0]['ID']}", timeout=10).json()
    return list(full["AllocatedResources"]["Tasks"]["t"]["Devices"])


def test_a_gpu_is_fingerprinted_as_the_plugin_does(double: NomadDouble) -> None:
    (group,) = _node(double, "full")["NodeResources"]["Devices"]
    assert (group["Vendor"], group["Type"], group["Name"]) == ("nvidia", "gpu", "NVIDIA H100 80GB HBM3")
    assert [i["ID"][:4] for i in group["Instances"]] == ["GPU-", "GPU-"]
    assert all(i["Healthy"] for i in group["Instances"])
    buses = sorted(i["Locality"]["PciBusID"] for i in group["Instances"])
    assert buses == [b.ljust(32, "\0") for b in ("00000000:17:00.0", "00000000:18:00.0")]  # NVML's [32]int8
    attrs = group["Attributes"]
    assert attrs["memory"] == {"Int": 81559, "Unit": "MiB"}
    assert set(attrs) == {
        "memory",
        "power",
        "bar1",
        "driver_version",
        "cores_clock",
        "memory_clock",
        "pci_bandwidth",
        "display_state",
        "persistence_mode",
    }
    assert attrs["display_state"] == {"String": "0"}  # an NVML enable state printed with %v
    assert _node(double, "cpu")["NodeResources"]["Devices"] is None


def test_mig_devices_replace_their_gpu(double: NomadDouble) -> None:
    (group,) = _node(double, "mig")["NodeResources"]["Devices"]
    assert group["Name"] == "NVIDIA H100 80GB HBM3 MIG 3g.40gb"
    assert len(group["Instances"]) == 2 and all(i["ID"].startswith("MIG-") for i in group["Instances"])
    assert [i["ID"] for i in group["Instances"]] == sorted(i["ID"] for i in group["Instances"])
    assert group["Attributes"]["memory"] == {"Int": 40448, "Unit": "MiB"}  # the MIG device's own
    assert group["Attributes"]["bar1"] == {"Int": H100.bar1_mib, "Unit": "MiB"}  # its parent's


def test_a_model_constraint_places_on_that_model(double: NomadDouble) -> None:
    model = {"LTarget": "${device.model}", "Operand": "=", "RTarget": "NVIDIA H100 80GB HBM3 MIG 3g.40gb"}
    ev = _place(double, "gpu-model", {"Name": "nvidia/gpu", "Count": 1, "Constraints": [model]})
    assert ev["Status"] == "complete" and not ev["FailedTGAllocs"]
    (granted,) = _devices(double, "gpu-model")
    assert granted["Name"] == model["RTarget"] and granted["DeviceIDs"][0].startswith("MIG-")
    ev = _place(double, "gpu-name", {"Name": "nvidia/gpu/NVIDIA H100 80GB HBM3", "Count": 1})
    (granted,) = _devices(double, "gpu-name")
    assert granted["Name"] == "NVIDIA H100 80GB HBM3" and granted["DeviceIDs"][0].startswith("GPU-")


def test_no_node_with_the_model_is_missing_devices(double: NomadDouble) -> None:
    ev = _place(double, "gpu-a100", {"Name": "nvidia/gpu/NVIDIA A100-SXM4-40GB", "Count": 1})
    metric = ev["FailedTGAllocs"]["g"]
    assert metric["ConstraintFiltered"] == {"missing devices": 3} and metric["NodesFiltered"] == 3
    assert ev["BlockedEval"]


def test_units_compare_as_nomad_compares_them(double: NomadDouble) -> None:
    # A 3g.40gb MIG device has 39.5 GiB: ">= 40 GiB" leaves only the full GPU.
    big = {"LTarget": "${device.attr.memory}", "Operand": ">=", "RTarget": "40 GiB"}
    ev = _place(double, "gpu-40gib", {"Name": "nvidia/gpu", "Constraints": [big]})
    assert ev["Status"] == "complete"
    assert _devices(double, "gpu-40gib")[0]["Name"] == "NVIDIA H100 80GB HBM3"
    unitless = {"LTarget": "${device.attr.memory}", "Operand": ">=", "RTarget": "1000"}
    ev = _place(double, "gpu-unitless", {"Name": "nvidia/gpu", "Constraints": [unitless]})
    assert ev["FailedTGAllocs"]["g"]["ConstraintFiltered"] == {"missing devices": 3}
    assert parse_attribute("40 GiB") == {"Int": 40, "Unit": "GiB"}
    assert parse_attribute("NVIDIA H100 80GB HBM3") == {"String": "NVIDIA H100 80GB HBM3"}


def test_taken_instances_exhaust_the_node(double: NomadDouble) -> None:
    mig = {"LTarget": "${device.model}", "Operand": "regexp", "RTarget": "MIG 3g\\.40gb$"}
    _place(double, "gpu-mig-2", {"Name": "nvidia/gpu", "Count": 1, "Constraints": [mig]})
    ev = _place(double, "gpu-mig-3", {"Name": "nvidia/gpu", "Count": 1, "Constraints": [mig]})
    metric = ev["FailedTGAllocs"]["g"]
    assert metric["DimensionExhausted"] == {"devices: no devices match request": 1}
    assert metric["ConstraintFiltered"] == {"missing devices": 2}


def test_an_a100_with_mig_is_named_as_nvml_names_it() -> None:
    from tests.nomad_double.devices import fingerprint

    (group,) = fingerprint([DoubleGPU(A100_40GB.model, A100_40GB.memory_mib, mig=("1g.5gb",) * 3)]) or []
    assert group["Name"] == "NVIDIA A100-SXM4-40GB MIG 1g.5gb" and len(group["Instances"]) == 3
    assert group["Attributes"]["memory"] == {"Int": 4864, "Unit": "MiB"}


def _running_alloc(double: NomadDouble, job_id: str) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        allocs = requests.get(f"{double.address}/v1/job/{job_id}/allocations", timeout=10).json()
        if allocs and allocs[0]["ClientStatus"] == "running":
            return str(allocs[0]["ID"])
        time.sleep(0.05)
    raise AssertionError(f"{job_id} never ran: {allocs}")


def test_gpu_activity_reads_the_allocations_device_stats(tmp_path: Any) -> None:
    """Idle culling's GPU signal on Nomad (issue #16): nomad-device-nvidia's ``GPU utilization``
    per device of the allocation; a MIG device reports none, so nothing is known of it."""
    nodes = [DoubleNode("g", gpus=[H100]), DoubleNode("m", gpus=[H100_MIG])]
    with NomadDouble(nodes=nodes, images=[IDLE_IMAGE], root=tmp_path) as double:
        _measure(double)


def _measure(double: NomadDouble) -> None:
    import asyncio

    from fetchml_agent.nomad.client import NomadClient
    from fetchml_agent.nomad.schema import NomadSettings
    from fetchml_agent.runtimes.nomad.gpu import NomadGpuActivity

    _place(double, "gpu-util", {"Name": "nvidia/gpu/NVIDIA H100 80GB HBM3", "Count": 1})
    mig = {"LTarget": "${device.model}", "Operand": "=", "RTarget": "NVIDIA H100 80GB HBM3 MIG 3g.40gb"}
    _place(double, "gpu-util-mig", {"Name": "nvidia/gpu", "Count": 1, "Constraints": [mig]})
    activity = NomadGpuActivity()
    activity.client = NomadClient(NomadSettings(address=double.address))
    states = {"ws-full": {"alloc_id": _running_alloc(double, "gpu-util")},
              "ws-mig": {"alloc_id": _running_alloc(double, "gpu-util-mig")}}
    assert asyncio.run(activity.gpu_utilization(states)) == {"ws-full": 7.0}
