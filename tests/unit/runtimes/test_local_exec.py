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
