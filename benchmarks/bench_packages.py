"""Issue 3: ``ml jupyter install WS PKG`` against plain ``pip install PKG`` from the same upstream.

``python -m benchmarks packages`` (or ``make bench-packages``). Target from the issue: the install
through the agent (policy check, the workspace's filtering index, recording who installed what) at
most 1.2x a plain pip install. Both sides install the same tiny wheel (``sixish``, six's size; the
real six already sits in the shared base environment, so pip would not fetch it) into the same
workspace venv from the same local upstream, each with its own warm pip cache, and the package is
uninstalled (untimed) before every run. Runs alternate so the shared machine's load hits both alike.
Also measured: ``ml jupyter check-package`` (a round trip, one decision, one audit event) against
``ml jupyter list`` (a round trip alone).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import Row, median

TITLE = "package installs through the agent (issue 3)"
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import KEYS, ML  # noqa: E402
from tests.integration.packages.world import agent_for, make_upstream, make_wheelhouse, workspace_python  # noqa: E402

PACKAGE = "sixish"
RUNS = 9


def _timed(argv: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    cp = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)
    elapsed = time.perf_counter() - t
    if cp.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])} failed ({cp.returncode}):\n{cp.stdout[-2000:]}{cp.stderr[-2000:]}")
    return elapsed


def main() -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="bench-packages-") as tmp:
        root = Path(tmp)
        with make_upstream(make_wheelhouse(root / "wheels")) as upstream:
            index_url = f"{upstream.url}/simple/"
            agent = agent_for(root / "agent", index_url)
            agent.start()
            try:
                agent.ml("jupyter", "create", "bench")
                python = workspace_python(agent, "bench")
                # plain pip: the workspace's venv, configured by nothing but the upstream and its own cache
                clean = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_", "CONDA"))}
                pip_env = {**clean, "PIP_CONFIG_FILE": os.devnull, "PIP_CACHE_DIR": str(root / "pip-cache"),
                           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
                plain = [str(python), "-m", "pip", "install", "--index-url", index_url, PACKAGE]
                ml_env = {**os.environ, "FETCHML_SERVER": agent.ws_url, "FETCHML_API_KEY": KEYS["admin"],
                          "FETCHML_CONFIG": str(root / "none.yaml")}
                via_ml = [*ML, "jupyter", "install", "bench", PACKAGE]
                uninstall = [str(python), "-m", "pip", "uninstall", "-y", "-q", PACKAGE]

                def run(argv: list[str], env: dict[str, str]) -> float:
                    subprocess.run(uninstall, env=pip_env, capture_output=True, check=False, timeout=300)
                    return _timed(argv, env)

                run(plain, pip_env)  # warm both pip caches and the index's caches
                run(via_ml, ml_env)
                plain_s: list[float] = []
                ml_s: list[float] = []
                for _ in range(RUNS):
                    plain_s.append(run(plain, pip_env))
                    ml_s.append(run(via_ml, ml_env))
                check = [*ML, "jupyter", "check-package", PACKAGE, "--workspace", "bench"]
                listing = [*ML, "jupyter", "list"]
                check_s = [_timed(check, ml_env) for _ in range(RUNS)]
                list_s = [_timed(listing, ml_env) for _ in range(RUNS)]
            finally:
                agent.cleanup_workspaces()
                agent.stop()
    return [
        Row(f"ml jupyter install WS {PACKAGE} (median of {RUNS})", median(ml_s) * 1000, "ms",
            f"pip install {PACKAGE}", median(plain_s) * 1000, "<= 1.2x"),
        Row(f"ml jupyter install WS {PACKAGE} (best of {RUNS})", min(ml_s) * 1000, "ms",
            f"pip install {PACKAGE}", min(plain_s) * 1000, "<= 1.2x"),
        # Each ml run follows its own plain run: their ratio cancels the machine's drifting load.
        Row(f"ml/pip ratio, median of {RUNS} back-to-back pairs", median([m / p for m, p in zip(ml_s, plain_s,
                                                                                               strict=True)]),
            "x", target="<= 1.2x"),
        Row("ml jupyter check-package --workspace (median)", median(check_s) * 1000, "ms",
            "ml jupyter list", median(list_s) * 1000),
    ]
