"""Issue 13: what the access layer adds to JupyterLab calls.

In one run: a workspace started by a real agent (local runtime, fetchml_jupyter asking the agent
who each credential is, answers cached for a second) and, beside it, the same JupyterLab with
Jupyter's plain token auth on the same directory. Measured on both, over one kept-alive
connection: a REST call (``GET /api/contents/notes.ipynb``) and a kernel execute round trip
(``execute_request`` → ``execute_reply``/idle on an open kernel WebSocket). Rows are p50 and p99
of each, with the plain server as the baseline; the targets are on what is *added* at p50.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

from benchmarks.common import Row, percentile

TITLE = "access layer (issue 13): JupyterLab REST and kernel execute, with and without it"
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import AgentProcess, free_port  # noqa: E402

N_REST = int(os.environ.get("BENCH_ACCESS_REST", "600"))
N_EXEC = int(os.environ.get("BENCH_ACCESS_EXEC", "200"))
NOTEBOOK = {"type": "notebook", "format": "json", "content": {"cells": [], "metadata": {}, "nbformat": 4,
                                                               "nbformat_minor": 5}}


def _plain_lab(root: Path) -> tuple[subprocess.Popen[bytes], int, str]:
    port, token = free_port(), secrets.token_hex(16)
    argv = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
            f"--ServerApp.root_dir={root}"] + (["--allow-root"] if os.geteuid() == 0 else [])
    proc = subprocess.Popen(argv, env={**os.environ, "JUPYTER_TOKEN": token}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(600):
        try:
            if _rest(port, token, "GET", "/api/status")[0] == 200:
                return proc, port, token
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("plain JupyterLab did not start")


def _rest(port: int, token: str, method: str, path: str, body: Any = None,
          conn: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request(method, path, body=json.dumps(body) if body is not None else None,
              headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    if conn is None:
        c.close()
    return r.status, data


def _rest_times(port: int, token: str, n: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    out = []
    for i in range(n + 20):
        t = time.perf_counter()
        status, _ = _rest(port, token, "GET", "/api/contents/notes.ipynb", conn=conn)
        dt = time.perf_counter() - t
        assert status == 200, status
        if i >= 20:
            out.append(dt)
    conn.close()
    return out


def _exec_times(port: int, token: str, n: int) -> list[float]:
    from websockets.sync.client import connect

    status, body = _rest(port, token, "POST", "/api/kernels", {"name": "python3"})
    assert status == 201, body
    kid = json.loads(body)["id"]
    out = []
    try:
        with connect(f"ws://127.0.0.1:{port}/api/kernels/{kid}/channels",
                     additional_headers={"Authorization": f"token {token}"}, max_size=None) as ws:
            session = uuid.uuid4().hex
            for i in range(n + 10):
                msg_id = uuid.uuid4().hex
                t = time.perf_counter()
                ws.send(json.dumps({
                    "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "b", "session": session,
                               "date": "", "version": "5.3"},
                    "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                    "content": {"code": "1", "silent": False, "store_history": False, "user_expressions": {},
                                "allow_stdin": False, "stop_on_error": True}}))
                replied = idle = False
                while not (replied and idle):
                    m = json.loads(ws.recv(timeout=30))
                    if m.get("parent_header", {}).get("msg_id") != msg_id:
                        continue
                    replied = replied or m["msg_type"] == "execute_reply"
                    idle = idle or (m["msg_type"] == "status" and m["content"]["execution_state"] == "idle")
                dt = time.perf_counter() - t
                if i >= 10:
                    out.append(dt)
    finally:
        _rest(port, token, "DELETE", f"/api/kernels/{kid}")
    return out


def main() -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-access-") as tmp:
        agent = AgentProcess(Path(tmp) / "agent", free_port())
        with agent.running():
            ws = agent.ml_json("jupyter", "create", "bench")
            parts = urllib.parse.urlsplit(ws["url"])
            port, token = int(parts.port or 0), urllib.parse.parse_qs(parts.query)["token"][0]
            root = Path(ws["path"])
            assert _rest(port, token, "PUT", "/api/contents/notes.ipynb", NOTEBOOK)[0] in (200, 201)
            plain, pport, ptoken = _plain_lab(root)
            try:
                measured: dict[str, dict[str, list[float]]] = {"access": {}, "plain": {}}
                # Interleaved rounds, so that load on this machine falls on both sides alike.
                for _ in range(3):
                    for side, (p, tok) in (("plain", (pport, ptoken)), ("access", (port, token))):
                        measured[side].setdefault("rest", []).extend(_rest_times(p, tok, N_REST // 3))
                        measured[side].setdefault("exec", []).extend(_exec_times(p, tok, N_EXEC // 3))
            finally:
                plain.terminate()
                plain.wait()
    for kind, label, target in (("rest", "REST GET /api/contents/notes.ipynb", "≤ 1 ms added"),
                                ("exec", "kernel execute round trip", "≤ 0.5 ms added")):
        a, b = measured["access"][kind], measured["plain"][kind]
        for q in (50, 99):
            rows.append(Row(f"{label} p{q}", percentile(a, q) * 1000, "ms", "plain token auth",
                            percentile(b, q) * 1000))
        added = (percentile(a, 50) - percentile(b, 50)) * 1000
        rows.append(Row(f"{label}: added at p50", added, "ms", target=target))
    return rows
