"""gpu_facts: nvidia-smi outputs of several GPU models become the ``fetchml_gpus`` fact."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES, REPO, load_plugin, run_module, tool

from fetchml_agent.gpus import QUERY_FIELDS

gpu_facts = load_plugin("modules", "gpu_facts")
SMI = FIXTURES / "nvidia_smi"


def fake_nvidia_smi(tmp_path: Path, fixture: str, rc: int = 0) -> Path:
    """An executable that answers like nvidia-smi with a recorded output and records its argv."""
    script = tmp_path / "nvidia-smi"
    script.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$@" > "{tmp_path}/argv"\ncat "{SMI / fixture}"\nexit {rc}\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def facts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fixture: str, rc: int = 0) -> dict:
    smi = fake_nvidia_smi(tmp_path, fixture, rc)
    out = run_module(gpu_facts, {"nvidia_smi": str(smi), "pci_root": str(tmp_path / "nopci")}, monkeypatch)
    assert not out.failed, out.result
    assert out.result["changed"] is False
    return out.result["ansible_facts"]["fetchml_gpus"]


def test_a100_pair(tmp_path, monkeypatch):
    f = facts(tmp_path, monkeypatch, "a100_sxm4_80gb_x2.csv")
    assert f["count"] == 2
    assert f["models"] == ["NVIDIA A100-SXM4-80GB"]
    assert f["memory_mib"] == [81920, 81920]
    assert f["memory_mib_total"] == 163840
    assert f["driver_version"] == "535.129.03"
    assert f["uuids"][0] == "GPU-4b1f0c52-8e0d-7a51-3c9e-0d2f6a7b1c01"
    assert f["gpus"][1]["pci_bus_id"] == "00000000:0F:00.0"
    # The module asked exactly the agent's query.
    argv = (tmp_path / "argv").read_text().split()
    assert argv == ["--query-gpu=" + ",".join(QUERY_FIELDS), "--format=csv,noheader,nounits"]


def test_h100_board_of_eight(tmp_path, monkeypatch):
    f = facts(tmp_path, monkeypatch, "h100_80gb_hbm3_x8.csv")
    assert f["count"] == 8
    assert f["models"] == ["NVIDIA H100 80GB HBM3"]
    assert f["memory_mib_total"] == 8 * 81559
    assert [g["index"] for g in f["gpus"]] == list(range(8))
    assert len(set(f["uuids"])) == 8


def test_t4(tmp_path, monkeypatch):
    f = facts(tmp_path, monkeypatch, "tesla_t4_x1.csv")
    assert (f["count"], f["models"], f["memory_mib"], f["driver_version"]) == (
        1,
        ["Tesla T4"],
        [15360],
        "525.147.05",
    )


def test_memory_not_available_is_null_not_an_error(tmp_path, monkeypatch):
    f = facts(tmp_path, monkeypatch, "a100_mig_na.csv")
    assert f["count"] == 1
    assert f["memory_mib"] == [None]
    assert f["memory_mib_total"] == 0
    assert f["models"] == ["GRID A100-40C"]


def test_header_and_units_are_read(tmp_path, monkeypatch):
    f = facts(tmp_path, monkeypatch, "a100_pcie_header_units.csv")
    assert f["count"] == 1
    assert f["memory_mib"] == [40960]


def test_no_devices_is_zero_gpus(tmp_path, monkeypatch):
    f = facts(tmp_path, monkeypatch, "no_devices.txt", rc=6)
    assert f["count"] == 0
    assert f["models"] == [] and f["uuids"] == [] and f["driver_version"] is None
    assert f["nvidia_smi"].endswith("nvidia-smi")


def test_no_nvidia_smi_is_zero_gpus(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    out = run_module(gpu_facts, {"pci_root": str(tmp_path)}, monkeypatch)
    assert not out.failed
    f = out.result["ansible_facts"]["fetchml_gpus"]
    assert f["count"] == 0 and f["nvidia_smi"] is None and f["pci_devices"] == []


def test_driver_failure_fails_with_its_message(tmp_path, monkeypatch):
    (tmp_path / "err.txt").write_text(
        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n"
    )
    smi = tmp_path / "nvidia-smi"
    smi.write_text(f'#!/bin/sh\ncat "{tmp_path}/err.txt" >&2\nexit 9\n')
    smi.chmod(0o755)
    out = run_module(gpu_facts, {"nvidia_smi": str(smi)}, monkeypatch)
    assert out.failed
    assert "couldn't communicate with the NVIDIA driver" in out.result["msg"]
    assert "exit 9" in out.result["msg"]


def test_garbled_output_fails_clearly(tmp_path, monkeypatch):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho '0, only, three'\n")
    smi.chmod(0o755)
    out = run_module(gpu_facts, {"nvidia_smi": str(smi)}, monkeypatch)
    assert out.failed
    assert "cannot read the output" in out.result["msg"]


def _pci_device(root: Path, address: str, vendor: str, cls: str, device: str) -> None:
    d = root / address
    d.mkdir(parents=True)
    (d / "vendor").write_text(vendor + "\n")
    (d / "class").write_text(cls + "\n")
    (d / "device").write_text(device + "\n")


def test_pci_bus_shows_gpus_before_the_driver(tmp_path, monkeypatch):
    root = tmp_path / "pci"
    _pci_device(root, "0000:07:00.0", "0x10de", "0x030200", "0x20b2")  # A100 3D controller
    _pci_device(root, "0000:08:00.0", "0x10de", "0x030000", "0x1eb8")  # T4 as VGA
    _pci_device(root, "0000:09:00.0", "0x10de", "0x040300", "0x10f0")  # NVIDIA HDMI audio
    _pci_device(root, "0000:00:1f.0", "0x8086", "0x030000", "0x3e92")  # Intel graphics
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = run_module(gpu_facts, {"pci_root": str(root)}, monkeypatch)
    f = out.result["ansible_facts"]["fetchml_gpus"]
    assert f["count"] == 0
    assert f["pci_devices"] == [
        {"address": "0000:07:00.0", "device_id": "0x20b2"},
        {"address": "0000:08:00.0", "device_id": "0x1eb8"},
    ]


def test_check_mode_still_reads(tmp_path, monkeypatch):
    smi = fake_nvidia_smi(tmp_path, "tesla_t4_x1.csv")
    out = run_module(gpu_facts, {"nvidia_smi": str(smi), "_ansible_check_mode": True}, monkeypatch)
    assert out.result["ansible_facts"]["fetchml_gpus"]["count"] == 1


def test_module_utils_is_the_agent_parser():
    link = REPO / "plugins" / "module_utils" / "fetchml_gpus.py"
    assert link.is_symlink()
    assert link.resolve() == (REPO / "fetchml_agent" / "gpus.py").resolve()


def test_through_ansible(tmp_path):
    """The module runs through ``ansible`` itself: the symlinked module_utils is shipped with it."""
    smi = fake_nvidia_smi(tmp_path, "a100_sxm4_80gb_x2.csv")
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_LOCALHOST_WARNING": "0"}
    proc = subprocess.run(
        [tool("ansible"), "localhost", "-i", "localhost,", "-c", "local", "-m", "gpu_facts",
         "-e", f"ansible_python_interpreter={sys.executable}",
         "-a", f"nvidia_smi={smi} pci_root={tmp_path}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "count: 2" in proc.stdout
    assert "NVIDIA A100-SXM4-80GB" in proc.stdout
