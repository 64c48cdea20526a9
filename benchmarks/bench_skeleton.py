"""Issue 2: workspace start vs bare JupyterLab; list over WebSocket vs HTTP (`ml` start-up: bench_cli)."""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks.common import Row, median, percentile, time_many

TITLE = "walking skeleton (issue 2)"
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import KEYS, AgentProcess, free_port  # noqa: E402


def _bare_jupyter_ready(tmp: Path) -> float:
    port = free_port()
    token = secrets.token_hex(8)
    env = {**os.environ, "JUPYTER_TOKEN": token}
    argv = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
            f"--ServerApp.root_dir={tmp}"] + (["--allow-root"] if os.geteuid() == 0 else [])
    t = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while True:
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/api/status", headers={"Authorization": f"token {token}"})
                urllib.request.urlopen(req, timeout=1).read()
                return time.perf_counter() - t
            except OSError:
                time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait()


def _seed_workspaces(agent: AgentProcess, n: int) -> None:
    db = agent.data_dir / "agent.db"
    conn = sqlite3.connect(db)
    now = time.time()
    for i in range(n):
        conn.execute(
            "INSERT INTO workspaces (id, name, owner, path, status, token, runtime, index_key, created_at, updated_at, resources)"
            " VALUES (?, ?, 'admin', ?, 'stopped', ?, 'local', ?, ?, ?, '{\"cpu\": 2, \"memory_mb\": 4096, \"gpu\": 0}')",
            (f"ws-bench{i:04d}", f"bench-{i:03d}", f"/tmp/bench/{i}", secrets.token_hex(8), secrets.token_hex(8), now, now),
        )
    conn.commit()
    conn.close()


def main() -> list[Row]:
    rows: list[Row] = []
    tmp = Path(tempfile.mkdtemp(prefix="fml-bench-"))
    agent = AgentProcess(tmp / "agent", free_port())
    try:
        agent.start()
        # 1. create -> ready, against a bare `jupyter lab` start -> ready (alternating, 3 each).
        creates, bares = [], []
        for i in range(3):
            t = time.perf_counter()
            agent.ml("jupyter", "create", f"speed-{i}", "--json")
            creates.append(time.perf_counter() - t)
            bare_dir = tmp / f"bare-{i}"
            bare_dir.mkdir()
            bares.append(_bare_jupyter_ready(bare_dir))
        for i in range(3):
            agent.ml("jupyter", "delete", f"speed-{i}", "--yes")
        rows.append(Row("ml jupyter create -> JupyterLab ready (median of 3)", median(creates), "s",
                        "bare jupyter lab -> ready", median(bares), "<= 1.15x"))
        agent.stop()

        # 2. list round trip with 100 workspaces in the store: one WebSocket vs keep-alive HTTP.
        _seed_workspaces(agent, 100)
        agent.start()
        from websockets.sync.client import connect

        from fetchml_agent.protocol import ListRequest, api_key_hash, parse_response

        frame = ListRequest(api_key_hash(KEYS["admin"])).serialize()
        with connect(agent.ws_url, compression=None) as ws:
            def ws_list() -> None:
                ws.send(frame)
                parse_response(ws.recv())

            ws_times = time_many(ws_list, 2000, warmup=50)
        conn = http.client.HTTPConnection("127.0.0.1", agent.port)
        headers = {"Authorization": f"Bearer {KEYS['admin']}"}

        def http_list() -> None:
            conn.request("GET", "/api/v1/jupyter/workspaces", headers=headers)
            json.loads(conn.getresponse().read())

        http_times = time_many(http_list, 2000, warmup=50)
        ws_p50, http_p50 = percentile(ws_times, 50) * 1e3, percentile(http_times, 50) * 1e3
        rows.append(Row("jupyter_services list over WebSocket, p50 (100 ws)", ws_p50, "ms",
                        "same list over HTTP p50", http_p50, "WS >= 3x faster, p50 <= 0.3 ms"))
        rows.append(Row("HTTP / WebSocket speed-up", http_p50 / ws_p50, "x", target=">= 3x"))
        rows.append(Row("jupyter_services list over WebSocket, p99", percentile(ws_times, 99) * 1e3, "ms"))
    finally:
        agent.cleanup_workspaces()
        agent.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return rows
