"""GPU types, free GPUs and unplaceable requests (fetchml_agent/nomad/devices.py).

The nodes are fingerprinted by the double's model of the NVIDIA device plugin
(tests/nomad_double/devices.py), and the agent's reading of a constraint is checked against the
double's scheduler on the same cases: the two are written independently from Nomad's source, so
they must agree.
"""

from __future__ import annotations

from typing import Any

import pytest

from fetchml_agent.nomad import devices
from tests.nomad_double import devices as double

H100_MIG = double.DoubleGPU(mig=("3g.40gb", "3g.40gb", "1g.10gb"))


def node(name: str, gpus: list[double.DoubleGPU], **kw: Any) -> dict[str, Any]:
    return {"ID": f"id-{name}", "Name": name, "Status": "ready", "SchedulingEligibility": "eligible",
            "NodePool": "default", "Datacenter": "dc1",
            "NodeResources": {"Devices": double.fingerprint(gpus)}, **kw}


NODES = [node("h100x2", [double.H100, double.H100]), node("mig", [H100_MIG]), node("a100", [double.A100_40GB])]
KNOWN = {g["Name"] for n in NODES for g in devices.device_groups(n)}


def test_the_fingerprint_is_what_the_types_are_matched_against() -> None:
    assert KNOWN == {"NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3 MIG 3g.40gb",
                     "NVIDIA H100 80GB HBM3 MIG 1g.10gb", "NVIDIA A100-SXM4-40GB"}


@pytest.mark.parametrize(("gpu_type", "operand", "right", "names"), [
    # a model by a word of its name, case-insensitive, never its MIG devices
    ("h100", "=", "NVIDIA H100 80GB HBM3", ["NVIDIA H100 80GB HBM3"]),
    ("A100-SXM4-40GB", "=", "NVIDIA A100-SXM4-40GB", ["NVIDIA A100-SXM4-40GB"]),
    ("nvidia h100 80gb hbm3", "=", "NVIDIA H100 80GB HBM3", ["NVIDIA H100 80GB HBM3"]),
    # a MIG profile, alone or with its model
    ("3g.40gb", "=", "NVIDIA H100 80GB HBM3 MIG 3g.40gb", ["NVIDIA H100 80GB HBM3 MIG 3g.40gb"]),
    ("H100:1g.10gb", "=", "NVIDIA H100 80GB HBM3 MIG 1g.10gb", ["NVIDIA H100 80GB HBM3 MIG 1g.10gb"]),
    ("h100 3G.40GB", "=", "NVIDIA H100 80GB HBM3 MIG 3g.40gb", ["NVIDIA H100 80GB HBM3 MIG 3g.40gb"]),
    # several models: any of them
    ("NVIDIA", "set_contains_any", "NVIDIA A100-SXM4-40GB,NVIDIA H100 80GB HBM3",
     ["NVIDIA A100-SXM4-40GB", "NVIDIA H100 80GB HBM3"]),
    # nothing matches: the type as given (Nomad then says no node has it)
    ("V100", "=", "V100", []),
    ("A100:3g.40gb", "regexp", r"(?i)A100.* MIG 3g\.40gb$", []),
])
def test_a_gpu_type_becomes_one_device_model_constraint(gpu_type: str, operand: str, right: str,
                                                         names: list[str]) -> None:
    constraint, matched = devices.gpu_type_constraint(gpu_type, KNOWN)
    assert constraint == {"LTarget": "${device.model}", "Operand": operand, "RTarget": right}
    assert matched == names


def test_without_a_fingerprint_a_model_is_its_full_name_and_a_profile_a_pattern() -> None:
    assert devices.gpu_type_constraint("NVIDIA H100 80GB HBM3")[0]["Operand"] == "="
    constraint, _ = devices.gpu_type_constraint("3g.40gb")
    assert constraint["Operand"] == "regexp"
    groups = [g for n in NODES for g in devices.device_groups(n)]
    assert [g["Name"] for g in groups if devices.satisfies(g, constraint)] == ["NVIDIA H100 80GB HBM3 MIG 3g.40gb"]


@pytest.mark.parametrize("text", ["", "h100; rm -rf /", "x" * 200, "../a"])
def test_text_that_cannot_be_a_gpu_type_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="invalid GPU type"):
        devices.gpu_type_constraint(text, KNOWN)


@pytest.mark.parametrize(("left", "operand", "right"), [
    ("${device.attr.memory}", ">=", "40 GiB"),
    ("${device.attr.memory}", ">=", "39 GiB"),
    ("${device.attr.memory}", "<", "10000 MiB"),
    ("${device.attr.memory}", ">", "40000"),  # a unitless number never compares with one with a unit
    ("${device.attr.power}", "<=", "0.5 kW"),
    ("${device.attr.cores_clock}", ">=", "1 GHz"),
    ("${device.attr.driver_version}", "=", "550.54.15"),
    ("${device.model}", "regexp", "MIG"),
    ("${device.model}", "!=", "NVIDIA H100 80GB HBM3"),
    ("${device.attr.nonexistent}", "is_not_set", ""),
    ("${device.attr.memory}", "is_set", ""),
])
def test_constraints_read_as_the_doubles_scheduler_reads_them(left: str, operand: str, right: str) -> None:
    for group in (g for n in NODES for g in devices.device_groups(n)):
        c = {"LTarget": left, "Operand": operand, "RTarget": right}
        assert devices.satisfies(group, c) == double._matches(group, {"Name": "nvidia/gpu", "Constraints": [c]}), (
            group["Name"], c)


def test_an_h100_mig_3g40gb_device_is_below_40_gib() -> None:
    request = {"Name": "nvidia/gpu", "Count": 1, "Constraints": [
        devices.gpu_type_constraint("3g.40gb", KNOWN)[0],
        {"LTarget": "${device.attr.memory}", "Operand": ">=", "RTarget": "40 GiB"},
    ]}
    text = devices.explain_unplaceable(NODES, request)
    assert text.startswith('no GPU has both ${device.model} = "NVIDIA H100 80GB HBM3 MIG 3g.40gb" and '
                           '${device.attr.memory} >= "40 GiB"')
    assert "NVIDIA H100 80GB HBM3 MIG 3g.40gb: ${device.attr.memory} is 40448 MiB" in text


def test_explanations_name_what_fails() -> None:
    constraint, _ = devices.gpu_type_constraint("V100", KNOWN)
    text = devices.explain_unplaceable(NODES, {"Name": "nvidia/gpu", "Count": 1, "Constraints": [constraint]})
    assert text.startswith('no GPU in the cluster has ${device.model} = "V100" (GPU types: NVIDIA A100-SXM4-40GB, ')
    h100, _ = devices.gpu_type_constraint("h100", KNOWN)
    text = devices.explain_unplaceable(NODES, {"Name": "nvidia/gpu", "Count": 3, "Constraints": [h100]})
    assert text == "no node has 3 healthy GPUs of that kind (most: 2 on h100x2; types: NVIDIA H100 80GB HBM3)"
    held = [{"NodeID": "id-h100x2", "ClientStatus": "running", "DesiredStatus": "run",
             "AllocatedResources": {"Tasks": {"t": {"Devices": [
                 {"DeviceIDs": [i["ID"] for i in devices.device_groups(NODES[0])[0]["Instances"]]}]}}}}]
    text = devices.explain_unplaceable(NODES, {"Name": "nvidia/gpu", "Count": 1, "Constraints": [h100]}, held)
    assert text.startswith("all matching GPUs are in use: no node has 1 free (most free: 0 on h100x2")
    assert devices.explain_unplaceable([node("cpu", [])], {"Count": 1}).startswith("no node in the job's node pool")


def test_free_gpus_per_node_and_type() -> None:
    mig = NODES[1]
    three_g = next(g for g in devices.device_groups(mig) if g["Name"].endswith("3g.40gb"))
    allocs = [
        {"NodeID": "id-mig", "ClientStatus": "running", "DesiredStatus": "run",
         "AllocatedResources": {"Tasks": {"t": {"Devices": [{"DeviceIDs": [three_g["Instances"][0]["ID"]]}]}}}},
        # terminal: its GPU is free again (a completed run; a workspace being stopped)
        {"NodeID": "id-mig", "ClientStatus": "complete", "DesiredStatus": "run",
         "AllocatedResources": {"Tasks": {"t": {"Devices": [{"DeviceIDs": [three_g["Instances"][1]["ID"]]}]}}}},
    ]
    rows = {(r["node"], r["type"]): r for r in devices.free_gpus(NODES, allocs)}
    assert rows[("mig", "NVIDIA H100 80GB HBM3 MIG 3g.40gb")] | {} == {
        "node": "mig", "node_id": "id-mig", "status": "ready", "eligible": True,
        "type": "NVIDIA H100 80GB HBM3 MIG 3g.40gb", "memory_mib": 40448, "total": 2, "healthy": 2, "free": 1}
    assert rows[("h100x2", "NVIDIA H100 80GB HBM3")]["free"] == 2
    assert len(rows) == 4
