"""Issue 15: `ml` start-up, each command as a whole process against `python -c pass` in the same run.

A short command's latency is mostly start-up: the interpreter, then what ``ml`` imports and
builds before the first byte goes to the agent. Every figure runs the real ``ml`` against a real
agent; the runs of ``ml`` and of the bare interpreter alternate, so a busy machine slows both.
Children run without ``PYTHONDONTWRITEBYTECODE`` so that, after the warm-up, they load cached
bytecode as an installed ``ml`` does. Wall time is what a user waits for; CPU time is less
sensitive to other load; where valgrind is installed, callgrind's instruction count of one run
of each is a figure that does not depend on the machine's load at all.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import Row

TITLE = "ml start-up (issue 15)"
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import KEYS, ML, AgentProcess, free_port  # noqa: E402

ROUNDS = 15
COMMANDS = {
    "ml jupyter list": ["jupyter", "list"],
    "ml status": ["status"],
    "ml jupyter --help": ["jupyter", "--help"],
}


def _run(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one whole process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _instructions(argv: list[str], env: dict[str, str]) -> float | None:
    """Millions of instructions one run executes (callgrind), or ``None`` without valgrind."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return None
    cp = subprocess.run([valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv], env=env,
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=True)
    found = re.search(r"Collected : (\d+)", cp.stderr)
    return int(found.group(1)) / 1e6 if found else None


def main() -> list[Row]:
    rows: list[Row] = []
    tmp = Path(tempfile.mkdtemp(prefix="fml-bench-cli-"))
    agent = AgentProcess(tmp / "agent", free_port())
    try:
        agent.start()
        # ml finds the agent as after `make dev-up`: from its config file.
        config = tmp / "ml.yaml"
        config.write_text(f"server: {agent.ws_url}\napi_key: {KEYS['admin']}\n")
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONDONTWRITEBYTECODE", "FETCHML_SERVER", "FETCHML_API_KEY", "FETCHML_CA")}
        env["FETCHML_CONFIG"] = str(config)
        floor_argv = [sys.executable, "-c", "pass"]
        argvs = {name: [*ML, *args] for name, args in COMMANDS.items()}
        for _ in range(3):  # warm-up: bytecode caches written, files in the page cache
            _run(floor_argv, env)
            for argv in argvs.values():
                _run(argv, env)
        floor: list[tuple[float, float]] = []
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in argvs}
        for _ in range(ROUNDS):
            floor.append(_run(floor_argv, env))
            for name, argv in argvs.items():
                runs[name].append(_run(argv, env))
        floor_wall = statistics.median(w for w, _ in floor) * 1e3
        floor_cpu = statistics.median(c for _, c in floor) * 1e3
        for name, samples in runs.items():
            rows.append(Row(f"{name}, whole process, median wall", statistics.median(w for w, _ in samples) * 1e3,
                            "ms", "python -c pass", floor_wall, "<= 100 ms" if name == "ml jupyter list" else ""))
        for name, samples in runs.items():
            rows.append(Row(f"{name}, median CPU", statistics.median(c for _, c in samples) * 1e3, "ms",
                            "python -c pass", floor_cpu))
        floor_ir = _instructions(floor_argv, env)
        if floor_ir is not None:
            for name, argv in argvs.items():
                ir = _instructions(argv, env)
                if ir is not None:
                    rows.append(Row(f"{name}, instructions (callgrind)", ir, "M", "python -c pass", floor_ir))
    finally:
        agent.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return rows
