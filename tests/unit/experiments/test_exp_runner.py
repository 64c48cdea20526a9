"""The detached runner on scripts (no kernel needed): result files, timeout, cancel, launched once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fetchml_agent.procs import alive

ROOT = Path(__file__).resolve().parents[3]


def _launch(run_dir: Path, script: str, **job: Any) -> dict[str, Any]:
    work = run_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    (work / "job.py").write_text(script)
    doc = {"run_id": "run-t", "experiment": "e", "kind": "script", "target": "job.py", "parameters": {"n": 3},
           "timeout_s": None, "retries": 0, "work_dir": str(work), **job}
    (run_dir / "job.json").write_text(json.dumps(doc))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cp = subprocess.run([sys.executable, "-m", "fetchml_agent.experiments.runner", str(run_dir)],
                        capture_output=True, text=True, env=env, timeout=30)
    assert cp.returncode == 0, cp.stdout + cp.stderr  # the launcher returns at once
    return dict(json.loads(cp.stdout))


def _result(run_dir: Path, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (run_dir / "result.json").exists():
            return dict(json.loads((run_dir / "result.json").read_text()))
        time.sleep(0.05)
    raise AssertionError((run_dir / "run.log").read_text())


def test_success_metrics_outputs_and_launched_once(tmp_path: Path) -> None:
    launched = _launch(tmp_path, "from fetchml import log_metric, parameters, outputs_dir\n"
                                 "log_metric('n', parameters()['n'])\n(outputs_dir() / 'o.txt').write_text('x')\n")
    assert launched["pid"] and launched["start_time"]
    result = _result(tmp_path)
    assert result["status"] == "succeeded" and result["exit_code"] == 0 and result["duration_s"] > 0
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["value"] == 3.0
    assert (tmp_path / "work" / "outputs" / "o.txt").read_text() == "x"
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["pid"] == launched["pid"]
    again = subprocess.run([sys.executable, "-m", "fetchml_agent.experiments.runner", str(tmp_path)], capture_output=True,
                           text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert again.returncode == 3 and "never started twice" in again.stdout


def test_failure_with_retries_reports_the_error_line(tmp_path: Path) -> None:
    _launch(tmp_path, "import os\nraise ValueError('attempt ' + os.environ['FETCHML_ATTEMPT'])\n", retries=2)
    result = _result(tmp_path)
    assert result["status"] == "failed" and result["exit_code"] == 1
    assert [a["message"] for a in result["attempts"]] == [f"exited with code 1: ValueError: attempt {n}" for n in (1, 2, 3)]


def test_timeout_kills_the_tree(tmp_path: Path) -> None:
    marker = f"{317 + os.getpid() % 1000}.5"  # a sleep no other test starts
    _launch(tmp_path, f"import subprocess, time\nsubprocess.Popen(['sleep', '{marker}'], start_new_session=True)\ntime.sleep(300)\n",
            timeout_s=1.5)
    result = _result(tmp_path)
    assert result["status"] == "failed" and result["message"] == "timed out after 1.5 s" and result["exit_code"] == 124
    assert result["duration_s"] >= 1.5  # it ran until the timeout, not less
    left = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline(p) == ["sleep", marker]]
    assert left == []  # the grandchild in its own session went with the tree


def test_sigterm_cancels(tmp_path: Path) -> None:
    launched = _launch(tmp_path, "import time\ntime.sleep(300)\n", retries=3)
    time.sleep(1.0)
    os.kill(launched["pid"], signal.SIGTERM)
    result = _result(tmp_path)
    assert result["status"] == "cancelled" and result["exit_code"] == 143 and len(result["attempts"]) == 1
    deadline = time.monotonic() + 5
    while alive(launched["pid"], launched["start_time"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(launched["pid"], launched["start_time"])


def test_warm_runner_forks_runs_and_exits_when_its_socket_goes(tmp_path: Path) -> None:
    import socket

    sock = tmp_path / "w.sock"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cp = subprocess.run([sys.executable, "-m", "fetchml_agent.experiments.runner", "--serve", str(sock), "60"],
                        capture_output=True, text=True, env=env, timeout=60)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    server = json.loads(cp.stdout)
    assert sock.exists() and oct(sock.stat().st_mode & 0o777) == "0o600"
    run_dir = tmp_path / "run"
    (run_dir / "work").mkdir(parents=True)
    (run_dir / "work" / "job.py").write_text("import os\nfrom fetchml import log_metric\nlog_metric('gpu', len(os.environ['CUDA_VISIBLE_DEVICES']))\n")
    (run_dir / "job.json").write_text(json.dumps({"run_id": "run-w", "experiment": "e", "kind": "script", "target": "job.py",
                                                  "work_dir": str(run_dir / "work")}))

    def ask(payload: dict[str, Any]) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(sock))
            s.sendall(json.dumps(payload).encode() + b"\n")
            return dict(json.loads(s.makefile().readline()))

    reply = ask({"run_dir": str(run_dir), "env": {"CUDA_VISIBLE_DEVICES": "0,1"}})
    stat = Path(f"/proc/{reply['pid']}/stat").read_text()
    assert int(stat.rsplit(")", 1)[1].split()[1]) == server["pid"]  # forked by the warm runner
    assert _result(run_dir)["status"] == "succeeded"
    assert json.loads((run_dir / "metrics.jsonl").read_text())["value"] == 3.0  # the run's own environment
    assert "never started twice" in ask({"run_dir": str(run_dir)})["error"]
    sock.unlink()
    deadline = time.monotonic() + 20
    while alive(server["pid"], server["start_time"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(server["pid"], server["start_time"])


def _cmdline(proc: Path) -> list[str]:
    try:
        return (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []
