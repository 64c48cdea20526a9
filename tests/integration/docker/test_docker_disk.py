"""``--disk`` on the docker runtime, through the real agent and ``ml``: the workspace volume is a
filesystem of that size (an ext4 image the agent, as root, loop-mounts on a directory the volume
binds), so writing past it from the workspace's own kernel fails with ENOSPC; ``limits`` says so
per resource; delete removes the mount and the image file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AgentProcess, free_port
from tests.integration.docker.conftest import cleanup
from tests.integration.jupyter import execute

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PREFIX = f"fmltest-{os.getpid()}-disk"
TABLE = f"fmltest_{os.getpid()}_disk"
WRITE = """
import errno
try:
    with open('big.bin', 'wb') as fh:
        for _ in range(80):
            fh.write(b'\\0' * 2**20)
        fh.flush()
        __import__('os').fsync(fh.fileno())
    print('wrote all')
except OSError as exc:
    print('errno', errno.errorcode[exc.errno])
"""


@pytest.fixture
def docker_agent(tmp_path: Path, docker_client: Any, workspace_image: str) -> Iterator[AgentProcess]:
    a = AgentProcess(tmp_path / "agent", free_port(),
                     {"runtime": "docker", "docker": {"prefix": PREFIX, "firewall_table": TABLE, "image": workspace_image}})
    try:
        with a.running():
            yield a
    finally:
        cleanup(docker_client, PREFIX, TABLE)


def test_disk_size_is_a_filesystem_of_that_size(docker_agent: AgentProcess) -> None:
    a = docker_agent
    ws = a.ml_json("jupyter", "create", "dockdisk", "--disk", "64m")
    image = a.data_dir / "disks" / "docker" / f"{ws['id']}.img"
    mount = a.data_dir / "disks" / "docker" / ws["id"]
    try:
        per = a.ml_json("jupyter", "limits", "dockdisk")["limits"]["per_resource"]
        if os.geteuid() != 0:
            assert per["disk"].startswith("not enforced: a size limit needs the agent to run as root"), per
            return
        assert per["disk"] == "enforced: 64 MiB, a loop-mounted ext4 filesystem", per
        assert os.path.ismount(mount) and image.is_file()
        out = execute(ws["url"], WRITE, timeout=120)
        assert out.split() == ["errno", "ENOSPC"], out
        assert execute(ws["url"], "import os; os.remove('big.bin'); print(os.getcwd())").strip() == "/home/fetchml/work"
        # a restart keeps the filesystem (and what is on it)
        execute(ws["url"], "open('kept.txt', 'w').write('kept')")
        a.ml("jupyter", "restart", "dockdisk")
        assert (mount / "kept.txt").read_text() == "kept"
        url = a.ml_json("jupyter", "info", "dockdisk")["url"]
        assert execute(url, WRITE, timeout=120).split() == ["errno", "ENOSPC"]
    finally:
        a.ml("jupyter", "delete", "dockdisk", "--yes", check=False)
    assert not os.path.ismount(mount) and not image.exists() and not mount.exists()


def test_without_a_size_the_volume_is_docker_s_own(docker_agent: AgentProcess) -> None:
    a = docker_agent
    a.ml_json("jupyter", "create", "docknodisk")
    try:
        per = a.ml_json("jupyter", "limits", "docknodisk")["limits"]["per_resource"]
        assert per["disk"] == "no limit asked for", per
        assert not (a.data_dir / "disks" / "docker").exists() or not any((a.data_dir / "disks" / "docker").iterdir())
    finally:
        a.ml("jupyter", "delete", "docknodisk", "--yes", check=False)
