"""Experiment runs through the real ``ml`` on an agent with ``runtime: nomad``: queued from the
running workspace's files, executed as Nomad batch jobs, followed, fetched back, recorded.

Covered, from files saved through JupyterLab's contents API: a notebook with parameters, metrics
and outputs, a failing cell, a script, cancel, kill -9 of the agent and adoption mid-run,
refusals, results and a conflict copy synced back into the workspace.

The Nomad is the API double by default, a real one with ``FETCHML_TEST_NOMAD_ADDR`` and a
snapshot host volume (``FETCHML_TEST_NOMAD_SNAPSHOT_VOLUME`` / ``..._SNAPSHOT_DIR``; see
tests/nomad_double/fixtures.py). One agent and one workspace are shared by the module.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
import requests

from tests.conftest import AgentProcess, free_port
from tests.integration.experiments.exp_helpers import audit_actions, wait_for
from tests.integration.jupyter import get_contents, put_contents
from tests.nomad_double.fixtures import NomadTarget

TRAIN = [
    "lr = 0.1\nepochs = 2",
    "from fetchml import log_metric, outputs_dir\n"
    "for step in range(epochs):\n    log_metric('loss', lr / (step + 1), step=step)\n"
    "(outputs_dir() / 'model.txt').write_text(f'lr={lr}')\n"
    "open('outputs/relative.txt', 'w').write('written beside the notebook')\n"
    "open('scratch.txt', 'w').write('the working directory is writable')\n"
    "print('trained', lr)",
]


def _notebook(*cells: str, parameters: bool = True) -> dict[str, Any]:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    if parameters:
        nb.cells[0].metadata["tags"] = ["parameters"]
    return {"type": "notebook", "format": "json", "content": json.loads(nbformat.writes(nb))}


def _text(content: str) -> dict[str, Any]:
    return {"type": "file", "format": "text", "content": content}


class Env:
    agent: AgentProcess
    target: NomadTarget
    prefix: str
    url: str

    def api(self, path: str, **params: Any) -> requests.Response:
        headers = {"X-Nomad-Token": self.target.token} if self.target.token else {}
        return requests.get(self.target.address + path, params=params, headers=headers, timeout=10)

    def queue(self, *args: str) -> dict[str, Any]:
        return self.agent.ml_json("jupyter", "queue", "--workspace", "lab", *args)


@pytest.fixture(scope="module")
def env(nomad_target: NomadTarget, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    if not nomad_target.snapshot_volume or not nomad_target.snapshot_dir:
        pytest.skip("no snapshot host volume (set FETCHML_TEST_NOMAD_SNAPSHOT_VOLUME and _SNAPSHOT_DIR)")
    e = Env()
    e.target = nomad_target
    settings = nomad_target.settings(
        snapshot_volume={"type": "host", "source": nomad_target.snapshot_volume},
        snapshot_dir=str(nomad_target.snapshot_dir),
    )
    e.prefix = settings["job_prefix"]
    e.agent = AgentProcess(tmp_path_factory.mktemp("nomad-runs") / "agent", free_port(),
                           extra={"runtime": "nomad", "nomad": settings,
                                  "package_management": {"startup_blocked_packages": "off"},
                                  "experiments": {"run_data_max_mb": 1}})
    try:
        e.agent.start()
        e.agent.ml("jupyter", "create", "lab", "--cpu", "1", "--memory", "1g", "--experiment", "exp-nomad")
        e.url = e.agent.ml_json("jupyter", "info", "lab")["url"]
        put_contents(e.url, "train.ipynb", _notebook(*TRAIN))
        put_contents(e.url, "src/fails.ipynb", _notebook("x = 1", "raise ValueError('diverged')", parameters=False))
        put_contents(e.url, "slow.ipynb", _notebook("import time\ntime.sleep(60)", parameters=False))
        put_contents(e.url, "job.py", _text("from fetchml import parameters, log_metric\n"
                                            "p = parameters()\nlog_metric('seen', p['n'])\nprint('n is', p['n'])\n"))
        yield e
    finally:
        if e.agent.proc and e.agent.proc.poll() is None:
            e.agent.ml("jupyter", "delete", "lab", "-y", check=False)
        e.agent.stop()


def test_a_notebook_runs_as_a_batch_job_and_its_results_come_back(env: Env) -> None:
    run = env.queue("--notebook", "train.ipynb", "-p", "lr=0.5")
    assert run["status"] == "queued" and run["experiment"] == "exp-nomad"
    assert {"train.ipynb", "job.py", "src/fails.ipynb"} <= set(run["snapshot"]["copied"])
    job_id = f"{env.prefix}run-{run['id']}"
    done = wait_for(env.agent, run["id"], ("succeeded", "failed", "cancelled"))
    assert done["status"] == "succeeded", (done["message"], done["error"])
    assert done["exit_code"] == 0 and done["duration_s"] > 0
    assert done["peak_memory_bytes"] > 1 << 20  # from the allocation's stats, sampled while it ran (at any phase)
    assert done["outputs"] == ["model.txt", "relative.txt"]
    assert [(m["step"], m["value"]) for m in done["metrics"] if m["name"] == "loss"] == [(0, 0.5), (1, 0.25)]
    run_dir = Path(done["run_dir"])
    assert (run_dir / "work" / "outputs" / "model.txt").read_text() == "lr=0.5"
    out = nbformat.read(done["output_notebook"], as_version=4)
    assert "lr = 0.5" in out.cells[1].source and "injected-parameters" in out.cells[1].metadata.tags
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["notebook"]["papermill"]["parameters"] == {"lr": 0.5}
    deadline = time.monotonic() + 15
    while env.api(f"/v1/job/{job_id}").status_code != 404 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert env.api(f"/v1/job/{job_id}").status_code == 404  # purged once recorded
    actions = [a for a, _, d in audit_actions(env.agent, "lab") if d.get("run") == run["id"]]
    assert actions == ["run.queue", "run.start", "run.finish"]
    # Synced automatically into the workspace, where JupyterLab shows them.
    synced = f"experiments/exp-nomad/runs/{run['id']}"
    model = get_contents(env.url, f"{synced}/outputs/model.txt")
    assert model is not None and model["content"] == "lr=0.5"
    names = {c["name"] for c in (get_contents(env.url, synced) or {"content": []})["content"]}
    assert {"output.ipynb", "run.json", "metrics.csv", "experiment-config.json"} <= names


def test_sync_goes_through_the_workload_and_keeps_a_user_edit(env: Env) -> None:
    # Sources into the experiment: the notebook as the user saved it in JupyterLab.
    put_contents(env.url, "notes.py", _text("print('v1')\n"))
    doc = env.agent.ml_json("jupyter", "sync", "lab", "--to-experiment")
    assert {"path": "notes.py", "to": "experiment"} in doc["copied"]
    # The user edits the experiment summary in the workspace; a new run changes it too.
    summary = "experiments/exp-nomad/experiment.json"
    text = (get_contents(env.url, summary) or {})["content"]
    put_contents(env.url, summary, _text(text.replace("{", '{"my note": "keep me", ', 1)))
    run = env.queue("--script", "job.py", "-p", "n=1")
    wait_for(env.agent, run["id"], ("succeeded",))
    kept = json.loads((get_contents(env.url, summary) or {})["content"])
    assert kept["my note"] == "keep me"
    listing = (get_contents(env.url, "experiments/exp-nomad") or {"content": []})["content"]
    assert any(".conflict-experiment-" in c["name"] for c in listing), [c["name"] for c in listing]


def test_a_failing_cell_is_reported_with_its_error(env: Env) -> None:
    run = env.queue("--notebook", "src/fails.ipynb")
    done = wait_for(env.agent, run["id"], ("succeeded", "failed", "cancelled"))
    assert done["status"] == "failed"
    assert "cell 2" in done["message"] and "ValueError: diverged" in done["message"], done
    info = env.agent.ml_json("status", run["id"])
    assert info["error"]["ename"] == "ValueError"


def test_a_script_reads_its_parameters(env: Env) -> None:
    run = env.queue("--script", "job.py", "-p", "n=7")
    done = wait_for(env.agent, run["id"], ("succeeded", "failed", "cancelled"))
    assert done["status"] == "succeeded", (done["message"], done["error"])
    assert [m["value"] for m in done["metrics"] if m["name"] == "seen"] == [7]


def test_a_run_reads_the_workspaces_data_files_and_larger_data_is_named(env: Env) -> None:
    """Issue #18: data files (not only sources) go with the snapshot, up to experiments.run_data_max_mb."""
    put_contents(env.url, "data/points.csv", _text("x,y\n1,2\n3,4\n"))
    put_contents(env.url, "reads_data.py", _text("rows = open('data/points.csv').read().splitlines()\n"
                                                 "from fetchml import log_metric\nlog_metric('rows', len(rows))\n"))
    run = env.queue("--script", "reads_data.py")
    assert "data/points.csv" in run["snapshot"]["data"] and run["snapshot"]["data_skipped"] is None
    assert "reads_data.py" in run["snapshot"]["copied"] and "reads_data.py" not in run["snapshot"]["data"]
    done = wait_for(env.agent, run["id"], ("succeeded", "failed", "cancelled"))
    assert done["status"] == "succeeded", (done["message"], done["error"])
    assert [m["value"] for m in done["metrics"] if m["name"] == "rows"] == [3]
    # more data than the limit (1 MiB here): none is copied, the run is queued with a warning
    put_contents(env.url, "data/big.txt", _text("x" * (2 << 20)))
    try:
        run = env.queue("--script", "job.py", "-p", "n=1")
        assert run["snapshot"]["data"] == [] and "exceed experiments.run_data_max_mb (1 MiB)" in run["snapshot"]["data_skipped"]
        assert any("run_data_max_mb" in w and "docs/experiments.md" in w for w in run["warnings"]), run["warnings"]
        assert wait_for(env.agent, run["id"], ("succeeded", "failed", "cancelled"))["status"] == "succeeded"
    finally:
        put_contents(env.url, "data/big.txt", _text(""))


def test_cancel_stops_the_job(env: Env) -> None:
    run = env.queue("--notebook", "slow.ipynb")
    job_id = f"{env.prefix}run-{run['id']}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        allocs = env.api(f"/v1/job/{job_id}/allocations").json() if env.api(f"/v1/job/{job_id}").ok else []
        if any(a["ClientStatus"] == "running" for a in allocs):
            break
        time.sleep(0.3)
    cp = env.agent.ml("cancel", run["id"])
    assert "cancelled" in cp.stdout + cp.stderr
    done = wait_for(env.agent, run["id"], ("cancelled", "failed", "succeeded"), timeout=60)
    assert done["status"] == "cancelled", done
    deadline = time.monotonic() + 15
    while env.api(f"/v1/job/{job_id}").status_code != 404 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert env.api(f"/v1/job/{job_id}").status_code == 404


def test_kill9_mid_run_then_restart_adopts_and_records_it(env: Env) -> None:
    put_contents(env.url, "pause.ipynb", _notebook("import time\ntime.sleep(3)", "print('done')", parameters=False))
    run = env.queue("--notebook", "pause.ipynb")
    wait_for(env.agent, run["id"], ("running",))
    env.agent.kill9()
    env.agent.start()
    done = wait_for(env.agent, run["id"], ("succeeded", "failed", "cancelled"))
    assert done["status"] == "succeeded", (done["message"], done["error"])
    actions = [a for a, _, d in audit_actions(env.agent, "lab") if d.get("run") == run["id"]]
    assert "run.adopt" in actions and actions.count("run.finish") == 1


def test_nomad_down_while_a_run_is_followed_then_back(env: Env) -> None:
    double = env.target.need_double("takes Nomad down and back")
    put_contents(env.url, "short.ipynb", _notebook("import time\ntime.sleep(2)", "print('done')", parameters=False))
    run = env.queue("--notebook", "short.ipynb")
    wait_for(env.agent, run["id"], ("running",))
    double.go_down()
    try:
        deadline = time.monotonic() + 60
        while "retrying" not in (seen := env.agent.ml_json("status", run["id"]))["message"] and time.monotonic() < deadline:
            time.sleep(0.3)
        assert seen["status"] == "running" and "cannot reach Nomad" in seen["message"], seen
    finally:
        double.come_back()
    done = wait_for(env.agent, run["id"], ("succeeded", "failed", "cancelled"))
    assert done["status"] == "succeeded", (done["message"], done["error"])


def test_bad_input_is_refused_before_nomad(env: Env) -> None:
    cp = env.agent.ml("jupyter", "queue", "--workspace", "lab", "--notebook", "missing.ipynb", check=False)
    assert cp.returncode != 0 and "missing.ipynb" in cp.stderr and "Traceback" not in cp.stderr
    assert "/home/jovyan/work" in cp.stderr and ".staging" not in cp.stderr  # the path the user knows
    ok = env.queue("--notebook", "/home/jovyan/work/train.ipynb")  # absolute, as JupyterLab shows it
    assert ok["target"] == "train.ipynb"
    wait_for(env.agent, ok["id"], ("succeeded", "failed", "cancelled"))
    deadline = time.monotonic() + 15
    while (jobs := [j["ID"] for j in env.api("/v1/jobs", prefix=f"{env.prefix}run-").json()]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert jobs == []  # the refused one never reached Nomad; the good one is purged once recorded


def test_status_lists_nomad_runs(env: Env) -> None:
    doc = env.agent.ml_json("status")
    assert doc["runs"]["counts"].get("succeeded", 0) >= 2
    assert any(r["workspace"] == "lab" for r in doc["runs"]["recent"])
