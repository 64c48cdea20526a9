"""A real agent on the docker runtime for the access tests, and the cleanup of what it made.

Everything is named ``fmltest-<pid>-<tag>`` (nftables table ``fmltest_<pid>_<tag>``) and removed
on leaving, whatever happened; nothing else on the shared engine is touched.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.conftest import AgentProcess, free_port

__all__ = ["docker_agent"]


@contextlib.contextmanager
def docker_agent(root: Path, tag: str, client: Any, image: str, extra: dict[str, Any]) -> Iterator[AgentProcess]:
    prefix, table = f"fmltest-{os.getpid()}-{tag}", f"fmltest_{os.getpid()}_{tag}"
    a = AgentProcess(root, free_port(), {
        **extra, "runtime": "docker",
        "docker": {"prefix": prefix, "firewall_table": table, "image": image},
        "package_management": {"startup_blocked_packages": "off"},
    })
    try:
        a.start()
        yield a
    finally:
        a.stop()
        label = {"label": [f"io.fetchml.instance={prefix}"]}
        for c in client.containers.list(all=True, filters=label):
            c.remove(force=True)
        for n in client.networks.list(filters=label):
            n.remove()
        for v in client.volumes.list(filters=label):
            v.remove(force=True)
        subprocess.run(["nft", "delete", "table", "inet", table], capture_output=True)
