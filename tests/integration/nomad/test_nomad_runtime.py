"""NomadRuntime against a Nomad: the double by default, a real one with FETCHML_TEST_NOMAD_ADDR.

One workspace (a real JupyterLab) is started for the module and shared by the tests that only
look at it; the last test stops and removes it. Failure paths start their own jobs.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

from fetchml_agent.errors import (
    BackendError,
    BackendUnavailable,
    InsufficientResources,
    InvalidArgument,
    InvalidState,
    NotFound,
    PermissionDenied,
    PolicyDenied,
    Timeout,
)
from fetchml_agent.nomad.client import NomadClient
from fetchml_agent.nomad.render import WorkspaceJobRequest, secret_variable_path
from fetchml_agent.nomad.schema import NomadSettings
from fetchml_agent.runtimes.base import Resources, Started, WorkspaceSpec
from fetchml_agent.runtimes.nomad import NomadRuntime
from tests.nomad_double.fixtures import NomadTarget, closed_port


def _spec(name: str, target: NomadTarget, **kw: Any) -> WorkspaceSpec:
    return WorkspaceSpec(
        id=f"w-{uuid.uuid4().hex[:8]}",
        name=name,
        owner="alice",
        path=Path("/unused/on/nomad"),
        token=secrets.token_hex(24),
        image=kw.pop("image", target.image),
        resources=kw.pop("resources", Resources(cpu=1, memory_mb=1024)),
        env=kw.pop("env", {"FETCHML_TEST": "1"}),
        **kw,
    )


def _api(target: NomadTarget, path: str, **params: Any) -> requests.Response:
    headers = {"X-Nomad-Token": target.token} if target.token else {}
    return requests.get(target.address + path, params=params, headers=headers, timeout=10)


async def _with_runtime(settings: dict[str, Any], fn: Any) -> Any:
    rt = NomadRuntime(settings)
    try:
        await rt.open()
        return await fn(rt)
    finally:
        await rt.close()


class Shared:
    settings: dict[str, Any]
    spec: WorkspaceSpec
    started: Started
    progress: list[str]


@pytest.fixture(scope="module")
def workspace(nomad_target: NomadTarget) -> Iterator[Shared]:
    shared = Shared()
    shared.settings = nomad_target.settings()
    shared.spec = _spec(
        "lab", nomad_target, password_hash="sha1:0123456789ab:deadbeefdeadbeefdeadbeefdeadbeefdeadbeef"
    )
    shared.progress = []

    async def report(line: str) -> None:
        shared.progress.append(line)

    async def start(rt: NomadRuntime) -> Started:
        return await rt.start(shared.spec, report)

    shared.started = asyncio.run(_with_runtime(shared.settings, start))
    yield shared

    async def cleanup(rt: NomadRuntime) -> None:
        await rt.remove(shared.spec, shared.started.state)

    asyncio.run(_with_runtime(shared.settings, cleanup))


def test_start_reports_progress_in_order_and_jupyter_answers_with_the_token(workspace: Shared) -> None:
    progress = workspace.progress
    assert progress[0] == "placing" and progress[-1] == "ready"
    assert progress.index("starting") < progress.index("ready")
    if "pulling image" in progress:
        assert progress.index("placing") < progress.index("pulling image") < progress.index("starting")
    url = workspace.started.url
    assert url.startswith("http://") and url.endswith("/")
    ok = httpx.get(url + "api/status", headers={"Authorization": f"token {workspace.spec.token}"}, timeout=5)
    assert ok.status_code == 200 and "started" in ok.json()
    assert httpx.get(url + "api/status", timeout=5).status_code == 403
    state = workspace.started.state
    assert set(state) >= {"job_id", "alloc_id", "url", "namespace"}
    json.dumps(state)  # the store persists it as JSON


def test_secrets_travel_in_a_variable_never_in_the_job(workspace: Shared, nomad_target: NomadTarget) -> None:
    job_id = workspace.started.state["job_id"]
    job = _api(nomad_target, f"/v1/job/{job_id}")
    assert job.status_code == 200
    text = job.text
    assert workspace.spec.token not in text
    assert workspace.spec.password_hash not in text  # type: ignore[operator]
    assert job.json()["TaskGroups"][0]["Tasks"][0]["Env"]["FETCHML_TEST"] == "1"
    var = _api(nomad_target, f"/v1/var/{secret_variable_path(job_id)}", namespace="default")
    assert var.status_code == 200
    config = json.loads(var.json()["Items"]["jupyter_config"])
    assert config["IdentityProvider"]["token"] == workspace.spec.token
    assert config["PasswordIdentityProvider"]["hashed_password"] == workspace.spec.password_hash


def test_poll_and_poll_many_report_live_status(workspace: Shared) -> None:
    state = workspace.started.state
    ghost = dict(state, job_id=state["job_id"] + "-gone", alloc_id=None)

    async def scenario(rt: NomadRuntime) -> Any:
        return await rt.poll(state), await rt.poll(ghost), await rt.poll_many([state, ghost])

    one, missing, many = asyncio.run(_with_runtime(workspace.settings, scenario))
    assert one.state == "running" and one.url == workspace.started.url
    assert missing.state == "missing" and ghost["job_id"] in missing.message
    assert [s.state for s in many] == ["running", "missing"]
    assert many[0].url == workspace.started.url


def test_a_new_runtime_instance_adopts_the_running_workspace(workspace: Shared) -> None:
    async def scenario(rt: NomadRuntime) -> Any:
        return await rt.discover()

    found = dict(asyncio.run(_with_runtime(workspace.settings, scenario)))
    assert workspace.spec.id in found
    adopted = found[workspace.spec.id]
    for key in ("job_id", "alloc_id", "url", "namespace"):
        assert adopted[key] == workspace.started.state[key]


def test_stats_come_from_the_allocation(workspace: Shared) -> None:
    async def scenario(rt: NomadRuntime) -> Any:
        return await rt.stats(workspace.started.state)

    stats = asyncio.run(_with_runtime(workspace.settings, scenario))
    assert stats["memory_bytes"] > 0
    assert isinstance(stats["cpu_percent"], float)
    assert stats["memory_limit_mb"] == 1024
    assert stats["gpus"] == []


def test_exec_runs_in_the_workspace_and_streams_output(workspace: Shared) -> None:
    chunks: list[bytes] = []

    async def collect(chunk: bytes) -> None:
        chunks.append(chunk)

    async def scenario(rt: NomadRuntime) -> Any:
        ok = await rt.exec(
            workspace.spec,
            workspace.started.state,
            ["python3", "-c", "import os, sys; print(os.environ['GREETING']); sys.stderr.write('e\\n')"],
            output=collect,
            env={"GREETING": "hello from nomad"},
        )
        bad = await rt.exec(workspace.spec, workspace.started.state, ["sh", "-c", "exit 3"])
        return ok, bad

    ok, bad = asyncio.run(_with_runtime(workspace.settings, scenario))
    assert ok.exit_code == 0
    assert b"hello from nomad\n" in ok.output and b"e\n" in ok.output
    assert b"".join(chunks) == ok.output
    assert bad.exit_code == 3


def test_exec_of_a_command_that_ends_before_its_stdin_is_sent_reports_its_exit(workspace: Shared) -> None:
    """Nomad sends the exit frame and closes as soon as the command ends, even while the client is
    still sending stdin the command never reads: the exit code still comes back."""

    async def scenario(rt: NomadRuntime) -> Any:
        return [await rt.exec(workspace.spec, workspace.started.state, ["sh", "-c", "echo done; exit 4"],
                              stdin=b"x" * (8 << 20)) for _ in range(3)]

    for res in asyncio.run(_with_runtime(workspace.settings, scenario)):
        assert res.exit_code == 4 and res.output == b"done\n"


def test_exec_errors_are_project_errors(workspace: Shared) -> None:
    async def scenario(rt: NomadRuntime) -> list[type]:
        seen = []
        for state in ({"job_id": "x", "alloc_id": str(uuid.uuid4())}, None):
            try:
                await rt.exec(workspace.spec, state, ["true"])
            except (NotFound, InvalidState) as exc:
                seen.append(type(exc))
        return seen

    assert asyncio.run(_with_runtime(workspace.settings, scenario)) == [NotFound, InvalidState]


def test_exec_timeout(workspace: Shared) -> None:
    async def scenario(rt: NomadRuntime) -> None:
        await rt.exec(workspace.spec, workspace.started.state, ["sleep", "30"], timeout=1)

    with pytest.raises(Timeout):
        asyncio.run(_with_runtime(workspace.settings, scenario))


def test_restart_restarts_the_allocation_in_place(workspace: Shared) -> None:
    state = workspace.started.state
    headers = {"Authorization": f"token {workspace.spec.token}"}
    before = httpx.get(workspace.started.url + "api/status", headers=headers, timeout=5).json()["started"]

    async def scenario(rt: NomadRuntime) -> Any:
        await rt.restart(state)
        deadline = asyncio.get_running_loop().time() + 90
        while asyncio.get_running_loop().time() < deadline:
            try:
                r = httpx.get(workspace.started.url + "api/status", headers=headers, timeout=2)
                if r.status_code == 200 and r.json()["started"] != before:
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.3)
        alloc, _ = await rt.client.get_allocation(state["alloc_id"])
        return alloc, await rt.poll(state)

    alloc, status = asyncio.run(_with_runtime(workspace.settings, scenario))
    assert alloc["TaskStates"]["jupyter"]["Restarts"] >= 1
    assert status.state == "running" and status.url == workspace.started.url
    with pytest.raises(InvalidState):
        asyncio.run(
            _with_runtime(workspace.settings, lambda rt: rt.restart({"job_id": "x", "alloc_id": None}))
        )


def test_gpu_workspace_gets_an_nvidia_device(nomad_target: NomadTarget) -> None:
    if not nomad_target.has_gpu:
        pytest.skip("the Nomad under test has no free GPU (set FETCHML_TEST_NOMAD_GPUS=1 if it has)")
    settings = nomad_target.settings()
    spec = _spec("gpu", nomad_target, resources=Resources(cpu=1, memory_mb=1024, gpu=1))

    async def scenario(rt: NomadRuntime) -> Any:
        started = await rt.start(spec)
        try:
            alloc = await rt.client.get_allocation(started.state["alloc_id"])
            stats = await rt.stats(started.state)
            job = await rt.client.get_job(started.state["job_id"])
            return alloc[0], stats, job
        finally:
            await rt.remove(spec, started.state)

    alloc, stats, job = asyncio.run(_with_runtime(settings, scenario))
    task = job["TaskGroups"][0]["Tasks"][0]
    assert task["Resources"]["Devices"][0]["Name"] == "nvidia/gpu"
    assert {"LTarget": "${attr.driver.docker.runtimes}", "Operand": "set_contains", "RTarget": "nvidia"} in [
        {k: c[k] for k in ("LTarget", "Operand", "RTarget")} for c in job["Constraints"]
    ]
    devices = alloc["AllocatedResources"]["Tasks"]["jupyter"]["Devices"]
    assert devices[0]["Vendor"] == "nvidia" and len(devices[0]["DeviceIDs"]) == 1
    assert stats["gpus"] and stats["gpus"][0]["id"] == devices[0]["DeviceIDs"][0]


def _assert_cleaned_up(nomad_target: NomadTarget, job_id: str) -> None:
    assert _api(nomad_target, f"/v1/job/{job_id}").status_code == 404
    assert (
        _api(nomad_target, f"/v1/var/{secret_variable_path(job_id)}", namespace="default").status_code == 404
    )


def test_placement_failure_names_the_missing_gpu_and_cleans_up(nomad_target: NomadTarget) -> None:
    settings = nomad_target.settings()
    spec = _spec("toomany", nomad_target, resources=Resources(cpu=1, memory_mb=1024, gpu=8))
    progress: list[str] = []

    async def report(line: str) -> None:
        progress.append(line)

    async def scenario(rt: NomadRuntime) -> None:
        await rt.start(spec, report)

    with pytest.raises(InsufficientResources) as err:
        asyncio.run(_with_runtime(settings, scenario))
    assert "GPU" in err.value.message
    assert progress == ["placing"]
    _assert_cleaned_up(nomad_target, f"{settings['job_prefix']}ws-toomany")


def test_image_pull_failure_is_reported_with_nomads_message(nomad_target: NomadTarget) -> None:
    settings = nomad_target.settings(pull_timeout=120)
    spec = _spec("nopull", nomad_target, image="fetchml/does-not-exist:never")
    progress: list[str] = []

    async def report(line: str) -> None:
        progress.append(line)

    async def scenario(rt: NomadRuntime) -> None:
        await rt.start(spec, report)

    with pytest.raises(BackendError) as err:
        asyncio.run(_with_runtime(settings, scenario))
    assert "could not be pulled" in err.value.message and "fetchml/does-not-exist:never" in err.value.message
    assert progress[:2] == ["placing", "pulling image"]
    _assert_cleaned_up(nomad_target, f"{settings['job_prefix']}ws-nopull")


def test_disallowed_image_and_volume_and_size_are_refused_before_nomad(nomad_target: NomadTarget) -> None:
    settings = nomad_target.settings(
        allowed_images=["fetchml/*"], max={"cpu": 2, "memory_mb": 4096, "gpu": 1}
    )
    cases = [
        (_spec("badimg", nomad_target, image="docker.io/library/python:3"), PolicyDenied),
        (_spec("bigcpu", nomad_target, resources=Resources(cpu=3)), InvalidArgument),
        (_spec("bigmem", nomad_target, resources=Resources(memory_mb=8192)), InvalidArgument),
        (_spec("biggpu", nomad_target, resources=Resources(gpu=2)), InvalidArgument),
    ]

    async def scenario(rt: NomadRuntime) -> list[type]:
        seen = []
        for spec, _ in cases:
            try:
                await rt.start(spec)
            except (PolicyDenied, InvalidArgument) as exc:
                seen.append(type(exc))
        seen.append(len(await rt.client.list_jobs(settings["job_prefix"])))
        return seen

    result = asyncio.run(_with_runtime(settings, scenario))
    assert result == [PolicyDenied, InvalidArgument, InvalidArgument, InvalidArgument, 0]
    with pytest.raises(PolicyDenied):
        NomadRuntime(dict(settings, workspace_volume={"source": "etc"})).renderer.workspace(
            WorkspaceJobRequest(name="vol", image="fetchml/x:1")
        )


def test_nomad_unreachable_is_backend_unavailable(nomad_target: NomadTarget) -> None:
    settings = nomad_target.settings(address=f"http://127.0.0.1:{closed_port()}")

    async def scenario(rt: NomadRuntime) -> None:
        return None

    with pytest.raises(BackendUnavailable) as err:
        asyncio.run(_with_runtime(settings, scenario))
    assert settings["address"] in err.value.message
    assert "nomad.address" in err.value.details


def test_acl_denied_is_permission_denied(nomad_target: NomadTarget) -> None:
    settings = nomad_target.settings(token=str(uuid.uuid4()))
    probe = requests.get(
        nomad_target.address + "/v1/jobs", headers={"X-Nomad-Token": settings["token"]}, timeout=10
    )
    if probe.status_code == 200:
        pytest.skip("ACLs are disabled on the Nomad under test")

    async def scenario(rt: NomadRuntime) -> None:
        await rt.discover()

    with pytest.raises(PermissionDenied) as err:
        asyncio.run(_with_runtime(settings, scenario))
    assert "ACL token" in err.value.message and "docs/nomad.md" in err.value.details


def test_a_job_nomad_rejects_reports_nomads_validation_errors(nomad_target: NomadTarget) -> None:
    settings = nomad_target.settings()

    async def scenario(rt: NomadRuntime) -> None:
        job = rt.renderer.workspace(WorkspaceJobRequest(name="invalid", image=nomad_target.image))
        job["Job"]["TaskGroups"][0]["Tasks"][0]["Resources"]["MemoryMB"] = 1
        await rt._register(job)

    with pytest.raises(InvalidArgument) as err:
        asyncio.run(_with_runtime(settings, scenario))
    assert "MemoryMB" in err.value.message


def _invalid_renderer(rt: NomadRuntime) -> None:
    """Make ``rt`` render jobs Nomad rejects (MemoryMB below Nomad's minimum of 10)."""
    render = rt.renderer.workspace

    def invalid(request: WorkspaceJobRequest, gpu_types: Any = None) -> dict[str, Any]:
        job = render(request, gpu_types)
        job["Job"]["TaskGroups"][0]["Tasks"][0]["Resources"]["MemoryMB"] = 1
        return job

    rt.renderer.workspace = invalid  # type: ignore[method-assign]


def test_a_workspace_nomad_rejects_reports_nomads_messages_and_leaves_nothing(
    nomad_target: NomadTarget,
) -> None:
    settings = nomad_target.settings()
    spec = _spec("rejected", nomad_target)

    async def scenario(rt: NomadRuntime) -> None:
        _invalid_renderer(rt)
        await rt.start(spec)

    with pytest.raises(InvalidArgument) as err:
        asyncio.run(_with_runtime(settings, scenario))
    assert "MemoryMB" in err.value.message and "Nomad rejected job" in err.value.message
    # the Variable written alongside the register is gone again
    _assert_cleaned_up(nomad_target, f"{settings['job_prefix']}ws-rejected")


def test_a_secret_nomad_refuses_to_store_purges_the_registered_job(nomad_target: NomadTarget) -> None:
    double = nomad_target.need_double("a real Nomad cannot be told to fail one Variable write")
    settings = nomad_target.settings()
    spec = _spec("novar", nomad_target)
    double.fail_next("PUT", r"^/v1/var/nomad/jobs/.*ws-novar$", 500, "raft apply failed: leadership lost")

    with pytest.raises(BackendError) as err:
        asyncio.run(_with_runtime(settings, lambda rt: rt.start(spec)))
    assert "write variable" in err.value.message and "leadership lost" in err.value.message
    _assert_cleaned_up(nomad_target, f"{settings['job_prefix']}ws-novar")


def test_a_create_cancelled_while_registering_leaves_nothing(nomad_target: NomadTarget) -> None:
    double = nomad_target.need_double("a real Nomad cannot be made slow on demand")
    settings = nomad_target.settings()
    spec = _spec("cancelled", nomad_target)

    async def scenario(rt: NomadRuntime) -> bool:
        double.latency = 0.3  # the Variable write and the register are in flight for 0.3 s
        try:
            task = asyncio.ensure_future(rt.start(spec))
            await asyncio.sleep(0.1)
            task.cancel()
            try:
                await task  # returns once what landed meanwhile is undone
            except asyncio.CancelledError:
                return True
            return False
        finally:
            double.latency = 0.0

    assert asyncio.run(_with_runtime(settings, scenario))
    _assert_cleaned_up(nomad_target, f"{settings['job_prefix']}ws-cancelled")


def test_a_create_asks_validate_only_when_nomad_rejects_and_follows_the_allocation(
    nomad_target: NomadTarget,
) -> None:
    double = nomad_target.need_double("counts the requests Nomad received")
    settings = nomad_target.settings()
    spec = _spec("counted", nomad_target, image="fetchml/idle:test")
    progress: list[str] = []

    async def report(line: str) -> None:
        progress.append(line)

    async def scenario(rt: NomadRuntime) -> tuple[list[tuple[str, str]], str]:
        first = len(double.requests)
        job_id, _eval_id, alloc, url = await rt._launch(spec, report)
        sent = double.requests[first:]
        assert alloc["ClientStatus"] == "running" and alloc["AllocatedResources"]["Shared"]["Ports"]
        await rt.remove(spec, {"job_id": job_id})
        return sent, url

    sent, url = asyncio.run(_with_runtime(settings, scenario))
    assert url.startswith("http://")
    assert progress[0] == "placing" and progress[-1] == "starting"
    paths = [f"{method} {path}" for method, path in sent]
    assert not [p for p in paths if "/v1/validate/" in p]
    assert sum(p.startswith("PUT /v1/var/") for p in paths) == 1
    assert sum(p == "POST /v1/jobs" or p.startswith("PUT /v1/jobs") for p in paths) == 1
    assert paths[-1].startswith("GET /v1/allocation/")  # the running allocation, read in full


def test_slow_nomad_times_out(nomad_target: NomadTarget) -> None:
    double = nomad_target.need_double("a real Nomad cannot be made slow on demand")
    settings = nomad_target.settings(http_timeout=1)
    double.latency = 2.0
    try:
        with pytest.raises(Timeout) as err:
            asyncio.run(_with_runtime(settings, lambda rt: rt.discover()))
    finally:
        double.latency = 0.0
    assert "nomad.http_timeout" in err.value.details


def test_client_uses_blocking_queries(nomad_target: NomadTarget) -> None:
    client = NomadClient(NomadSettings.from_config(nomad_target.settings()))

    async def scenario() -> tuple[int, int, float]:
        _, index = await client.job_allocations("no-such-job")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        _body, index2 = await client.job_allocations("no-such-job", index=index, wait=1.0)
        return index, index2, loop.time() - t0

    index, index2, waited = asyncio.run(scenario())
    assert index > 0 and index2 >= index
    assert waited >= 0.9  # the server held the request: nothing changed


def test_parked_blocking_queries_do_not_hold_up_other_calls(nomad_target: NomadTarget) -> None:
    client = NomadClient(NomadSettings.from_config(nomad_target.settings()))
    parked = (os.cpu_count() or 1) + 8  # more than the default thread pool has threads

    async def scenario() -> tuple[bool, int]:
        _, index = await client.job_allocations("no-such-job")
        polls = [
            asyncio.ensure_future(client.job_allocations("no-such-job", index=index, wait=3.0))
            for _ in range(min(parked, 40))
        ]
        await asyncio.sleep(0)  # every poll is on its way
        leader = asyncio.ensure_future(client.leader())
        done, _ = await asyncio.wait([leader, *polls], return_when=asyncio.FIRST_COMPLETED)
        await asyncio.gather(*polls)
        return leader in done, sum(p in done for p in polls)

    try:
        leader_first, polls_done = asyncio.run(scenario())
    finally:
        client.close()
    assert leader_first and polls_done == 0


def test_stop_then_remove_the_shared_workspace(workspace: Shared, nomad_target: NomadTarget) -> None:
    state = workspace.started.state

    async def stop(rt: NomadRuntime) -> Any:
        await rt.stop(state, grace=2)
        after_stop = await rt.poll(state)
        await rt.stop(state)  # stopping what is stopped is not an error
        await rt.remove(workspace.spec, state)
        after_remove = await rt.poll(state)
        await rt.remove(workspace.spec, state)  # idempotent
        return after_stop, after_remove

    after_stop, after_remove = asyncio.run(_with_runtime(workspace.settings, stop))
    assert after_stop.state == "stopped"
    assert after_remove.state == "missing"
    _assert_cleaned_up(nomad_target, state["job_id"])
    with pytest.raises(httpx.HTTPError):
        httpx.get(workspace.started.url + "api/status", timeout=2)
