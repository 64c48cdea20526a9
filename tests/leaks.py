"""The suite's last check: nothing it started outlives it.

Every fixture that starts a process, a container or a firewall table stops it whatever the tests'
outcome; this plugin proves it at the end of the session and fails the run when something is
left, naming it (then removes it, so one leak does not poison the next run). What counts as ours:

- processes whose command line or working directory lies under this session's pytest base
  temporary directory (agents, JupyterLab servers, kernels, the Nomad double's tasks, papermill);
- Docker containers, networks and volumes labelled ``io.fetchml.instance=fmltest-<pid>...``;
- nftables tables ``fmltest_<pid>...`` and network namespaces ``fmltest-<pid>...``;

where ``<pid>`` is this pytest process, so sessions running side by side never see each other's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

__all__ = ["leftovers"]

PREFIX = f"fmltest-{os.getpid()}"
TABLE_PREFIX = f"fmltest_{os.getpid()}"
# Servers stopped with SIGTERM by the last teardown may take a moment to exit.
_GRACE = float(os.environ.get("FETCHML_TEST_LEAK_GRACE_S", "10"))


def _ours(name: str, prefix: str = PREFIX, sep: str = "-") -> bool:
    return name == prefix or name.startswith(prefix + sep)  # servers stopped with SIGTERM by the last teardown may take a moment to exit


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat[stat.rfind(")") + 2 :].split()[1])
    return pids


def _processes_under(root: str) -> list[tuple[int, str]]:
    skip = _ancestors()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            state = (entry / "stat").read_text().split(") ", 1)[1][0]
        except OSError:
            continue
        if state == "Z" or not cmdline:
            continue
        with contextlib.suppress(OSError):
            if os.readlink(entry / "cwd").startswith(root):
                found.append((int(entry.name), cmdline))
                continue
        if root in cmdline:
            found.append((int(entry.name), cmdline))
    return found


def _docker_leftovers() -> list[tuple[str, Any]]:
    try:
        import docker

        client = docker.DockerClient(base_url="unix:///var/run/docker.sock", timeout=10)
        client.ping()
    except Exception:  # no engine: nothing of ours can be there
        return []
    found: list[tuple[str, Any]] = []

    def ours(name: str, labels: dict[str, str] | None) -> bool:
        return _ours(name) or _ours((labels or {}).get("io.fetchml.instance", ""))

    for c in client.containers.list(all=True):
        if ours(c.name, c.labels):
            found.append((f"container {c.name}", c))
    for n in client.networks.list():
        if ours(n.name, n.attrs.get("Labels")):
            found.append((f"network {n.name}", n))
    for v in client.volumes.list():
        if ours(v.name, v.attrs.get("Labels")):
            found.append((f"volume {v.name}", v))
    return found


def _nft_tables() -> list[str]:
    if shutil.which("nft") is None or os.geteuid() != 0:
        return []
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    names = [line.split()[-1] for line in out.splitlines() if line.strip()]
    return [name for name in names if _ours(name, TABLE_PREFIX, "_")]


def _netns() -> list[str]:
    if shutil.which("ip") is None or os.geteuid() != 0:
        return []
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.split() and _ours(line.split()[0])]


def leftovers(basetemp: Path | None, *, clean: bool = True) -> list[str]:
    """What this session left behind, described; removed as well when ``clean``."""
    found: list[str] = []
    if basetemp is not None:
        root = str(basetemp)
        deadline = time.monotonic() + _GRACE
        procs = _processes_under(root)
        while procs and time.monotonic() < deadline:
            time.sleep(0.25)
            procs = _processes_under(root)
        for pid, cmdline in procs:
            found.append(f"process {pid}: {cmdline[:200]}")
            if clean:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
    for what, obj in _docker_leftovers():
        found.append(what)
        if clean:
            with contextlib.suppress(Exception):
                obj.remove(force=True) if what.startswith(("container", "volume")) else obj.remove()
    for table in _nft_tables():
        found.append(f"nftables table inet {table}")
        if clean:
            subprocess.run(["nft", "delete", "table", "inet", table], capture_output=True)
    for ns in _netns():
        found.append(f"network namespace {ns}")
        if clean:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    factory = getattr(session.config, "_tmp_path_factory", None)
    basetemp = getattr(factory, "_basetemp", None)  # None when no test asked for a tmp path
    found = leftovers(basetemp)
    if not found:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = ["the test session left these behind (now removed): every fixture must stop what it starts", *found]
    if reporter is not None:
        reporter.write_sep("=", "leftovers", red=True)
        for line in lines:
            reporter.write_line(line)
    if session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
