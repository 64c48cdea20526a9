from __future__ import annotations

import os
import subprocess
import time

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
