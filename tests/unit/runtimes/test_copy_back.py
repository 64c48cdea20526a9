"""Copying a users-mode run's results back into the agent's run directory (runtimes/local/runtime.py
``_copy_back``): what the run's user wrote, never what a link of theirs points at."""

from __future__ import annotations

import os
from pathlib import Path

from fetchml_agent.runtimes.local.runtime import _copy_back


def test_only_regular_files_come_back_never_through_a_link_or_a_fifo(tmp_path: Path) -> None:
    secret = tmp_path / "agent-only"
    secret.mkdir()
    (secret / "agent.db").write_text("tokens")
    run = tmp_path / "run"
    (run / "outputs" / "deep").mkdir(parents=True)
    (run / "result.json").write_text("{}")
    (run / "agent.yaml").write_text("not the runner's")  # top level: only the runner's names
    (run / "outputs" / "deep" / "model.txt").write_text("weights")
    (run / "outputs" / "db").symlink_to(secret / "agent.db")
    (run / "outputs" / "dir").symlink_to(secret, target_is_directory=True)
    (run / "run.log").symlink_to(secret / "agent.db")  # a runner's name, but a link
    os.mkfifo(run / "outputs" / "pipe")  # opening it must not hang the agent
    dest = tmp_path / "dest"
    copied = _copy_back(run, dest)
    assert sorted(copied) == ["outputs/deep/model.txt", "result.json"]
    assert (dest / "outputs" / "deep" / "model.txt").read_text() == "weights"
    assert not any("tokens" in p.read_text() for p in dest.rglob("*") if p.is_file())
