from __future__ import annotations

import asyncio
import os
import subprocess
import time

import pytest

from fetchml_agent.aio import run_blocking
from fetchml_agent.procs import alive, descendants, kill_tree, start_time, tree_rss


def test_tree_is_found_across_sessions_and_killed() -> None:
    # The grandchild moves to a session of its own, as a Jupyter kernel does.
    proc = subprocess.Popen(["sh", "-c", "setsid sleep 300 & sleep 300 & wait"])
    try:
        deadline = time.monotonic() + 10
        while len(descendants(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        kids = descendants(proc.pid)
        assert len(kids) >= 2
        assert tree_rss(proc.pid) > 0
        started = start_time(proc.pid)
        assert alive(proc.pid, started) and not alive(proc.pid, (started or 0) + 1)
        assert kill_tree(proc.pid) >= 3
        proc.wait(10)
        time.sleep(0.1)
        assert all(start_time(k) is None for k in kids)
        assert not alive(proc.pid, started)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_unknown_pids() -> None:
    assert start_time(2**22 + 12345) is None
    assert not alive(None, 1) and not alive(os.getpid(), None)
    assert descendants(2**22 + 12345) == []


def test_one_table_reads_the_process_table_once_for_many_trees(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside one_table() (the usage sweep), every tree is found from one read of /proc, in the
    threads it starts too; outside, each call reads it afresh (kill_tree sees new children)."""
    from fetchml_agent import procs

    reads = []
    real = procs._children
    monkeypatch.setattr(procs, "_children", lambda: reads.append(1) or real())
    trees = [subprocess.Popen(["sh", "-c", "sleep 300 & wait"]) for _ in range(3)]
    try:
        deadline = time.monotonic() + 10
        while not all(descendants(p.pid) for p in trees) and time.monotonic() < deadline:
            time.sleep(0.05)
        reads.clear()

        async def sweep() -> list[list[int]]:
            with procs.one_table():
                return list(await asyncio.gather(*(run_blocking(descendants, p.pid) for p in trees)))

        found = asyncio.run(sweep())
        assert all(len(kids) == 1 for kids in found) and len(reads) == 1
        descendants(trees[0].pid)
        descendants(trees[0].pid)
        assert len(reads) == 3
    finally:
        for p in trees:
            kill_tree(p.pid)
            p.wait(10)
