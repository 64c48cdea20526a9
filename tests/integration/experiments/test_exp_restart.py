"""kill -9 of the agent while runs are queued and running: adopted or failed with the reason,
never lost, never run twice."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.conftest import AgentProcess
from tests.integration.experiments.exp_helpers import audit_actions, run_record, wait_for, write_notebook


def _running_in_cell(agent: AgentProcess, run_id: str, cell: int) -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        run = wait_for(agent, run_id, ("running",))
        if run.get("current_cell") == cell:
            return run
        time.sleep(0.2)
    raise AssertionError(f"{run_id} never reached cell {cell}")


def test_kill_9_mid_run_adopts_it_and_keeps_the_queue(fresh_agent: AgentProcess) -> None:
    agent = fresh_agent
    agent.extra["experiments"] = {"warm_runner_idle_s": 5}  # leave no warm runner behind for long
    agent.start()
    ws = agent.ml_json("jupyter", "create", "restart-ws", "--experiment", "restart-exp")
    write_notebook(Path(ws["path"]) / "slow.ipynb",
                   "from fetchml import log_metric\nlog_metric('begin', 1)",
                   "import time\ntime.sleep(8)",
                   "log_metric('end', 1)")
    write_notebook(Path(ws["path"]) / "quick.ipynb", "from fetchml import log_metric\nlog_metric('quick', 1)")
    first = agent.ml_json("jupyter", "queue", "--workspace", "restart-ws", "--notebook", "slow.ipynb")
    second = agent.ml_json("jupyter", "queue", "--workspace", "restart-ws", "--notebook", "quick.ipynb")
    _running_in_cell(agent, first["id"], 2)
    runner = run_record(agent, first["id"])["pid"]
    agent.kill9()
    os.kill(runner, 0)  # the run outlives the agent
    agent.start()
    assert agent.ml_json("status", second["id"])["status"] == "queued"  # still queued: the worker is taken
    adopted = agent.ml_json("status", first["id"])
    assert adopted["status"] == "running" and run_record(agent, first["id"])["pid"] == runner
    done = wait_for(agent, first["id"], ("succeeded", "failed"))
    assert done["status"] == "succeeded", done
    assert sorted(m["name"] for m in done["metrics"]) == ["begin", "end"]  # ran once, to the end
    assert len(done["attempts"]) == 1
    quick = wait_for(agent, second["id"], ("succeeded", "failed"))
    assert quick["status"] == "succeeded" and quick["started_at"] >= done["finished_at"] - 1
    actions = [(a, d.get("run")) for a, _, d in audit_actions(agent, "restart-ws")]
    assert ("run.adopt", first["id"]) in actions
    assert actions.count(("run.start", first["id"])) == 1 and actions.count(("run.finish", first["id"])) == 1
    assert (Path(ws["path"]) / "experiments" / "restart-exp" / "runs" / first["id"] / "output.ipynb").is_file()


def test_a_run_that_died_with_the_agent_down_is_failed_with_the_reason(fresh_agent: AgentProcess) -> None:
    agent = fresh_agent
    agent.extra["experiments"] = {"warm_runner_idle_s": 5}  # leave no warm runner behind for long
    agent.start()
    ws = agent.ml_json("jupyter", "create", "lost-ws", "--experiment", "lost-exp")
    write_notebook(Path(ws["path"]) / "slow.ipynb", "import time\ntime.sleep(300)")
    run = agent.ml_json("jupyter", "queue", "--workspace", "lost-ws", "--notebook", "slow.ipynb")
    _running_in_cell(agent, run["id"], 1)
    runner = run_record(agent, run["id"])["pid"]
    agent.kill9()
    from fetchml_agent.procs import kill_tree

    kill_tree(runner, signal.SIGKILL)  # the host lost it while nobody watched
    time.sleep(0.5)
    agent.start()
    lost = agent.ml_json("status", run["id"])
    assert lost["status"] == "failed"
    assert lost["message"] == "the run's process ended while the agent was down, without a result"
    # Not run again: the runner never started a second time.
    assert (Path(lost["run_dir"]) / "launched").exists() and run_record(agent, run["id"])["pid"] == runner
    assert ("run.finish", "error") in [(a, o) for a, o, _ in audit_actions(agent, "lost-ws")]
