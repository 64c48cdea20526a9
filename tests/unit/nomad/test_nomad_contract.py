"""The contract that holds the Nomad double to Nomad's own OpenAPI description (``contract.py``).

The double checks every exchange against it during the Nomad tests (the ``nomad_contract``
fixture); these tests check the checker: it catches what it should, it excuses only what its
DEVIATIONS table names, and every entry of that table is still a real difference from the spec.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.nomad_double.contract import DEVIATIONS, Contract, component, schema_errors, spec, zero

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "nomad"


def _query_params(op: dict[str, Any]) -> set[str]:
    declared = spec()["components"]["parameters"]
    params = [declared[p["$ref"].rsplit("/", 1)[1]] if "$ref" in p else p for p in op.get("parameters") or []]
    return {p["name"] for p in params if p["in"] == "query"}


@pytest.mark.parametrize("key", sorted(DEVIATIONS))
def test_every_deviation_is_a_real_difference_from_the_spec(key: str) -> None:
    dev = DEVIATIONS[key]
    assert dev.why and re.match(r"^[a-z]+/[\w/]+\.go\b", dev.source), f"{key}: say why, and which Nomad file"
    paths = spec()["paths"]
    if key.startswith("?"):
        name, *op = key[1:].split()
        if op:
            assert name not in _query_params(paths[op[1]][op[0].lower()]), f"{key}: the spec declares it"
        else:
            assert any(name not in _query_params(o) for p in paths.values() for o in p.values())
    elif re.fullmatch(r"[A-Z]+ /\S+ \d{3}", key):
        method, path, status = key.split()
        op = paths.get(path, {}).get(method.lower()) or paths.get(path, {}).get("post")
        assert op is None or status not in op["responses"], f"{key}: the spec declares it"
    elif re.fullmatch(r"[A-Z]+ /\S+", key):
        method, path = key.split()
        assert method.lower() not in paths.get(path, {}), f"{key}: the spec has it"
    else:
        schema, field = key.split(".")
        raw = spec()["components"]["schemas"].get(schema)
        assert raw is not None, f"{key}: no such schema"
        assert field not in (raw.get("properties") or {}), f"{key}: the spec has the field"
        assert field in component(schema)["properties"]


@pytest.mark.parametrize("golden", sorted(GOLDEN.glob("*.json")), ids=lambda p: p.stem)
def test_the_agents_rendered_jobs_fit_the_spec(golden: Path) -> None:
    assert (
        schema_errors(json.loads(golden.read_text()), {"$ref": "#/components/schemas/JobRegisterRequest"})
        == []
    )


def _check(contract: Contract, method: str, path: str, status: int = 200, **kw: Any) -> list[str]:
    answer = kw.pop("answer", None)
    return contract.check(
        method,
        path,
        kw.pop("query", []),
        json.dumps(kw["body"]).encode() if "body" in kw else b"",
        status,
        kw.pop("content_type", "application/json" if status < 300 else "text/plain; charset=utf-8"),
        json.dumps(answer).encode() if answer is not None else None,
    )


def test_mismatches_are_caught_and_named() -> None:
    c = Contract()
    stub = {"ID": "a", "TaskStates": None, "PreemptedAllocations": None}
    assert _check(c, "GET", "/v1/allocations", answer=[stub]) == []  # nil maps and slices are null
    assert _check(c, "GET", "/v1/allocations", answer=[{**stub, "Invented": 1}]) == [
        "answer [0]: Additional properties are not allowed ('Invented' was unexpected)"
    ]
    assert _check(c, "GET", "/v1/allocations", query=[("task_state", "false")], answer=[]) == [
        "query parameter 'task_state' is not one Nomad reads here"
    ]
    assert _check(c, "GET", "/v1/allocations", query=[("resources", "yes")], answer=[]) == [
        "query parameter resources='yes' is not a Go bool"
    ]
    job = json.loads((GOLDEN / "experiment-run.json").read_text())
    job["Job"]["TaskGroups"][0]["Tasks"][0]["KillTimeout"] = "30s"
    assert _check(c, "POST", "/v1/jobs", 400, body=job) == []  # refused, as Nomad refuses it
    accepted = _check(c, "POST", "/v1/jobs", body=job, answer={"EvalID": "e", "Index": 5})
    assert accepted == ["request Job.TaskGroups[0].Tasks[0].KillTimeout: '30s' is not of type 'integer'"]
    assert _check(c, "GET", "/v1/job/x", 404) == []  # excused: DEVIATIONS["GET /job/{jobName} 404"]
    assert _check(c, "GET", "/v1/job/x", 409) == ["status 409 is not one Nomad answers here"]
    assert _check(c, "GET", "/v1/job/x", 500, content_type="application/json") == [
        "Nomad answers errors as text/plain, not application/json"
    ]
    assert _check(c, "GET", "/v1/no/such/thing") == ["no such path in Nomad's API"]
    assert len(c.violations) == 7 and "GET /v1/job/x" in "".join(c.violations)
    assert {"GET /job/{jobName} 404", "?index"} & c.excused == {"GET /job/{jobName} 404"}


def test_event_stream_frames_are_checked_down_to_their_payloads() -> None:
    """Each event's payload is held to the spec's schema of what it carries (an Allocation event
    to ``Allocation``, as GET /v1/allocation/{id} is), not only the frame's envelope."""
    c = Contract()
    alloc = {"ID": "a", "JobID": "j", "ClientStatus": "running", "TaskStates": None, "PreemptedAllocations": None}
    event = {"Topic": "Allocation", "Type": "AllocationUpdated", "Key": "a", "Namespace": "default",
             "FilterKeys": ["j"], "Index": 7, "Payload": {"Allocation": alloc}}
    c.check_frame("good", {"Index": 7, "Events": [event]})
    assert c.violations == []
    c.check_frame("bad", {"Index": 7, "Events": [{**event, "Payload": {"Allocation": {**alloc, "ClientStatus": 3}}}]})
    c.check_frame("empty", {"Index": 8, "Events": [{**event, "Topic": "Job", "Payload": {"Allocation": alloc}}]})
    assert len(c.violations) == 2, c.violations
    assert "Events[0].Payload.Allocation.ClientStatus: 3 is not of type 'string'" in c.violations[0]
    assert "Events[0].Payload: no Job" in c.violations[1]

def test_zero_values_are_gos() -> None:
    event = zero("TaskEvent", Type="Started")
    assert set(event) == set(component("TaskEvent")["properties"])
    assert (event["Type"], event["Details"], event["ExitCode"], event["FailsTask"]) == (
        "Started",
        None,
        0,
        False,
    )
    assert zero("Evaluation")["WaitUntil"] == "0001-01-01T00:00:00Z"
    with pytest.raises(KeyError):
        zero("TaskEvent", Invented=1)
