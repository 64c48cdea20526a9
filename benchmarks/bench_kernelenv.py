"""Issue 15: kernels in an environment of their own (local runtime). A workspace's create -> ready
and its first kernel (start, run ``1``, shut down) against a bare ``jupyter lab`` whose native
kernel runs in the server's own environment, measured alternately in the same run."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks.common import Row, median

TITLE = "kernel environment (issue 15)"
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import AgentProcess, free_port  # noqa: E402
from tests.integration.jupyter import execute  # noqa: E402

ROUNDS = 3


def _bare(tmp: Path) -> tuple[float, float]:
    """A bare JupyterLab: start -> ready, then its first kernel's round trip."""
    port, token = free_port(), secrets.token_hex(8)
    argv = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
            f"--ServerApp.root_dir={tmp}"] + (["--allow-root"] if os.geteuid() == 0 else [])
    t = time.perf_counter()
    proc = subprocess.Popen(argv, env={**os.environ, "JUPYTER_TOKEN": token}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while True:
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/api/status",
                                             headers={"Authorization": f"token {token}"})
                urllib.request.urlopen(req, timeout=1).read()
                break
            except OSError:
                time.sleep(0.05)
        ready = time.perf_counter() - t
        t = time.perf_counter()
        execute(f"http://127.0.0.1:{port}/lab?token={token}", "1")
        return ready, time.perf_counter() - t
    finally:
        proc.terminate()
        proc.wait()


def main() -> list[Row]:
    tmp = Path(tempfile.mkdtemp(prefix="fml-bench-kenv-"))
    agent = AgentProcess(tmp / "agent", free_port())
    creates, kernels, bare_ready, bare_kernels = [], [], [], []
    try:
        agent.start()
        for i in range(ROUNDS):
            t = time.perf_counter()
            url = agent.ml_json("jupyter", "create", f"kenv-{i}")["url"]
            creates.append(time.perf_counter() - t)
            t = time.perf_counter()
            execute(url, "1")
            kernels.append(time.perf_counter() - t)
            (tmp / f"bare-{i}").mkdir()
            ready, kernel = _bare(tmp / f"bare-{i}")
            bare_ready.append(ready)
            bare_kernels.append(kernel)
        for i in range(ROUNDS):
            agent.ml("jupyter", "delete", f"kenv-{i}", "--yes")
    finally:
        agent.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return [
        Row(f"ml jupyter create -> ready, kernel environment (median of {ROUNDS})", median(creates), "s",
            "bare jupyter lab -> ready", median(bare_ready), "<= 1.15x"),
        Row(f"first kernel: start, run 1, shut down (median of {ROUNDS})", median(kernels), "s",
            "bare jupyter lab's native kernel", median(bare_kernels), "<= 1.15x"),
    ]
