"""Experiment runs as Nomad batch jobs: papermill runs the snapshot's notebook, outputs come back
through the allocation filesystem API. Needs a host volume holding snapshots (the double has
one; for a real Nomad set FETCHML_TEST_NOMAD_SNAPSHOT_VOLUME and ..._SNAPSHOT_DIR)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import nbformat
import pytest

from fetchml_agent.errors import InsufficientResources, InvalidArgument, NotFound
from fetchml_agent.runtimes.base import Resources, RunSpec, RunStatus
from fetchml_agent.runtimes.nomad import NomadRuntime
from tests.nomad_double.fixtures import NomadTarget

TRAIN = [
    "alpha = 0.1\nepochs = 1",
    "import json, os\n"
    "out = os.environ['FETCHML_OUTPUTS_DIR']\n"
    "json.dump({'alpha': alpha, 'loss': 1.0 / (epochs + 1)}, open(os.path.join(out, 'metrics.json'), 'w'))\n"
    "os.makedirs(os.path.join(out, 'plots'), exist_ok=True)\n"
    "open(os.path.join(out, 'plots', 'curve.txt'), 'w').write('x')\n"
    "print('trained with', alpha)",
]


def _notebook(path: Path, cells: list[str]) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    nb.cells[0].metadata["tags"] = ["parameters"]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))


def _snapshot(target: NomadTarget, cells: list[str]) -> str:
    if not target.snapshot_volume or not target.snapshot_dir:
        pytest.skip("no snapshot host volume (set FETCHML_TEST_NOMAD_SNAPSHOT_VOLUME and _SNAPSHOT_DIR)")
    rel = f"runs/{uuid.uuid4().hex[:8]}"
    _notebook(target.snapshot_dir / rel / "train.ipynb", cells)
    return rel


def _run_spec(target: NomadTarget, rel: str, **kw: Any) -> RunSpec:
    return RunSpec(
        run_id=kw.pop("run_id", uuid.uuid4().hex[:10]),
        workspace="lab",
        notebook="train.ipynb",
        owner="alice",
        experiment_id="exp-1",
        image=target.image,
        snapshot_volume=target.snapshot_volume,
        snapshot_path=rel,
        resources=kw.pop("resources", Resources(cpu=1, memory_mb=1024)),
        **kw,
    )


async def _until_done(
    rt: NomadRuntime, state: dict[str, Any], limit: float = 120
) -> tuple[RunStatus, list[str]]:
    seen = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        status = await rt.run_status(state)
        if not seen or seen[-1] != status.state:
            seen.append(status.state)
        if status.state not in ("queued", "running"):
            return status, seen
        await asyncio.sleep(0.3)
    raise AssertionError(f"run did not finish: {seen}")


def test_run_executes_with_parameters_and_outputs_come_back(
    nomad_target: NomadTarget, tmp_path: Path
) -> None:
    rel = _snapshot(nomad_target, TRAIN)
    settings = nomad_target.settings()
    spec = _run_spec(nomad_target, rel, parameters={"alpha": 0.5, "epochs": 3}, timeout=300)

    async def scenario() -> Any:
        rt = NomadRuntime(settings)
        try:
            state = await rt.submit_run(spec)
            status, seen = await _until_done(rt, state)
            files = await rt.fetch_run_outputs(state, tmp_path / "out")
            await rt.purge_run(state)
            gone = await rt.run_status(state)
            return state, status, seen, files, gone
        finally:
            await rt.close()

    state, status, seen, files, gone = asyncio.run(scenario())
    json.dumps(state)
    assert status.state == "succeeded" and status.exit_code == 0, status
    assert seen[-1] == "succeeded"
    # sampled from the allocation's stats while it ran: papermill and its kernel take tens of MiB
    assert status.peak_memory_bytes is not None and status.peak_memory_bytes > 10 << 20, status
    assert files == ["output.ipynb", "work/outputs/metrics.json", "work/outputs/plots/curve.txt"]
    metrics = json.loads((tmp_path / "out" / "work/outputs/metrics.json").read_text())
    assert metrics == {"alpha": 0.5, "loss": 0.25}
    executed = nbformat.read(str(tmp_path / "out" / "output.ipynb"), as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "alpha = 0.5" in injected[0].source
    assert gone.state == "missing"


def test_failing_notebook_is_reported_failed_with_its_exit(nomad_target: NomadTarget) -> None:
    rel = _snapshot(nomad_target, ["x = 1", "raise ValueError('diverged')"])
    settings = nomad_target.settings()
    spec = _run_spec(nomad_target, rel, retries=0)

    async def scenario() -> RunStatus:
        rt = NomadRuntime(settings)
        try:
            state = await rt.submit_run(spec)
            status, _ = await _until_done(rt, state)
            await rt.purge_run(state)
            return status
        finally:
            await rt.close()

    status = asyncio.run(scenario())
    assert status.state == "failed"
    assert status.exit_code not in (0, None)


def test_run_past_its_timeout_is_stopped_and_reported(nomad_target: NomadTarget) -> None:
    rel = _snapshot(nomad_target, ["x = 1", "import time\ntime.sleep(120)"])
    settings = nomad_target.settings()
    spec = _run_spec(nomad_target, rel, timeout=4)

    async def scenario() -> tuple[RunStatus, RunStatus]:
        rt = NomadRuntime(settings)
        try:
            state = await rt.submit_run(spec)
            status, _ = await _until_done(rt, state)
            again = await rt.run_status(state)
            await rt.purge_run(state)
            return status, again
        finally:
            await rt.close()

    status, again = asyncio.run(scenario())
    assert status.state == "timed_out"
    assert again.state == "timed_out"


def test_unplaceable_run_is_refused_and_not_left_queued(nomad_target: NomadTarget) -> None:
    rel = _snapshot(nomad_target, TRAIN)
    settings = nomad_target.settings()
    spec = _run_spec(nomad_target, rel, resources=Resources(cpu=1, memory_mb=1024, gpu=8))

    async def scenario() -> int:
        rt = NomadRuntime(settings)
        try:
            with pytest.raises(InsufficientResources):
                await rt.submit_run(spec)
            return len(await rt.client.list_jobs(settings["job_prefix"]))
        finally:
            await rt.close()

    assert asyncio.run(scenario()) == 0


def test_bad_run_input_and_missing_outputs(nomad_target: NomadTarget, tmp_path: Path) -> None:
    settings = nomad_target.settings()

    async def scenario() -> None:
        rt = NomadRuntime(settings)
        try:
            with pytest.raises(InvalidArgument):
                await rt.submit_run(_run_spec(nomad_target, "../etc", run_id="r1"))
            with pytest.raises(NotFound):
                await rt.fetch_run_outputs(
                    {"job_id": f"{settings['job_prefix']}run-none", "run_id": "none"}, tmp_path
                )
        finally:
            await rt.close()

    asyncio.run(scenario())


def test_a_run_for_a_busy_gpu_waits_in_nomad_and_runs_when_it_frees(nomad_target: NomadTarget) -> None:
    nomad_target.need_double("the cluster must have exactly one GPU")
    first_rel = _snapshot(nomad_target, ["x = 1", "import time\ntime.sleep(3)"])
    second_rel = _snapshot(nomad_target, TRAIN)
    settings = nomad_target.settings()
    gpu = Resources(cpu=1, memory_mb=512, gpu=1)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], RunStatus, RunStatus]:
        rt = NomadRuntime(settings)
        try:
            first = await rt.submit_run(_run_spec(nomad_target, first_rel, resources=gpu, timeout=120))
            second = await rt.submit_run(_run_spec(nomad_target, second_rel, resources=gpu, timeout=120))
            waiting = await rt.run_status(second)
            done, _ = await _until_done(rt, second)
            await rt.purge_run(first)
            await rt.purge_run(second)
            return first, second, waiting, done
        finally:
            await rt.close()

    first, second, waiting, done = asyncio.run(scenario())
    assert not first["waiting"]
    assert "GPU" in second["waiting"], second
    assert waiting.state == "queued"
    assert done.state == "succeeded", done
