"""``LocalRuntime.exec``: the workspace's environment, output as it comes, stdin when given."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fetchml_agent.runtimes.base import WorkspaceSpec
from fetchml_agent.runtimes.local import LocalRuntime


def test_exec_feeds_stdin_and_streams_output(tmp_path: Path) -> None:
    rt = LocalRuntime(tmp_path / "data", use_cgroups=False)
    (tmp_path / "ws").mkdir()
    spec = WorkspaceSpec(id="w1", name="w1", owner="alice", path=tmp_path / "ws", token="t")
    seen: list[bytes] = []

    async def output(chunk: bytes) -> None:
        seen.append(chunk)

    async def scenario() -> tuple[int, bytes, int, bytes]:
        fed = await rt.exec(spec, None, ["sh", "-c", "wc -c; pwd"], output=output, stdin=b"x" * 100_000)
        empty = await rt.exec(spec, None, ["wc", "-c"])
        return fed.exit_code, fed.output, empty.exit_code, empty.output

    code, out, code2, out2 = asyncio.run(scenario())
    assert code == 0 and out.split()[0] == b"100000" and out.split()[1] == str(tmp_path / "ws").encode()
    assert b"".join(seen) == out
    assert code2 == 0 and out2.strip() == b"0"


def test_stats_carry_cpu_percent_over_a_short_window(tmp_path: Path) -> None:
    """As docker's: ``cpu_percent`` (100 = one core) measured by the runtime, so ``ml monitor``
    shows a rate from its first sample; a busy process tree shows more than nothing."""
    import subprocess
    import sys

    from fetchml_agent import procs

    rt = LocalRuntime(tmp_path / "data", use_cgroups=False)
    busy = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 30: pass"])
    try:
        state = {"pid": busy.pid, "start_time": procs.start_time(busy.pid)}
        stats = asyncio.run(rt.stats(state))
        assert stats["running"] and stats["processes"] == 1 and stats["cpu_percent"] > 0, stats
    finally:
        busy.kill()
        busy.wait()
    gone = asyncio.run(rt.stats({"pid": busy.pid, "start_time": 1}))
    assert gone == {"running": False}
