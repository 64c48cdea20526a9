"""Cgroups against a directory laid out like /sys/fs/cgroup (v1 and v2)."""

from __future__ import annotations

from pathlib import Path

from fetchml_agent.runtimes.cgroups import Cgroups


def _v2(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (root / "cgroup.subtree_control").write_text("")


def test_v2_limits_written(tmp_path: Path) -> None:
    _v2(tmp_path)
    cg = Cgroups(tmp_path)
    report = cg.apply("ws-1", 1234, cpu=1.5, memory_mb=512)
    assert report == {"enforced": True, "mechanism": "cgroup v2", "cgroup": "fetchml/ws-1"}
    group = tmp_path / "fetchml" / "ws-1"
    assert (group / "memory.max").read_text() == str(512 * 1024 * 1024)
    assert (group / "cpu.max").read_text() == "150000 100000"
    assert (group / "cgroup.procs").read_text() == "1234"


def test_v1_limits_written(tmp_path: Path) -> None:
    for ctl in ("memory", "cpu"):
        (tmp_path / ctl).mkdir()
        (tmp_path / ctl / "cgroup.procs").write_text("")
    cg = Cgroups(tmp_path)
    report = cg.apply("ws-2", 99, cpu=2, memory_mb=1024)
    assert report["enforced"] and report["mechanism"] == "cgroup v1"
    assert (tmp_path / "memory/fetchml/ws-2/memory.limit_in_bytes").read_text() == str(1024**3)
    assert (tmp_path / "cpu/fetchml/ws-2/cpu.cfs_quota_us").read_text() == "200000"


def test_no_hierarchy_says_why(tmp_path: Path) -> None:
    cg = Cgroups(tmp_path)
    report = cg.apply("ws-3", 1, cpu=1, memory_mb=None)
    assert report["enforced"] is False and "cgroup" in report["reason"]
    assert Cgroups(tmp_path, enabled=False).apply("x", 1, 1, 1)["reason"].startswith("cgroup limits are disabled")


def test_no_limits_asked(tmp_path: Path) -> None:
    _v2(tmp_path)
    assert Cgroups(tmp_path).apply("ws", 1, None, None) == {"enforced": False, "reason": "no cpu or memory limit was asked for"}
