"""Queued runs end to end: the real `ml`, a real agent, real papermill in a real workspace env."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import nbformat
import pytest

from tests.conftest import AgentProcess
from tests.integration.experiments.exp_helpers import (
    audit_actions,
    processes_in,
    run_record,
    wait_for,
    write_notebook,
)

PY = f"python{sys.version_info[0]}.{sys.version_info[1]}"


@pytest.fixture
def ws(agent: AgentProcess, unique_name: str):  # type: ignore[no-untyped-def]
    doc = agent.ml_json("jupyter", "create", unique_name, "--experiment", f"exp-{unique_name}")
    yield doc
    agent.ml("jupyter", "delete", unique_name, "--yes", check=False)


def test_parameters_metrics_outputs_in_the_workspace_env(agent: AgentProcess, ws: dict, tmp_path: Path) -> None:
    root = Path(ws["path"])
    # A module only this workspace's environment has: the run must see it.
    env_site = agent.data_dir / "envs" / ws["id"] / "lib" / PY / "site-packages"
    (env_site / "only_here.py").write_text("VALUE = 'from-the-workspace-env'\n")
    write_notebook(
        root / "train.ipynb",
        "import sys, only_here\nprint('prefix', sys.prefix)\nprint('lr is', lr, 'epochs is', epochs)",
        "from fetchml import log_metric\nfor step in range(3):\n    log_metric('loss', lr / (step + 1), step=step)\nlog_metric('acc', 0.9)",
        "import pathlib\npathlib.Path('outputs/model.txt').write_text(only_here.VALUE)",
        parameters="lr = 0.1\nepochs = 2",
    )
    (root / "data").mkdir()
    (root / "data" / "train.csv").write_text("x,y\n1,2\n")
    queued = agent.ml("jupyter", "queue", "--workspace", ws["name"], "--notebook", "train.ipynb",
                      "-p", "lr=0.5", "-p", "bogus=7", "--json")
    run = json.loads(queued.stdout)
    assert run["status"] == "queued" and run["experiment"] == f"exp-{ws['name']}"
    assert run["parameters"] == {"lr": 0.5, "bogus": 7}
    assert "Passed unknown parameter: bogus" in run["warnings"]  # papermill's words, at queue time
    assert "train.ipynb" in run["snapshot"]["copied"] and "data" in run["snapshot"]["linked"]
    done = wait_for(agent, run["id"], ("succeeded", "failed"))
    assert done["status"] == "succeeded", done
    assert done["exit_code"] == 0 and done["duration_s"] > 0 and done["peak_memory_bytes"] > 10 * 1024 * 1024
    assert done["outputs"] == ["model.txt"]
    assert "Passed unknown parameter: bogus" in done["warnings"]
    losses = [(m["step"], m["value"]) for m in done["metrics"] if m["name"] == "loss"]
    assert losses == [(0, 0.5), (1, 0.25), (2, 0.5 / 3)]
    assert [m["value"] for m in done["metrics"] if m["name"] == "acc"] == [0.9]

    # The executed notebook: parameters injected right after the `parameters` cell, and used.
    out = nbformat.read(done["output_notebook"], as_version=4)
    assert out.cells[0].metadata.tags == ["parameters"]
    assert "injected-parameters" in out.cells[1].metadata.tags
    assert "lr = 0.5" in out.cells[1].source and "bogus = 7" in out.cells[1].source
    printed = "".join(o.get("text", "") for o in out.cells[2].outputs)
    assert "lr is 0.5 epochs is 2" in printed
    assert f"prefix {agent.data_dir / 'envs' / ws['id']}" in printed  # the workspace's own venv

    # Synced automatically into the workspace.
    synced = root / "experiments" / run["experiment"] / "runs" / run["id"]
    assert (synced / "outputs" / "model.txt").read_text() == "from-the-workspace-env"
    assert nbformat.read(str(synced / "output.ipynb"), as_version=4).cells[1].source == out.cells[1].source
    meta = json.loads((synced / "run.json").read_text())
    assert meta["status"] == "succeeded" and meta["peak_memory_bytes"] == done["peak_memory_bytes"]
    assert meta["notebook"]["papermill"]["parameters"] == {"lr": 0.5, "bogus": 7}
    assert meta["metrics"]["latest"] == {"loss": 0.5 / 3, "acc": 0.9}
    assert (synced / "metrics.csv").read_text().splitlines()[0] == "attempt,name,step,value,ts"
    assert json.loads((root / "experiments" / run["experiment"] / "experiment.json").read_text())["runs"][0]["id"] == run["id"]

    actions = [a for a, _, _ in audit_actions(agent, ws["name"])]
    assert actions.count("run.queue") == 1 and actions.count("run.start") == 1 and actions.count("run.finish") == 1


def test_snapshot_queue_and_status_while_running(agent: AgentProcess, ws: dict) -> None:
    root = Path(ws["path"])
    write_notebook(root / "slow.ipynb", "import time\ntime.sleep(4)", "print('slept')")
    write_notebook(root / "quick.ipynb", "print('original version')")
    first = agent.ml_json("jupyter", "queue", "--workspace", ws["name"], "--notebook", "slow.ipynb")
    second = agent.ml_json("jupyter", "queue", "--workspace", ws["name"], "--notebook", "quick.ipynb")
    # Editing after queueing does not change the queued run: it was snapshotted.
    write_notebook(root / "quick.ipynb", "print('edited later')")
    running = wait_for(agent, first["id"], ("running",))
    # Launched through the workspace's warm runner (papermill already imported there).
    for _ in range(300):  # running is recorded just before the runner is forked
        runner = run_record(agent, first["id"])["pid"]
        if runner:
            break
        time.sleep(0.05)
    parent = Path(f"/proc/{runner}/stat").read_text().rsplit(")", 1)[1].split()[1]
    assert b"--serve" in Path(f"/proc/{parent}/cmdline").read_bytes()
    status = agent.ml_json("status")
    section = status["runs"]
    assert any(r["id"] == second["id"] and r["status"] == "queued" for r in section["queued"])  # one CPU worker
    now = next(r for r in section["running"] if r["id"] == first["id"])
    assert now["elapsed_s"] is not None and now["elapsed_s"] >= 0
    wait = wait_for(agent, first["id"], ("running",))
    for _ in range(100):
        if wait.get("current_cell"):
            break
        wait = wait_for(agent, first["id"], ("running", "succeeded"))
    assert wait.get("current_cell") in (1, 2) and wait.get("cells_total") == 2
    human = agent.ml("status").stdout
    assert first["id"] in human and second["id"] in human and "queued" in human
    assert running["status"] == "running"
    done = wait_for(agent, second["id"], ("succeeded", "failed"))
    assert done["status"] == "succeeded"
    out = nbformat.read(done["output_notebook"], as_version=4)
    assert "original version" in "".join(o.get("text", "") for o in out.cells[0].outputs)
    assert wait_for(agent, first["id"], ("succeeded",))["status"] == "succeeded"


def test_failure_is_captured_with_the_failing_cell_and_retried(agent: AgentProcess, ws: dict, tmp_path: Path) -> None:
    root = Path(ws["path"])
    write_notebook(root / "broken.ipynb", "x = 1", "from fetchml import log_metric\nlog_metric('tries', 1)", "x / 0")
    config = tmp_path / "experiment-config.yaml"
    config.write_text("notebook: broken.ipynb\nretries: 1\n")
    cp = agent.ml("jupyter", "queue", "--workspace", ws["name"], "--config", str(config), "--wait", check=False)
    assert cp.returncode == 4, cp.stderr  # the run ended in the wrong state
    run_id = cp.stdout.split()[1]
    run = agent.ml_json("status", run_id)
    assert run["status"] == "failed" and run["exit_code"] == 1
    assert run["message"] == "cell 3 (In [3]) failed: ZeroDivisionError: division by zero"
    assert run["error"]["cell"] == 3 and run["error"]["ename"] == "ZeroDivisionError" and run["error"]["source"] == "x / 0"
    assert "ZeroDivisionError" in run["error"]["traceback"]
    assert run["attempt"] == 2 and [a["status"] for a in run["attempts"]] == ["failed", "failed"]
    assert sorted(m["attempt"] for m in run["metrics"]) == [1, 2]
    listing = agent.ml("status", "--workspace", ws["name"]).stdout
    assert "failed" in listing and "ZeroDivisionError" in listing
    human = agent.ml("status", run_id).stdout
    assert "failing cell 3" in human and "x / 0" in human


def test_timeout_kills_the_run(agent: AgentProcess, ws: dict, tmp_path: Path) -> None:
    root = Path(ws["path"])
    write_notebook(root / "hang.ipynb", "print('started')", "import time\ntime.sleep(300)")
    config = tmp_path / "cfg.yaml"
    config.write_text("timeout: 20s\n")  # counted from the attempt's start: the kernel's start-up is in it
    run = agent.ml_json("jupyter", "queue", "--workspace", ws["name"], "--notebook", "hang.ipynb", "--config", str(config))
    done = wait_for(agent, run["id"], ("failed", "succeeded"), timeout=120)
    assert done["status"] == "failed"
    assert done["message"] == "timed out after 20 s in cell 2"
    assert done["exit_code"] == 124 and done["timeout_s"] == 20
    assert 20 <= done["duration_s"] < 60
    assert processes_in(Path(done["run_dir"]) / "work") == []  # the kernel went with it


def test_cancel_queued_and_running(agent: AgentProcess, ws: dict) -> None:
    root = Path(ws["path"])
    write_notebook(root / "long.ipynb", "print('go')", "import time\ntime.sleep(300)")
    first = agent.ml_json("jupyter", "queue", "--workspace", ws["name"], "--notebook", "long.ipynb")
    second = agent.ml_json("jupyter", "queue", "--workspace", ws["name"], "--notebook", "long.ipynb")
    gone = agent.ml_json("cancel", second["id"])
    assert gone["status"] == "cancelled" and gone["message"] == "cancelled before it started"
    for _ in range(300):
        run = wait_for(agent, first["id"], ("running",))
        if run.get("current_cell") == 2:
            break
    cancelled = agent.ml_json("cancel", first["id"])
    assert cancelled["status"] == "cancelled" and cancelled["exit_code"] == 143
    assert processes_in(Path(cancelled["run_dir"]) / "work") == []
    again = agent.ml("cancel", first["id"], check=False)
    assert again.returncode == 4 and "already cancelled" in again.stderr
    assert run_record(agent, second["id"])["started_at"] is None  # never ran
    actions = [(a, d.get("run")) for a, _, d in audit_actions(agent, ws["name"]) if a == "run.cancel"]
    assert actions == [("run.cancel", second["id"]), ("run.cancel", first["id"])]


def test_script_run_with_parameters_and_exit_status(agent: AgentProcess, ws: dict) -> None:
    root = Path(ws["path"])
    (root / "train.py").write_text(
        "import sys\nfrom fetchml import log_metric, parameters, outputs_dir\n"
        "p = parameters()\nlog_metric('lr', p['lr'])\n(outputs_dir() / 'p.txt').write_text(str(p))\n"
        "if p.get('fail'):\n    raise SystemExit('bad input: ' + str(p['fail']))\n"
    )
    ok = agent.ml_json("jupyter", "queue", "--workspace", ws["name"], "--script", "train.py", "-p", "lr=0.25")
    done = wait_for(agent, ok["id"], ("succeeded", "failed"))
    assert done["status"] == "succeeded" and done["exit_code"] == 0 and done["outputs"] == ["p.txt"]
    assert [m["value"] for m in done["metrics"]] == [0.25]
    bad = agent.ml_json("jupyter", "queue", "--workspace", ws["name"], "--script", "train.py", "-p", "lr=1", "-p", "fail=yes")
    failed = wait_for(agent, bad["id"], ("succeeded", "failed"))
    assert failed["status"] == "failed" and failed["exit_code"] == 1
    assert failed["message"] == "exited with code 1: bad input: yes"


def test_bad_input(agent: AgentProcess, ws: dict, tmp_path: Path) -> None:
    name = ws["name"]
    write_notebook(Path(ws["path"]) / "a.ipynb", "1")
    write_notebook(Path(ws["path"]) / "b.ipynb", "2")
    # A notebook that is a symbolic link out of the workspace: the agent would copy what it names.
    write_notebook(tmp_path / "elsewhere.ipynb", "open('/etc/hostname').read()")
    (Path(ws["path"]) / "linked.ipynb").symlink_to(tmp_path / "elsewhere.ipynb")
    cases = [
        (["jupyter", "queue", "--workspace", name, "--notebook", "linked.ipynb"], 2, "symbolic link that leads out"),
        (["jupyter", "queue", "--workspace", "no-such-ws", "--notebook", "a.ipynb"], 4, "no workspace"),
        (["jupyter", "queue", "--workspace", name, "--notebook", "missing.ipynb"], 4, "no notebook 'missing.ipynb'"),
        (["jupyter", "queue", "--workspace", name, "--notebook", "../escape.ipynb"], 2, "without '..'"),
        (["jupyter", "queue", "--workspace", name], 2, "name what to run"),
        (["jupyter", "queue", "--workspace", name, "--notebook", "a.ipynb", "-p", "1x=2"], 2, "key=value"),
        (["cancel", "run-doesnotexist"], 4, "no run"),
        (["status", "run-doesnotexist"], 4, "no run"),
        (["status", "--experiment", "nope-nope"], 4, "no experiment"),
        (["jupyter", "sync", name, "--full", "--experiment", "never-made"], 4, "no experiment"),
        (["jupyter", "link", name, "bad id!"], 2, "invalid experiment id"),
        (["jupyter", "metadata", "no-such-ws"], 4, "no workspace"),
    ]
    for argv, code, text in cases:
        cp = agent.ml(*argv, check=False)
        assert cp.returncode == code and text in cp.stderr, (argv, cp.returncode, cp.stderr)
    config = tmp_path / "experiment-config.yaml"
    config.write_text("notebook: a.ipynb\ntimeout: soon\nretries: -1\ncolour: blue\n")
    cp = agent.ml("jupyter", "queue", "--workspace", name, "--config", str(config), check=False)
    assert cp.returncode == 2
    for key in ("experiment-config.yaml", "timeout:", "retries:", "colour: unknown field"):
        assert key in cp.stderr, cp.stderr
    config.write_text("notebook: a.ipynb\nresources:\n  gpu: 64\n")
    cp = agent.ml("jupyter", "queue", "--workspace", name, "--config", str(config), check=False)
    assert cp.returncode == 8 and "asks for 64 GPUs" in cp.stderr


def test_a_notebook_without_a_kernel_runs_on_the_default_one(agent: AgentProcess, ws: dict) -> None:
    """A notebook that names no kernel (no ``metadata.kernelspec``, or a null one, as some tools
    write) runs on the workspace's default kernel, and queueing says so; a file that is no
    notebook, or one without metadata, is refused at queue time saying what to add, never with
    "internal error"."""
    root = Path(ws["path"])
    cell = {"cell_type": "code", "metadata": {}, "source": ["print('lr', lr)"], "outputs": [], "execution_count": None}
    for name, meta in (("bare.ipynb", {}), ("null.ipynb", {"kernelspec": None})):
        (root / name).write_text(json.dumps({"cells": [cell], "metadata": meta, "nbformat": 4, "nbformat_minor": 5}))
        cp = agent.ml("jupyter", "queue", "--workspace", ws["name"], "--notebook", name, "-p", "lr=0.5", "--json")
        run = json.loads(cp.stdout)
        assert any("names no kernel" in w and "python3" in w for w in run["warnings"]), run["warnings"]
        done = wait_for(agent, run["id"], ("succeeded", "failed"))
        assert done["status"] == "succeeded", done
    (root / "nometa.ipynb").write_text(json.dumps({"cells": [cell], "nbformat": 4, "nbformat_minor": 5}))
    (root / "junk.ipynb").write_text("not json")
    for name, phrase in (("nometa.ipynb", '"metadata": {"kernelspec"'), ("junk.ipynb", "is not a Jupyter notebook")):
        cp = agent.ml("jupyter", "queue", "--workspace", ws["name"], "--notebook", name, "-p", "lr=1", check=False)
        assert cp.returncode == 2 and phrase in cp.stderr, (name, cp.returncode, cp.stderr)
        assert "internal error" not in cp.stderr


def test_roles_and_audit(agent: AgentProcess, ws: dict) -> None:
    name = ws["name"]
    write_notebook(Path(ws["path"]) / "n.ipynb", "1")
    unseen = agent.ml("jupyter", "queue", "--workspace", name, "--notebook", "n.ipynb", user="bob", check=False)
    assert unseen.returncode == 4 and "no workspace" in unseen.stderr
    agent.ml("jupyter", "access", name, "--user=bob", "--role=viewer")
    denied = agent.ml("jupyter", "queue", "--workspace", name, "--notebook", "n.ipynb", user="bob", check=False)
    assert denied.returncode == 3 and "collaborator" in denied.stderr
    agent.ml("jupyter", "access", name, "--user=bob", "--role=collaborator")
    run = agent.ml_json("jupyter", "queue", "--workspace", name, "--notebook", "n.ipynb", user="bob")
    assert run["user"] == "bob"
    assert agent.ml("jupyter", "sync", name, "--to-experiment", user="bob", check=False).returncode == 3
    assert agent.ml("jupyter", "link", name, "other-exp", user="bob", check=False).returncode == 3
    assert agent.ml_json("jupyter", "metadata", name, user="bob")["workspace"]["name"] == name
    assert agent.ml("status", run["id"], user="carol", check=False).returncode == 4  # carol cannot see it
    wait_for(agent, run["id"], ("succeeded", "failed"), user="bob")
    agent.ml("jupyter", "sync", name, "--to-experiment")
    agent.ml("jupyter", "link", name, "second-exp")
    events = audit_actions(agent, name)
    by_action = {a: d for a, _, d in events}
    assert by_action["experiment.link"]["experiment"] == "second-exp"
    assert by_action["experiment.sync"]["direction"] == "to-experiment"
    assert by_action["run.queue"]["run"] == run["id"]
    assert [a for a, _, _ in events].count("experiment.sync") == 1


def test_status_watch_and_deleting_a_workspace_cancels_its_runs(agent: AgentProcess, unique_name: str) -> None:
    ws = agent.ml_json("jupyter", "create", unique_name, "--experiment", "watched-" + unique_name)
    write_notebook(Path(ws["path"]) / "long.ipynb", "import time\ntime.sleep(300)")
    run = agent.ml_json("jupyter", "queue", "--workspace", unique_name, "--notebook", "long.ipynb")
    wait_for(agent, run["id"], ("running",))
    watched = agent.ml("status", "--watch", "--interval", "0.2", "--count", "3").stdout
    assert watched.count("(live; at least every 0.2 s; Ctrl-C stops)") == 3 and watched.count(run["id"]) == 3
    agent.ml("jupyter", "delete", unique_name, "--yes")
    gone = agent.ml_json("status", run["id"])  # the record outlives the workspace
    assert gone["status"] == "cancelled" and gone["workspace"] == unique_name
    assert processes_in(Path(gone["run_dir"]) / "work") == []
