"""Nomad's HTTP API as the code relies on it, asserted on raw HTTP.

Run against a real Nomad (FETCHML_TEST_NOMAD_ADDR) these tests check that the double tells the
truth; run against the double they check that it keeps doing so. Tests of the double's own
failure knobs are marked as needing the double.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import pytest
import requests

from fetchml_agent.errors import BackendError, BackendUnavailable, InsufficientResources
from fetchml_agent.nomad.render import JobRenderer, WorkspaceJobRequest
from fetchml_agent.nomad.schema import NomadSettings
from fetchml_agent.runtimes.base import Resources
from fetchml_agent.runtimes.nomad import NomadRuntime
from tests.nomad_double.fixtures import CRASH_IMAGE, IDLE_IMAGE, NomadTarget
from tests.nomad_double.server import NomadDouble


def _headers(target: NomadTarget) -> dict[str, str]:
    return {"X-Nomad-Token": target.token} if target.token else {}


def _job(target: NomadTarget, name: str, **settings: Any) -> dict[str, Any]:
    renderer = JobRenderer(NomadSettings.from_config(target.settings(**settings)))
    return renderer.workspace(
        WorkspaceJobRequest(name=name, image=target.image, resources=Resources(cpu=1, memory_mb=256))
    )


def _put_secret(target: NomadTarget, job_id: str) -> None:
    """Write the Variable a workspace job's template block waits for."""
    path = f"nomad/jobs/{job_id}"
    body = {"Path": path, "Items": {"jupyter_config": "{}"}}
    requests.put(
        f"{target.address}/v1/var/{path}", json=body, headers=_headers(target), timeout=10
    ).raise_for_status()


def test_unknown_job_404_but_its_allocations_are_empty_and_its_stop_succeeds(
    nomad_target: NomadTarget,
) -> None:
    h = _headers(nomad_target)
    base = nomad_target.address
    job = requests.get(f"{base}/v1/job/fetchml-no-such-job", headers=h, timeout=10)
    assert job.status_code == 404 and job.headers["Content-Type"].startswith("text/plain")
    assert job.text.strip() == "job not found"
    allocs = requests.get(f"{base}/v1/job/fetchml-no-such-job/allocations", headers=h, timeout=10)
    assert allocs.status_code == 200 and allocs.json() == []
    assert int(allocs.headers["X-Nomad-Index"]) > 0
    stop = requests.delete(f"{base}/v1/job/fetchml-no-such-job", headers=h, timeout=10)
    assert stop.status_code == 200 and stop.json()["EvalID"] == ""


def test_register_decoding_and_validation_failures(nomad_target: NomadTarget) -> None:
    h = _headers(nomad_target)
    base = nomad_target.address
    job = _job(nomad_target, "contract")
    bad_duration = {"Job": dict(job["Job"], TaskGroups=[dict(job["Job"]["TaskGroups"][0])])}
    bad_duration["Job"]["TaskGroups"][0]["Tasks"] = [
        dict(job["Job"]["TaskGroups"][0]["Tasks"][0], KillTimeout="30s")
    ]
    r = requests.post(f"{base}/v1/jobs", json=bad_duration, headers=h, timeout=10)
    assert r.status_code == 400 and "cannot unmarshal" in r.text and "Duration" in r.text
    r = requests.post(f"{base}/v1/jobs", json=job["Job"], headers=h, timeout=10)  # not wrapped in "Job"
    assert r.status_code == 400
    invalid = {"Job": dict(job["Job"])}
    task = dict(job["Job"]["TaskGroups"][0]["Tasks"][0])
    task["Resources"] = dict(task["Resources"], MemoryMB=1)
    invalid["Job"]["TaskGroups"] = [dict(job["Job"]["TaskGroups"][0], Tasks=[task])]
    r = requests.post(f"{base}/v1/jobs", json=invalid, headers=h, timeout=10)
    assert (
        r.status_code == 500 and "MemoryMB" in r.text and r.headers["Content-Type"].startswith("text/plain")
    )
    r = requests.post(f"{base}/v1/validate/job", json=invalid, headers=h, timeout=10)
    assert r.status_code == 200 and any("MemoryMB" in e for e in r.json()["ValidationErrors"])
    r = requests.post(f"{base}/v1/validate/job", json=job, headers=h, timeout=10)
    assert r.status_code == 200 and not r.json()["ValidationErrors"]


def test_blocking_query_parameters(nomad_target: NomadTarget) -> None:
    h = _headers(nomad_target)
    url = f"{nomad_target.address}/v1/job/fetchml-no-such-job/allocations"
    index = int(requests.get(url, headers=h, timeout=10).headers["X-Nomad-Index"])
    t0 = time.monotonic()
    r = requests.get(url, params={"index": index, "wait": "1s"}, headers=h, timeout=10)
    assert r.status_code == 200 and time.monotonic() - t0 >= 0.9
    assert (
        requests.get(url, params={"index": index, "wait": "soon"}, headers=h, timeout=10).status_code == 400
    )
    assert requests.get(url, params={"index": "x"}, headers=h, timeout=10).status_code == 400


def test_variables_need_items_and_honour_check_and_set(nomad_target: NomadTarget) -> None:
    h = _headers(nomad_target)
    path = f"nomad/jobs/fetchml-contract-{secrets.token_hex(4)}"
    url = f"{nomad_target.address}/v1/var/{path}"
    assert requests.put(url, json={"Path": path}, headers=h, timeout=10).status_code == 400
    body = {"Namespace": "default", "Path": path, "Items": {"k": "v"}}
    first = requests.put(url, params={"cas": 0}, json=body, headers=h, timeout=10)
    assert first.status_code == 200 and first.json()["Items"] == {"k": "v"}
    assert requests.put(url, params={"cas": 0}, json=body, headers=h, timeout=10).status_code == 409
    got = requests.get(url, headers=h, timeout=10)
    assert got.status_code == 200 and got.json()["ModifyIndex"] == first.json()["ModifyIndex"]
    assert requests.delete(url, headers=h, timeout=10).status_code in (200, 204)
    assert requests.get(url, headers=h, timeout=10).status_code == 404


def test_gpu_constraint_on_device_attributes_filters_nodes(nomad_target: NomadTarget) -> None:
    double = nomad_target.need_double("depends on the double's GPU model (80 GiB)")
    settings = nomad_target.settings(
        gpu={"constraints": [{"attribute": "${device.attr.memory}", "operator": ">=", "value": "100 GiB"}]}
    )

    async def scenario() -> None:
        rt = NomadRuntime(settings)
        try:
            spec_job = rt.renderer.workspace(
                WorkspaceJobRequest(
                    name="big", image=nomad_target.image, resources=Resources(cpu=1, memory_mb=256, gpu=1)
                )
            )
            eval_id, _ = await rt._register(spec_job)
            try:
                await rt._wait_evaluation(eval_id, time.monotonic() + 20, "workspace big")
            finally:
                await rt.client.deregister_job(spec_job["Job"]["ID"], purge=True)
        finally:
            await rt.close()

    with pytest.raises(InsufficientResources) as err:
        asyncio.run(scenario())
    assert "no node has a GPU matching the request" in err.value.message
    assert double.address


def test_a_crashing_task_fails_the_start_with_nomads_reason(nomad_target: NomadTarget) -> None:
    nomad_target.need_double("needs an image that crashes on purpose")
    settings = nomad_target.settings(allowed_images=["fetchml/*"], default_image=CRASH_IMAGE.name)
    from tests.integration.nomad.test_nomad_runtime import _spec

    async def scenario() -> None:
        rt = NomadRuntime(settings)
        try:
            await rt.start(_spec("crash", nomad_target, image=CRASH_IMAGE.name))
        finally:
            await rt.close()

    with pytest.raises(BackendError) as err:
        asyncio.run(scenario())
    assert (
        "stopped while starting" in err.value.message
        or "stopped before Jupyter answered" in err.value.message
    )
    assert "Exceeded allowed attempts" in err.value.message or "Exit Code" in err.value.message


# -- the double's own knobs ------------------------------------------------------------------


def test_double_down_and_back(nomad_target: NomadTarget) -> None:
    double = nomad_target.need_double("turns the Nomad API off and on")
    settings = nomad_target.settings()

    async def poll() -> Any:
        rt = NomadRuntime(settings)
        try:
            return await rt.poll({"job_id": "fetchml-x", "alloc_id": None})
        finally:
            await rt.close()

    double.go_down()
    try:
        with pytest.raises(BackendUnavailable):
            asyncio.run(poll())
    finally:
        double.come_back()
    assert asyncio.run(poll()).state == "missing"


def test_double_injected_failure_maps_to_backend_error(nomad_target: NomadTarget) -> None:
    double = nomad_target.need_double("injects a failure")
    double.fail_next("GET", r"^/v1/job/", 500, "rpc error: internal failure")

    async def poll() -> Any:
        rt = NomadRuntime(nomad_target.settings())
        try:
            return await rt.poll({"job_id": "fetchml-x", "alloc_id": None})
        finally:
            await rt.close()

    with pytest.raises(BackendError) as err:
        asyncio.run(poll())
    assert "rpc error: internal failure" in err.value.message


def test_double_is_stricter_than_nomad_about_unknown_fields(nomad_target: NomadTarget) -> None:
    nomad_target.need_double("Nomad itself ignores unknown fields")
    job = _job(nomad_target, "strict")
    job["Job"]["TaskGroups"][0]["Reschedule"] = {"Attempts": 1}  # the job-level name, misplaced
    r = requests.post(f"{nomad_target.address}/v1/jobs", json=job, headers=_headers(nomad_target), timeout=10)
    assert r.status_code == 400 and 'unknown field "Reschedule"' in r.text


def test_double_acl_answers(nomad_target: NomadTarget) -> None:
    double = nomad_target.need_double("configures ACL tokens")
    url = f"{nomad_target.address}/v1/jobs"
    assert requests.get(url, timeout=10).status_code == 403
    assert requests.get(url, headers={"X-Nomad-Token": "unknown"}, timeout=10).text == "ACL token not found"
    saved = double.acl
    double.set_acl({**(saved or {}), "reader": {"read-job"}})
    try:
        assert requests.get(url, headers={"Authorization": "Bearer reader"}, timeout=10).status_code == 200
        denied = requests.post(
            url, json=_job(nomad_target, "acl"), headers={"X-Nomad-Token": "reader"}, timeout=10
        )
        assert (denied.status_code, denied.text) == (403, "Permission denied")
    finally:
        double.set_acl(saved)


def test_double_runs_many_idle_allocations(nomad_target: NomadTarget) -> None:
    double: NomadDouble = nomad_target.need_double("uses an image only the double has")
    settings = nomad_target.settings(default_image=IDLE_IMAGE.name, allowed_images=["fetchml/*"])
    renderer = JobRenderer(NomadSettings.from_config(settings))
    h = _headers(nomad_target)
    for i in range(5):
        job = renderer.workspace(
            WorkspaceJobRequest(name=f"idle{i}", resources=Resources(cpu=0.1, memory_mb=64))
        )
        _put_secret(nomad_target, job["Job"]["ID"])
        assert (
            requests.post(f"{nomad_target.address}/v1/jobs", json=job, headers=h, timeout=10).status_code
            == 200
        )
    deadline = time.monotonic() + 10
    prefix = f"{settings['job_prefix']}ws-"
    while time.monotonic() < deadline:
        running = [
            a
            for a in double.allocations()
            if a["JobID"].startswith(prefix) and a["ClientStatus"] == "running"
        ]
        if len(running) == 5:
            break
        time.sleep(0.05)
    assert len(running) == 5
    filtered = requests.get(
        f"{nomad_target.address}/v1/allocations",
        headers=h,
        timeout=10,
        params={"filter": f'JobID matches "^{prefix}" and ClientStatus == "running"'},
    ).json()
    assert len(filtered) == 5
    for i in range(5):
        requests.delete(
            f"{nomad_target.address}/v1/job/{prefix}idle{i}", params={"purge": "true"}, headers=h, timeout=10
        )


def test_double_task_waits_for_its_variable(nomad_target: NomadTarget) -> None:
    double = nomad_target.need_double("uses an image only the double has")
    settings = nomad_target.settings(default_image=IDLE_IMAGE.name, allowed_images=["fetchml/*"])
    job = JobRenderer(NomadSettings.from_config(settings)).workspace(
        WorkspaceJobRequest(name="waits", resources=Resources(cpu=0.1, memory_mb=64))
    )
    job_id = job["Job"]["ID"]
    h = _headers(nomad_target)
    requests.post(f"{nomad_target.address}/v1/jobs", json=job, headers=h, timeout=10).raise_for_status()

    def alloc() -> dict[str, Any]:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            found = [a for a in double.allocations() if a["JobID"] == job_id]
            events = [
                e["DisplayMessage"]
                for e in ((found or [{}])[0].get("TaskStates") or {}).get("jupyter", {}).get("Events", [])
            ]
            if found and (
                found[0]["ClientStatus"] == "running" or any(m.startswith("Missing:") for m in events)
            ):
                return found[0]
            time.sleep(0.05)
        raise AssertionError("no allocation")

    waiting = alloc()
    assert waiting["ClientStatus"] == "pending"
    assert waiting["TaskStates"]["jupyter"]["Events"][-1]["DisplayMessage"] == (
        f"Missing: nomad.var.block(nomad/jobs/{job_id}@default.global)"
    )
    _put_secret(nomad_target, job_id)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and alloc()["ClientStatus"] != "running":
        time.sleep(0.05)
    assert alloc()["ClientStatus"] == "running"
    requests.delete(
        f"{nomad_target.address}/v1/job/{job_id}", params={"purge": "true"}, headers=h, timeout=10
    )
