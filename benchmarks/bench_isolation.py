"""Issue 12: the cost of local.isolation: users on create -> ready (uid set-up, directory
ownership, the venv from local.python, the nftables rules) against the same create on an agent
without it; and the WebSocket list with both (isolation must not touch it). Needs root and
/usr/bin/python3.11 (the interpreter workspace users run); skipped otherwise."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import Row, median, percentile, time_many

TITLE = "local runtime isolation (issue 12)"
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import KEYS, AgentProcess, free_port  # noqa: E402

BASE_PYTHON = "/usr/bin/python3.11"
N = 4


def _creates(agent: AgentProcess, prefix: str) -> list[float]:
    times = []
    for i in range(N):
        t = time.perf_counter()
        agent.ml("jupyter", "create", f"{prefix}-{i}", "--json", user="bob")
        times.append(time.perf_counter() - t)
        agent.ml("jupyter", "delete", f"{prefix}-{i}", "--yes", user="bob")
    return times


def _ws_list_p50(agent: AgentProcess) -> float:
    from websockets.sync.client import connect

    from fetchml_agent.protocol import ListRequest, api_key_hash, parse_response

    frame = ListRequest(api_key_hash(KEYS["admin"])).serialize()
    with connect(agent.ws_url, compression=None) as ws:
        def ws_list() -> None:
            ws.send(frame)
            parse_response(ws.recv())

        return percentile(time_many(ws_list, 1000, warmup=50), 50) * 1e3


def main() -> list[Row]:
    if os.geteuid() != 0 or not Path(BASE_PYTHON).exists():
        print(f"  (skipped: needs root and {BASE_PYTHON})")
        return []
    tmp = Path(tempfile.mkdtemp(prefix="fml-bench-iso-", dir="/tmp"))
    os.chmod(tmp, 0o711)
    prefix = f"fb{os.getpid() % 100000}-"
    table = f"fmlbench_{os.getpid()}"
    local = {"isolation": "users", "workspaces_dir": str(tmp / "ws"), "python": BASE_PYTHON, "user_prefix": prefix,
             "uid_range": [63000, 63999], "firewall_table": table}
    plain = AgentProcess(tmp / "plain", free_port())
    isolated = AgentProcess(tmp / "iso", free_port(), {"local": local})
    rows: list[Row] = []
    try:
        plain.start()
        isolated.start()
        isolated.ml("jupyter", "create", "warm-up", user="bob")  # the user exists from here on, as on a used host
        isolated.ml("jupyter", "delete", "warm-up", "--yes", user="bob")
        without, with_ = [], []
        for round_ in range(2):  # alternate, so a noisy minute hurts both
            without += _creates(plain, f"plain{round_}")
            with_ += _creates(isolated, f"iso{round_}")
        rows.append(Row(f"create -> ready, isolation users (median of {2 * N})", median(with_), "s",
                        "same create, isolation none", median(without), "<= 1.1x"))
        first = AgentProcess(tmp / "first", free_port(), {"local": {**local, "user_prefix": prefix[:-1] + "n-",
                                                                        "firewall_table": table + "_f"}})
        first.start()
        try:
            t = time.perf_counter()
            first.ml("jupyter", "create", "first", user="bob")
            rows.append(Row("first create of an owner (useradd included)", time.perf_counter() - t, "s"))
            first.ml("jupyter", "delete", "first", "--yes", user="bob")
        finally:
            first.stop()
        rows.append(Row("jupyter_services list over WebSocket p50, isolation users", _ws_list_p50(isolated), "ms",
                        "isolation none", _ws_list_p50(plain), "unchanged (~1.0x)"))
    finally:
        for a in (plain, isolated):
            a.cleanup_workspaces()
            a.stop()
        for entry in pwd.getpwall():
            if entry.pw_name.startswith(prefix[:-1]):
                subprocess.run(["userdel", entry.pw_name], capture_output=True, check=False)
        for name in (table, table + "_f"):
            subprocess.run(["nft", "delete", "table", "inet", name], capture_output=True, check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


if __name__ == "__main__":
    from benchmarks.common import print_rows

    print_rows(TITLE, main() or [])
