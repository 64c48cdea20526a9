"""Issues 12 and 15: what the key check, the pre-authentication limits and HELLO cost a user.

- list p50 on one authenticated connection, quiet, and while eight other connections send 15 MiB
  frames with a wrong key (and the agent's resident-memory growth during that flood);
- a whole `list` on a new connection as `ml` does it (connect, HELLO pipelined, list) against a
  client that knows only the seed (connect, list).
"""

from __future__ import annotations

import shutil
import socket
import struct
import sys
import tempfile
import threading
from pathlib import Path

from benchmarks.common import Row, percentile, time_many

TITLE = "agent hardening: key check, pre-auth limits, hello (issues 12, 15)"
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import KEYS, AgentProcess, free_port  # noqa: E402


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> list[Row]:
    from websockets.sync.client import connect

    from fetchml_agent.client import Client
    from fetchml_agent.protocol import ListRequest, Opcode, api_key_hash

    rows: list[Row] = []
    tmp = Path(tempfile.mkdtemp(prefix="fml-bench-proto-"))
    agent = AgentProcess(tmp / "agent", free_port())
    try:
        agent.start()
        assert agent.proc is not None
        list_frame = ListRequest(api_key_hash(KEYS["admin"])).serialize()
        with connect(agent.ws_url, compression=None) as ws:

            def one_list() -> None:
                ws.send(list_frame)
                ws.recv(timeout=30)

            quiet = time_many(one_list, 300)
            body = b"{" + b" " * (15 * 1024 * 1024) + b"}"
            payload = bytes([Opcode.CREATE_WORKSPACE]) + api_key_hash("wrong") + struct.pack(">I", len(body)) + body
            # A masked binary frame with an all-zero mask, so the flood costs this process no CPU.
            flood_frame = b"\x82\xff" + struct.pack(">Q", len(payload)) + b"\0\0\0\0" + payload
            handshake = (
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{agent.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
            stop = threading.Event()
            peak = base = _rss_kib(agent.proc.pid)

            def flood() -> None:
                while not stop.is_set():
                    try:
                        with socket.create_connection(("127.0.0.1", agent.port), timeout=30) as raw:
                            raw.sendall(handshake)
                            raw.recv(4096)  # 101 Switching Protocols
                            raw.sendall(flood_frame)
                            raw.recv(4096)
                    except OSError:
                        pass

            threads = [threading.Thread(target=flood, daemon=True) for _ in range(8)]
            for t in threads:
                t.start()
            loud = []
            for _ in range(6):
                loud += time_many(one_list, 50, warmup=0)
                peak = max(peak, _rss_kib(agent.proc.pid))
            stop.set()
            for t in threads:
                t.join(30)
        rows.append(Row("ws list p50, 8 connections reconnecting with 15 MiB wrong-key frames",
                        percentile(loud, 50) * 1000, "ms", "quiet", percentile(quiet, 50) * 1000,
                        "no stall (the issue saw 10 s)"))
        rows.append(Row("ws list max during that flood", max(loud) * 1000, "ms", target="< 1000 ms"))
        rows.append(Row("agent RSS growth during that flood", (peak - base) / 1024, "MB", target="< 100 MB"))

        def seed_list() -> None:
            with connect(agent.ws_url, compression=None) as c:
                c.send(list_frame)
                c.recv(timeout=30)

        def ml_list() -> None:
            with Client(agent.ws_url, KEYS["admin"]) as c:
                c.call(Opcode.LIST_JUPYTER)

        seed, hello = [], []
        for _ in range(10):  # alternate, so both see the same machine
            seed += time_many(seed_list, 20, warmup=1)
            hello += time_many(ml_list, 20, warmup=1)
        rows.append(Row("new connection + list, with HELLO pipelined (ml)", percentile(hello, 50) * 1000, "ms",
                        "seed-only client", percentile(seed, 50) * 1000, "<= 1.1x"))
    finally:
        agent.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return rows
