"""Experiment runs on the docker runtime, through the real ``ml`` and a real agent: queued from the
running workspace container's files, each run in a container of its own (the workspace image, on
the workspace's network), followed, recorded, and its results synced back into the workspace."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from tests.conftest import AgentProcess
from tests.integration.docker.conftest import cleanup
from tests.integration.experiments.exp_helpers import audit_actions, wait_for
from tests.integration.jupyter import get_contents, put_contents
from tests.integration.packages.world import agent_for, make_upstream, make_wheelhouse

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PREFIX = f"fmltest-{os.getpid()}-run"
TABLE = f"fmltest_{os.getpid()}_run"
TRAIN = [
    "lr = 0.1",
    "from fetchml import log_metric\nlog_metric('loss', lr / 2)\n"
    "open('outputs/model.txt', 'w').write(f'lr={lr}')\nopen('beside.txt', 'w').write('the working directory is writable')",
]


def _notebook(*cells: str, parameters: bool = True) -> dict[str, Any]:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    if parameters:
        nb.cells[0].metadata["tags"] = ["parameters"]
    return {"type": "notebook", "format": "json", "content": json.loads(nbformat.writes(nb))}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, docker_client: Any, workspace_image: str) -> Iterator[tuple[AgentProcess, str]]:
    tmp = tmp_path_factory.mktemp("docker-runs")
    shared = tmp / "shared-data"  # docker.data_volume: a host directory the workspace's user may write
    shared.mkdir()
    shared.chmod(0o777)
    (shared / "big.txt").write_text("x" * 4096)
    with make_upstream(make_wheelhouse(tmp / "wheels")) as upstream:
        a = agent_for(tmp / "agent", f"{upstream.url}/simple/", {"startup_blocked_packages": "off"},
                      runtime="docker", docker={"prefix": PREFIX, "firewall_table": TABLE, "image": workspace_image,
                                                "data_volume": str(shared), "data_mount": "/shared"})
        try:
            a.start()
            a.ml("jupyter", "create", "lab", "--memory=1g", "--experiment", "exp-docker")
            url = a.ml_json("jupyter", "info", "lab")["url"]
            put_contents(url, "train.ipynb", _notebook(*TRAIN))
            put_contents(url, "fails.ipynb", _notebook("x = 1", "raise ValueError('diverged')", parameters=False))
            put_contents(url, "slow.py", {"type": "file", "format": "text", "content": "import time\ntime.sleep(120)\n"})
            yield a, url
        finally:
            a.ml("jupyter", "delete", "lab", "-y", check=False)
            a.stop()
            cleanup(docker_client, PREFIX)
            subprocess.run(["nft", "delete", "table", "inet", TABLE], capture_output=True)


def test_a_run_executes_in_its_own_container_and_its_results_come_back(lab: tuple[AgentProcess, str], docker_client: Any) -> None:
    a, url = lab
    run = a.ml_json("jupyter", "queue", "--workspace", "lab", "--notebook", "train.ipynb", "-p", "lr=0.5")
    assert run["status"] == "queued" and "train.ipynb" in run["snapshot"]["copied"]
    done = wait_for(a, run["id"], ("succeeded", "failed", "cancelled"))
    assert done["status"] == "succeeded", (done["message"], done["error"])
    assert done["outputs"] == ["model.txt"]
    assert [m["value"] for m in done["metrics"] if m["name"] == "loss"] == [0.25]
    out = nbformat.read(done["output_notebook"], as_version=4)
    assert "lr = 0.5" in out.cells[1].source
    model = get_contents(url, f"experiments/exp-docker/runs/{run['id']}/outputs/model.txt")
    assert model is not None and model["content"] == "lr=0.5"
    deadline = time.monotonic() + 15
    while docker_client.containers.list(all=True, filters={"name": f"{PREFIX}-run-"}) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert docker_client.containers.list(all=True, filters={"name": f"{PREFIX}-run-"}) == []  # removed once recorded
    actions = [x for x, _, d in audit_actions(a, "lab") if d.get("run") == run["id"]]
    assert actions == ["run.queue", "run.start", "run.finish"]


def test_a_failing_cell_is_reported(lab: tuple[AgentProcess, str]) -> None:
    a, _ = lab
    run = a.ml_json("jupyter", "queue", "--workspace", "lab", "--notebook", "fails.ipynb")
    done = wait_for(a, run["id"], ("succeeded", "failed", "cancelled"))
    assert done["status"] == "failed" and "ValueError: diverged" in done["message"], done["message"]


def test_cancel_stops_the_runs_container(lab: tuple[AgentProcess, str], docker_client: Any) -> None:
    a, _ = lab
    run = a.ml_json("jupyter", "queue", "--workspace", "lab", "--script", "slow.py")
    name = f"{PREFIX}-run-{run['id']}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not docker_client.containers.list(filters={"name": name}):
        time.sleep(0.2)
    a.ml("cancel", run["id"])
    done = wait_for(a, run["id"], ("succeeded", "failed", "cancelled"), timeout=90)
    assert done["status"] == "cancelled", done
    assert not Path(a.data_dir, "experiments", ".docker-runs", run["id"]).exists()


def test_a_run_has_the_workspaces_packages_and_data_and_the_next_installs_nothing(lab: tuple[AgentProcess, str]) -> None:
    """Issue #18: a run starts from the image; what ``ml jupyter install`` put into the workspace
    comes from the lock queued with the snapshot (through the agent's index), cached by the lock's
    hash for the workspace's next run; its data files come with the snapshot."""
    a, url = lab
    assert "installed beta 1.0, alpha 2.0" in a.ml("jupyter", "install", "lab", "beta").stdout
    put_contents(url, "data/rows.txt", {"type": "file", "format": "text", "content": "a\nb\n"})
    put_contents(url, "uses.py", {"type": "file", "format": "text", "content":
                                  "import alpha_mod, beta_mod\nfrom fetchml import log_metric\n"
                                  "log_metric('rows', len(open('data/rows.txt').read().split()))\n"})
    envs = []
    for _ in range(2):
        run = a.ml_json("jupyter", "queue", "--workspace", "lab", "--script", "uses.py")
        assert run["environment"]["packages"] == 2 and "data/rows.txt" in run["snapshot"]["data"], run
        done = wait_for(a, run["id"], ("succeeded", "failed", "cancelled"))
        assert done["status"] == "succeeded", (done["message"], done["error"], done["environment"])
        assert [m["value"] for m in done["metrics"] if m["name"] == "rows"] == [2]
        envs.append(done["environment"])
    assert envs[0]["lock"] == envs[1]["lock"] and envs[0]["cached"] is False and envs[1]["cached"] is True
    assert "cached, nothing installed" in a.ml("status", run["id"]).stdout


def test_the_shared_data_volume_is_read_write_in_the_workspace_and_read_only_in_runs(
        lab: tuple[AgentProcess, str], docker_client: Any) -> None:
    """docker.data_volume (docs/experiments.md, "Data files"): data larger than a run's snapshot
    takes is read from the shared volume, mounted at docker.data_mount; the workspace writes it, a
    run reads it live and cannot change it."""
    a, url = lab
    [ws] = [c for c in docker_client.containers.list(filters={"label": "io.fetchml.instance=" + PREFIX})
            if not c.name.startswith(f"{PREFIX}-run-")] or [None]
    assert ws is not None
    code, out = ws.exec_run(["sh", "-c", "echo from-the-workspace > /shared/written.txt && cat /shared/big.txt | wc -c"])
    assert code == 0 and out.decode().split() == ["4096"], out
    put_contents(url, "reads.py", {"type": "file", "format": "text", "content":
                                   "import errno\nfrom fetchml import log_metric\n"
                                   "log_metric('bytes', len(open('/shared/big.txt').read()))\n"
                                   "log_metric('written', int(open('/shared/written.txt').read() == 'from-the-workspace\\n'))\n"
                                   "try:\n    open('/shared/x.txt', 'w')\n    log_metric('read_only', 0)\n"
                                   "except OSError as exc:\n    log_metric('read_only', int(exc.errno == errno.EROFS))\n"})
    run = a.ml_json("jupyter", "queue", "--workspace", "lab", "--script", "reads.py")
    done = wait_for(a, run["id"], ("succeeded", "failed", "cancelled"))
    assert done["status"] == "succeeded", (done["message"], done["error"])
    assert {m["name"]: m["value"] for m in done["metrics"]} == {"bytes": 4096, "written": 1, "read_only": 1}
