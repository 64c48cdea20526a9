"""Kernels over Unix sockets: two kernel managers of one server never choose the same socket names.

jupyter_client numbers ipc sockets after a shared prefix by looking for files that exist, and the
files appear only once a kernel runs: two connection files written before either kernel starts
(two kernels started at once) named the same sockets. fetchml_jupyter.ipc's manager adds a suffix
of its own per kernel, kept across a restart's second connection file.
"""

from __future__ import annotations

import json
from pathlib import Path

from jupyter_server.services.kernels.kernelmanager import ServerKernelManager

from fetchml_jupyter import IPC_KERNEL_MANAGER, IPC_SUFFIX_LEN
from fetchml_jupyter.ipc import IpcKernelManager

PORTS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")


def _sockets(cls: type, tmp_path: Path, tag: str) -> list[set[str]]:
    managers = [cls(transport="ipc", ip=str(tmp_path / "k"), connection_file=str(tmp_path / f"{tag}{i}.json"))
                for i in range(2)]
    for m in managers:  # both before either kernel binds anything: two starts at once
        m.write_connection_file()
    out = []
    for m in managers:
        cfg = json.loads(Path(m.connection_file).read_text())
        out.append({f"{cfg['ip']}-{cfg[p]}" for p in PORTS})
    return out


def test_two_kernels_started_at_once_get_sockets_of_their_own(tmp_path: Path) -> None:
    first, second = _sockets(ServerKernelManager, tmp_path, "plain")
    assert first == second  # the race: jupyter_client alone names the same five sockets twice
    first, second = _sockets(IpcKernelManager, tmp_path, "fetchml")
    assert len(first) == len(second) == 5 and not first & second
    for path in first | second:
        prefix = path.rsplit("-", 1)[0]
        assert len(prefix) == len(str(tmp_path / "k")) + IPC_SUFFIX_LEN


def test_a_restart_keeps_the_kernels_prefix(tmp_path: Path) -> None:
    m = IpcKernelManager(transport="ipc", ip=str(tmp_path / "k"), connection_file=str(tmp_path / "c.json"))
    m.write_connection_file()
    ip = m.ip
    m.cleanup_connection_file()
    m.write_connection_file()
    assert m.ip == ip and json.loads(Path(m.connection_file).read_text())["ip"] == ip


def test_the_name_the_agent_configures_is_the_class() -> None:
    module, name = IPC_KERNEL_MANAGER.rsplit(".", 1)
    assert (module, name) == (IpcKernelManager.__module__, IpcKernelManager.__name__)
