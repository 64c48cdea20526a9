"""Issue 6: queue → run started latency, run overhead vs papermill by hand, `ml status` with 10,000 runs."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import Row, median, time_many

TITLE = "experiments (issue 6)"
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import KEYS, ML, AgentProcess, free_port  # noqa: E402
from tests.integration.experiments.exp_helpers import write_notebook  # noqa: E402

_RUNS = 10_000


def _kernel_start(python: Path, cwd: Path) -> float:
    """Seconds for a python3 kernel of ``python`` to start and answer, as papermill starts it."""
    code = (
        "import time; t = time.perf_counter()\n"
        "from jupyter_client.manager import start_new_kernel\n"
        "t = time.perf_counter()\n"
        "km, kc = start_new_kernel(kernel_name='python3', startup_timeout=120)\n"
        "print(time.perf_counter() - t)\n"
        "kc.stop_channels(); km.shutdown_kernel(now=True)\n"
    )
    cp = subprocess.run([str(python), "-c", code], cwd=cwd, capture_output=True, text=True, check=True,
                        env={**os.environ, "PATH": f"{python.parent}{os.pathsep}{os.environ['PATH']}"})
    return float(cp.stdout.strip().splitlines()[-1])


def _papermill_marks(log: Path) -> dict[str, float]:
    """Unix time of papermill's log lines by their first words (``Working directory``, ...)."""
    import datetime

    marks: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        stamp, _, rest = line.partition(" papermill INFO: ")
        if rest:
            key = rest.split(":")[0].strip()
            marks.setdefault(key, datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp())
    return marks


def _seed_runs(agent: AgentProcess, ws_id: str, n: int) -> None:
    conn = sqlite3.connect(agent.data_dir / "agent.db")
    now = time.time()
    conn.execute("INSERT OR IGNORE INTO experiments (id, created_at, created_by) VALUES ('bench-seeded', ?, 'admin')", (now,))
    statuses = ["succeeded"] * 8 + ["failed", "cancelled"]
    rows = []
    for i in range(n):
        status = statuses[i % len(statuses)]
        t = now - (n - i) * 10
        rows.append((f"run-seed{i:06d}", "bench-seeded", ws_id, "bench", "admin", "notebook", "train.ipynb",
                     json.dumps({"lr": i / n}), status, "cell 3 (In [3]) failed: ValueError: x" if status == "failed" else "",
                     t, t + 1, t + 61, 0 if status == "succeeded" else 1, 60.0, 200_000_000, f"/tmp/none/{i}"))
    conn.executemany(
        "INSERT INTO runs (id, experiment_id, workspace_id, workspace, user, kind, target, parameters, status, message,"
        " queued_at, started_at, finished_at, exit_code, duration_s, peak_memory_bytes, run_dir)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    conn.commit()
    conn.close()


def main() -> list[Row]:
    from fetchml_agent.client import Client
    from fetchml_agent.protocol import Opcode

    rows: list[Row] = []
    tmp = Path(tempfile.mkdtemp(prefix="fml-bench-exp-"))
    agent = AgentProcess(tmp / "agent", free_port())
    try:
        agent.start()
        ws = agent.ml_json("jupyter", "create", "bench", "--experiment", "bench-exp")
        root = Path(ws["path"])
        python = agent.data_dir / "envs" / ws["id"] / "bin" / "python"
        write_notebook(root / "first.ipynb", "import time\nfrom fetchml import log_metric\nlog_metric('first_cell_at', time.time())")
        write_notebook(root / "two.ipynb", "x = 21", "print(x * 2)")

        client = Client(agent.ws_url, KEYS["admin"])
        client.connect()

        def wait(run_id: str) -> dict:
            while True:
                run = client.call(Opcode.RUN_INFO, {"run_id": run_id}).data
                if run["status"] in ("succeeded", "failed", "cancelled"):
                    return dict(run)
                time.sleep(0.02)

        # 1. queue -> runner started, and -> first cell executing, on an idle agent. The first run
        #    also starts the workspace's warm runner; the kernel's own start is read from each
        #    run's papermill log (from "Working directory" to "Executing notebook with kernel").
        launch, first_cell, beyond = [], [], []
        for i in range(6):
            t = time.time()
            run = client.call(Opcode.QUEUE_RUN, {"workspace": "bench", "notebook": "first.ipynb"}).data
            done = wait(run["id"])
            run_dir = Path(done["run_dir"])
            state = json.loads((run_dir / "state.json").read_text())
            first = next(m["value"] for m in done["metrics"] if m["name"] == "first_cell_at")
            marks = _papermill_marks(run_dir / "run.log")
            if i == 0:
                rows.append(Row("queue -> run started, first run (starts the warm runner)", (state["started_at"] - t) * 1e3, "ms"))
                continue
            launch.append(state["started_at"] - t)
            first_cell.append(first - t)
            beyond.append(first - t - (marks["Executing notebook with kernel"] - marks["Working directory"]))
        kernel = [_kernel_start(python, root) for _ in range(3)]
        rows.append(Row("queue -> run started (runner up), median of 5", median(launch) * 1e3, "ms", target="<= 200 ms"))
        rows.append(Row("queue -> first cell executing, median of 5", median(first_cell), "s",
                        "kernel start alone (median of 3)", median(kernel), "<= 0.2 s + kernel start"))
        rows.append(Row("queue -> first cell minus that run's kernel start, median", median(beyond) * 1e3, "ms",
                        target="<= 200 ms"))

        # 2. a whole run vs papermill by hand on the same notebook, in the same environment.
        ours, ours_ml, by_hand = [], [], []
        env = {**os.environ, "PATH": f"{python.parent}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(python.parent.parent)}
        ml_env = {**os.environ, "FETCHML_SERVER": agent.ws_url, "FETCHML_API_KEY": KEYS["admin"],
                  "FETCHML_CONFIG": str(tmp / "none.yaml")}
        for i in range(5):
            t = time.perf_counter()
            subprocess.run([str(python), "-m", "papermill", "two.ipynb", f"/tmp/{tmp.name}-out-{i}.ipynb", "--no-progress-bar"],
                           cwd=root, env=env, capture_output=True, check=True)
            by_hand.append(time.perf_counter() - t)
            t = time.perf_counter()
            run = client.call(Opcode.QUEUE_RUN, {"workspace": "bench", "notebook": "two.ipynb"}).data
            assert wait(run["id"])["status"] == "succeeded"
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            subprocess.run([*ML, "jupyter", "queue", "--workspace", "bench", "--notebook", "two.ipynb", "--wait"],
                           env=ml_env, capture_output=True, check=True)
            ours_ml.append(time.perf_counter() - t)
        rows.append(Row("queued run of a 2-cell notebook, queue -> succeeded (median of 5)", median(ours), "s",
                        "papermill by hand", median(by_hand), "<= 1.15x"))
        rows.append(Row("`ml jupyter queue --wait`, whole process (median of 5)", median(ours_ml), "s",
                        "papermill by hand", median(by_hand), "<= 1.15x"))
        client.close()

        # 3. `ml status` as a whole process with 10,000 runs in the store.
        floor = time_many(lambda: subprocess.run([sys.executable, "-c", "pass"], capture_output=True, check=True), 10, 2)
        empty = time_many(lambda: subprocess.run([*ML, "status"], env=ml_env, capture_output=True, check=True), 10, 2)
        agent.stop()
        _seed_runs(agent, ws["id"], _RUNS)
        agent.start()
        time.sleep(5)  # steady state: the agent imports papermill in the background after a start
        with Client(agent.ws_url, KEYS["admin"]) as status_client:
            calls = time_many(lambda: status_client.call(Opcode.AGENT_STATUS), 50, 5)
        full = time_many(lambda: subprocess.run([*ML, "status"], env=ml_env, capture_output=True, check=True), 10, 2)
        listing = time_many(lambda: subprocess.run([*ML, "status", "--experiment", "bench-seeded"], env=ml_env,
                                                   capture_output=True, check=True), 10, 2)
        rows.append(Row(f"ml status, whole process, {_RUNS} runs in the store (median)", median(full) * 1e3, "ms",
                        "ml status with 15 runs", median(empty) * 1e3, "<= 150 ms"))
        rows.append(Row(f"  its agent_status request alone, {_RUNS} runs (median of 50)", median(calls) * 1e3, "ms"))
        rows.append(Row(f"ml status --experiment (50 of {_RUNS}), whole process (median)", median(listing) * 1e3, "ms",
                        "python -c pass", median(floor) * 1e3))
    finally:
        agent.cleanup_workspaces()
        agent.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        for leftover in Path("/tmp").glob(f"{tmp.name}-out-*.ipynb"):
            leftover.unlink()
    return rows


if __name__ == "__main__":
    from benchmarks.common import print_rows

    print_rows(TITLE, main())
