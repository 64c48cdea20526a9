"""Issue 13: what the access layer adds to JupyterLab calls.

In one run: a workspace started by a real agent (local runtime, fetchml_jupyter asking the agent
who each credential is, answers cached for a second) and, beside it, the same JupyterLab on the
same directory with the same server extensions except fetchml_jupyter, under Jupyter's plain
token auth: the baseline. Measured on both, each over one kept-alive connection:

- a REST call, ``GET /api/contents/notes.ipynb`` (with the personal token in the header; and on
  the access side also with a browser's session cookie);
- a kernel execute round trip, ``execute_request`` → ``execute_reply`` and ``idle`` on an open
  kernel WebSocket.

How it stays fair on a noisy machine (other work shares its two cores): a warm-up on every side
first (not counted), then the sides take turns, REST calls one by one and executions in runs of
:data:`EXEC_RUN` (see ``main``), each side going first as often as the others, so that a burst of
load falls on all of them alike. The "added at p50" row is the difference of the two p50s (the
targets: ≤ 1 ms on REST, ≤ 0.5 ms on execute); the "per block" rows give the same difference over
each of :data:`ROUNDS` consecutive blocks of REST samples, or each turn of executions, the
smallest and the largest, to show how stable it is.

Where the time would go if the layer were slow (the profile rows): a REST call whose answer is
cached costs a dictionary lookup in the server; once a second per credential the answer is
renewed with one HTTP call to the agent (``POST /access/v1/resolve``), timed here on its own over
a kept-alive connection, as the extension makes it.

Sizes: ``BENCH_ACCESS_REST`` (REST samples per side, default 3000), ``BENCH_ACCESS_EXEC``
(executions per side, default 400).
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

N_REST = int(os.environ.get("BENCH_ACCESS_REST", "3000"))
N_EXEC = int(os.environ.get("BENCH_ACCESS_EXEC", "400"))
ROUNDS = 6
EXEC_RUN = 25
WARM_REST, WARM_EXEC = 200, 30
NOTEBOOK = {"type": "notebook", "format": "json", "content": {"cells": [], "metadata": {}, "nbformat": 4,
                                                               "nbformat_minor": 5}}


class Side:
    """One JupyterLab and how to call it: a kept-alive HTTP connection and an open kernel WebSocket."""

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.port, self.headers = port, headers
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.kernel = ""
        self.ws: Any = None
        self.session = uuid.uuid4().hex

    def rest(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        self.conn.request(method, path, body=json.dumps(body) if body is not None else None,
                          headers={**self.headers, "Content-Type": "application/json"})
        r = self.conn.getresponse()
        return r.status, r.read()

    def open_kernel(self) -> None:
        from websockets.sync.client import connect

        status, body = self.rest("POST", "/api/kernels", {"name": "python3"})
        assert status == 201, body
        self.kernel = json.loads(body)["id"]
        self.ws = connect(f"ws://127.0.0.1:{self.port}/api/kernels/{self.kernel}/channels",
                          additional_headers=self.headers, max_size=None, compression=None)

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()
            self.rest("DELETE", f"/api/kernels/{self.kernel}")
        self.conn.close()

    def rest_times(self, n: int) -> list[float]:
        out = []
        for _ in range(n):
            t = time.perf_counter()
            status, _ = self.rest("GET", "/api/contents/notes.ipynb")
            out.append(time.perf_counter() - t)
            assert status == 200, status
        return out

    def exec_times(self, n: int) -> list[float]:
        out = []
        for _ in range(n):
            msg_id = uuid.uuid4().hex
            t = time.perf_counter()
            self.ws.send(json.dumps({
                "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "b", "session": self.session,
                           "date": "", "version": "5.3"},
                "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                "content": {"code": "1", "silent": False, "store_history": False, "user_expressions": {},
                            "allow_stdin": False, "stop_on_error": True}}))
            replied = idle = False
            while not (replied and idle):
                m = json.loads(self.ws.recv(timeout=30))
                if m.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                replied = replied or m["msg_type"] == "execute_reply"
                idle = idle or (m["msg_type"] == "status" and m["content"]["execution_state"] == "idle")
            out.append(time.perf_counter() - t)
        return out


def _plain_lab(root: Path, config_dir: Path) -> tuple[subprocess.Popen[bytes], int, str]:
    """The baseline: the workspace's server extensions minus fetchml_jupyter, Jupyter's own token."""
    from fetchml_jupyter import SERVER_EXTENSIONS

    port, token = free_port(), secrets.token_hex(16)
    config = config_dir / "plain_server_config.json"
    extensions = {k: v for k, v in SERVER_EXTENSIONS.items() if k != "fetchml_jupyter"}
    config.write_text(json.dumps({"ServerApp": {"jpserver_extensions": extensions}}))
    argv = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
            f"--config={config}", f"--ServerApp.root_dir={root}"] + (["--allow-root"] if os.geteuid() == 0 else [])
    proc = subprocess.Popen(argv, env={**os.environ, "JUPYTER_TOKEN": token}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if Side(port, {"Authorization": f"token {token}"}).rest("GET", "/api/status")[0] == 200:
                return proc, port, token
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("plain JupyterLab did not start")


def _session_cookie(port: int, token: str) -> str:
    """A browser's session: open the personal URL, keep the cookie the server sets."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", f"/lab?token={token}")
    r = conn.getresponse()
    r.read()
    conn.close()
    cookie = next(c for c in r.headers.get_all("Set-Cookie") or [] if c.startswith("fetchml-session-"))
    return cookie.split(";", 1)[0]


def _resolve_times(agent: AgentProcess, workspace: str, credential: str, n: int) -> list[float]:
    """The extension's call on a cache miss: POST /access/v1/resolve with the server credential."""
    server_credential = agent.workspace_secrets(workspace)["token"]
    conn = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=30)
    body = json.dumps({"credential": credential, "peer": "127.0.0.1", "forwarded_for": ""})
    headers = {"Authorization": f"Bearer {server_credential}", "Content-Type": "application/json"}
    out = []
    for i in range(n + 50):
        t = time.perf_counter()
        conn.request("POST", "/access/v1/resolve", body=body, headers=headers)
        r = conn.getresponse()
        r.read()
        dt = time.perf_counter() - t
        assert r.status == 200, r.status
        if i >= 50:
            out.append(dt)
    conn.close()
    return out


def main() -> list[Row]:
    rows: list[Row] = []
    samples: dict[str, dict[str, list[float]]] = {"access": {}, "plain": {}, "cookie": {}}
    per_round: dict[str, list[float]] = {"rest": [], "exec": []}
    with tempfile.TemporaryDirectory(prefix="bench-access-") as tmp:
        agent = AgentProcess(Path(tmp) / "agent", free_port())
        with agent.running():
            ws = agent.ml_json("jupyter", "create", "bench")
            parts = urllib.parse.urlsplit(ws["url"])
            port, token = int(parts.port or 0), urllib.parse.parse_qs(parts.query)["token"][0]
            sides = {"access": Side(port, {"Authorization": f"token {token}"})}
            assert sides["access"].rest("PUT", "/api/contents/notes.ipynb", NOTEBOOK)[0] in (200, 201)
            sides["cookie"] = Side(port, {"Cookie": _session_cookie(port, token)})
            plain, pport, ptoken = _plain_lab(Path(ws["path"]), Path(tmp))
            sides["plain"] = Side(pport, {"Authorization": f"token {ptoken}"})
            try:
                for name in ("plain", "access"):
                    sides[name].open_kernel()
                for side in sides.values():  # warm-up: imports, caches, JIT-free but cold paths
                    side.rest_times(WARM_REST)
                    if side.ws is not None:
                        side.exec_times(WARM_EXEC)
                # REST: the sides take turns sample by sample (each going first as often as the
                # others), so a burst of load on this machine falls on all of them alike.
                rest_sides = ("plain", "cookie", "access")
                rest: dict[str, list[float]] = {name: [] for name in rest_sides}
                block = max(1, N_REST // ROUNDS)
                for i in range(N_REST):
                    for name in rest_sides[i % 3:] + rest_sides[:i % 3]:
                        rest[name].extend(sides[name].rest_times(1))
                    if (i + 1) % block == 0:
                        per_round["rest"].append(percentile(rest["access"][-block:], 50)
                                                 - percentile(rest["plain"][-block:], 50))
                # Executions: in turns of EXEC_RUN back to back (ABBA). An idle kernel answers after a
                # delay of its own that depends on when the request comes (its event loop's phase);
                # back-to-back requests meet it in the same phase on both sides, single alternating
                # ones at random phases, which spreads both sides' times over tens of ms.
                execs: dict[str, list[float]] = {"plain": [], "access": []}
                turns = max(2, N_EXEC // EXEC_RUN)
                for t in range(turns):
                    got = {}
                    for name in (("plain", "access") if t % 2 == 0 else ("access", "plain")):
                        got[name] = sides[name].exec_times(EXEC_RUN)
                        execs[name].extend(got[name])
                    per_round["exec"].append(percentile(got["access"], 50) - percentile(got["plain"], 50))
                for name in rest_sides:
                    samples[name]["rest"] = rest[name]
                for name in execs:
                    samples[name]["exec"] = execs[name]
                resolve = _resolve_times(agent, "bench", token, 1000)
            finally:
                for side in sides.values():
                    side.close()
                plain.terminate()
                plain.wait()
    for kind, label, target in (("rest", "REST GET /api/contents/notes.ipynb", "≤ 1 ms added"),
                                ("exec", "kernel execute round trip", "≤ 0.5 ms added")):
        a, b = samples["access"][kind], samples["plain"][kind]
        for q in (50, 99):
            rows.append(Row(f"{label} p{q} (n={len(a)})", percentile(a, q) * 1000, "ms", "plain token auth",
                            percentile(b, q) * 1000))
        added = (percentile(a, 50) - percentile(b, 50)) * 1000
        rows.append(Row(f"{label}: added at p50", added, "ms", target=target))
        rows.append(Row(f"{label}: added at p50, per block (min)", min(per_round[kind]) * 1000, "ms"))
        rows.append(Row(f"{label}: added at p50, per block (max)", max(per_round[kind]) * 1000, "ms"))
    c, b = samples["cookie"]["rest"], samples["plain"]["rest"]
    rows.append(Row(f"REST with a session cookie p50 (n={len(c)})", percentile(c, 50) * 1000, "ms",
                    "plain token auth", percentile(b, 50) * 1000))
    rows.append(Row("profile: agent resolve round trip p50 (a cache miss, ≤ 1/s per credential)",
                    percentile(resolve, 50) * 1000, "ms"))
    rows.append(Row("profile: agent resolve round trip p99", percentile(resolve, 99) * 1000, "ms"))
    return rows
