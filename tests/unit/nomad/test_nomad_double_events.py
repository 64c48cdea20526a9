"""The Nomad double's event stream, over HTTP, as Nomad serves ``/v1/event/stream``.

These test the double itself (its frames, filters, resume index, heartbeats and ACL answers) so
that the agent's stream follower can rely on it; the behaviour each test pins comes from the
Nomad source files named in ``NomadDouble.h_event_stream``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.nomad_double import DoubleNode, NomadDouble
from tests.nomad_double.fixtures import IDLE_IMAGE

MANAGEMENT, READER = "management-token", "reader-token"


@pytest.fixture(scope="module")
def double(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NomadDouble]:
    acl = {MANAGEMENT: {"*"}, READER: {"read-job"}}
    with NomadDouble(
        nodes=[DoubleNode("n1")], images=[IDLE_IMAGE], acl=acl, root=tmp_path_factory.mktemp("events")
    ) as d:
        yield d
    assert d.contract is not None and d.contract.violations == []


def _job(job_id: str, namespace: str = "default") -> dict[str, Any]:
    task = {
        "Name": "t",
        "Driver": "docker",
        "Config": {"image": IDLE_IMAGE.name},
        "Resources": {"CPU": 100, "MemoryMB": 64},
    }
    return {
        "Job": {
            "ID": job_id,
            "Namespace": namespace,
            "Datacenters": ["*"],
            "TaskGroups": [{"Name": "g", "Tasks": [task]}],
        }
    }


def _register(double: NomadDouble, job_id: str) -> int:
    r = requests.post(
        f"{double.address}/v1/jobs", json=_job(job_id), headers={"X-Nomad-Token": MANAGEMENT}, timeout=10
    )
    r.raise_for_status()
    return int(r.json()["Index"])


def _running(double: NomadDouble, job_id: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if any(a["JobID"] == job_id and a["ClientStatus"] == "running" for a in double.allocations()):
            return
        time.sleep(0.02)
    raise AssertionError(f"{job_id} never ran")


class Stream:
    """An open ``/v1/event/stream``: its decoded lines, read up to a condition."""

    def __init__(self, double: NomadDouble, token: str = MANAGEMENT, **params: Any) -> None:
        self.response = requests.get(
            f"{double.address}/v1/event/stream",
            params=params,
            headers={"X-Nomad-Token": token},
            stream=True,
            timeout=10,
        )
        self.lines = self.response.iter_lines()

    def frames(self, until: Any, limit: float = 10.0) -> list[dict[str, Any]]:
        """Lines (``{}`` heartbeats included) until ``until(frames)`` holds."""
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + limit
        while not until(out):
            assert time.monotonic() < deadline, f"stream stopped short: {out}"
            out.append(json.loads(next(self.lines)))
        return out

    def close(self) -> None:
        self.response.close()


def _events(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for f in frames for e in f.get("Events") or []]


def test_a_job_run_is_a_sequence_of_frames_each_with_its_index(double: NomadDouble) -> None:
    stream = Stream(double, topic=["Job:ev-a", "Evaluation:ev-a", "Allocation:ev-a"])
    try:
        heartbeat = stream.frames(lambda f: len(f) == 1)
        assert heartbeat == [{}]  # Nomad's first line says the subscription is up
        index = _register(double, "ev-a")
        frames = stream.frames(
            lambda f: any(
                e["Topic"] == "Allocation" and e["Payload"]["Allocation"]["ClientStatus"] == "running"
                for e in _events(f)
            )
        )
    finally:
        stream.close()
    first = frames[0]
    assert first["Index"] == index
    assert {(e["Topic"], e["Type"]) for e in first["Events"]} == {
        ("Job", "JobRegistered"),
        ("Evaluation", "JobRegistered"),
    }
    for frame in frames:
        assert all(e["Index"] == frame["Index"] for e in frame["Events"])
    assert [f["Index"] for f in frames] == sorted({f["Index"] for f in frames})
    kinds = [(e["Topic"], e["Type"]) for e in _events(frames)]
    assert ("Allocation", "PlanResult") in kinds and ("Evaluation", "EvaluationUpdated") in kinds
    assert ("Allocation", "AllocationUpdated") in kinds
    alloc_event = next(e for e in _events(frames) if e["Topic"] == "Allocation")
    assert alloc_event["FilterKeys"] == ["ev-a", ""] and alloc_event["Namespace"] == "default"
    assert alloc_event["Payload"]["Allocation"]["Job"] is None  # Nomad strips the job from alloc events
    job_states = [e["Payload"]["Job"]["Status"] for e in _events(frames) if e["Topic"] == "Job"]
    assert job_states[0] == "pending" and job_states[-1] == "running"


def test_topic_keys_filter_on_key_and_filter_keys(double: NomadDouble) -> None:
    _register(double, "ev-b1")
    _register(double, "ev-b2")
    _running(double, "ev-b2")
    stream = Stream(double, topic="Allocation:ev-b2", index=1)
    try:
        frames = stream.frames(
            lambda f: any(e["Payload"]["Allocation"]["ClientStatus"] == "running" for e in _events(f))
        )
    finally:
        stream.close()
    events = _events(frames)
    assert events and all(e["Topic"] == "Allocation" and e["FilterKeys"][0] == "ev-b2" for e in events)


def test_resuming_at_an_index_delivers_that_frame_again(double: NomadDouble) -> None:
    index = _register(double, "ev-c")
    _running(double, "ev-c")
    stream = Stream(double, topic="Job:ev-c", index=index)
    try:
        frames = stream.frames(lambda f: len(f) >= 2)
    finally:
        stream.close()
    assert frames[0] == {} and frames[1]["Index"] == index  # inclusive: the client must skip it
    newest = double.call(lambda: double.cluster.events[-1][0])
    stream = Stream(double, index=newest + 1000)
    try:
        frames = stream.frames(lambda f: len(f) >= 2)
    finally:
        stream.close()
    assert frames[1]["Index"] == newest  # past the newest frame, Nomad replays the newest


def test_namespaces_filter_events(double: NomadDouble) -> None:
    double.namespaces.add("other")
    r = requests.post(
        f"{double.address}/v1/jobs",
        json=_job("ev-d", "other"),
        headers={"X-Nomad-Token": MANAGEMENT},
        timeout=10,
    )
    r.raise_for_status()
    index = int(r.json()["Index"])
    default_ns = Stream(double, topic="Job", index=index)
    all_ns = Stream(double, topic="Job", index=index, namespace="*")
    try:
        assert _events(all_ns.frames(lambda f: len(f) >= 2))[0]["Namespace"] == "other"
        _register(double, "ev-d-default")
        seen = _events(default_ns.frames(lambda f: bool(_events(f))))
    finally:
        default_ns.close()
        all_ns.close()
    assert {e["Namespace"] for e in seen} == {"default"}


def test_heartbeats_keep_coming(double: NomadDouble) -> None:
    double.event_heartbeat = 0.1
    try:
        stream = Stream(double, topic="Job:nothing-happens-here")
        try:
            assert stream.frames(lambda f: len(f) >= 3) == [{}, {}, {}]
        finally:
            stream.close()
    finally:
        double.event_heartbeat = 30.0


def test_bad_requests_and_acls(double: NomadDouble) -> None:
    url = f"{double.address}/v1/event/stream"
    h = {"X-Nomad-Token": MANAGEMENT}
    bad = requests.get(url, params={"index": "soon"}, headers=h, timeout=10)
    assert (bad.status_code, bad.text) == (
        400,
        'Unable to parse index: strconv.Atoi: parsing "soon": invalid syntax',
    )
    bad = requests.get(url, params={"topic": "Job:a:b"}, headers=h, timeout=10)
    assert bad.status_code == 400 and "Invalid key value pair for topic, topic: Job:a:b" in bad.text
    assert requests.post(url, headers=h, timeout=10).status_code == 405
    double.fail_next("GET", "^/v1/event/stream$", 500, "rpc error: No cluster leader")
    failed = requests.get(url, headers=h, timeout=10)
    assert (failed.status_code, failed.text) == (500, "rpc error: No cluster leader")
    for token, topic in ((READER, "Node"), (READER, "*"), ("unknown", "Job")):
        denied = requests.get(url, params={"topic": topic}, headers={"X-Nomad-Token": token}, timeout=10)
        assert (denied.status_code, denied.text) == (403, "Permission denied")
    allowed = Stream(double, token=READER, topic="Job")
    try:
        assert allowed.response.status_code == 200 and allowed.frames(lambda f: len(f) == 1) == [{}]
    finally:
        allowed.close()


@pytest.mark.parametrize(
    ("version", "status", "body"), [("2.0.6", 200, ""), ("0.12.12", 404, "404 page not found\n")]
)
def test_other_nomad_versions(tmp_path: Path, version: str, status: int, body: str) -> None:
    with NomadDouble(nodes=[], acl={READER: {"read-job"}}, root=tmp_path, version=version) as d:
        r = requests.get(
            f"{d.address}/v1/event/stream",
            params={"topic": "Node"},
            headers={"X-Nomad-Token": READER},
            timeout=10,
        )
    assert (r.status_code, r.text) == (status, body)  # 2.x: the status line goes before the ACL check
