"""NVIDIA GPUs as seen by ``nvidia-smi``: the query, and a parser of its CSV.

Pure standard library and no imports from the rest of the package: the Ansible ``gpu_facts``
module ships this very file to remote hosts (``plugins/module_utils/fetchml_gpus.py`` links here).
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from typing import Any

__all__ = ["QUERY_FIELDS", "USE_FIELDS", "detect_gpus", "gpu_use", "nvidia_smi_command", "parse_nvidia_smi_csv",
           "parse_use_csv"]

QUERY_FIELDS = ("index", "uuid", "name", "memory.total", "driver_version", "pci.bus_id")
#: What the agent samples every interval (the usage history, /metrics).
USE_FIELDS = ("index", "utilization.gpu", "memory.used")


def nvidia_smi_command(binary: str = "nvidia-smi") -> list[str]:
    return [binary, "--query-gpu=" + ",".join(QUERY_FIELDS), "--format=csv,noheader,nounits"]


def _memory_mib(raw: str) -> int | None:
    raw = raw.strip()
    for suffix in (" MiB", "MiB"):
        if raw.endswith(suffix):
            raw = raw[: -len(suffix)]
    try:
        return int(float(raw))
    except ValueError:
        return None  # "[N/A]" on some virtual GPUs


def parse_nvidia_smi_csv(text: str) -> list[dict[str, Any]]:
    """Parse ``nvidia-smi --query-gpu=<QUERY_FIELDS> --format=csv[,noheader][,nounits]``.

    A header line, if present, is skipped. Returns one dict per GPU: index, uuid, name,
    memory_mib, driver_version, pci_bus_id. Raises ValueError on a line with the wrong number of
    fields.
    """
    gpus: list[dict[str, Any]] = []
    for row in csv.reader(io.StringIO(text), skipinitialspace=True):
        if not row or not "".join(row).strip():
            continue
        if row[0].strip().lower() == "index":
            continue
        if len(row) != len(QUERY_FIELDS):
            raise ValueError(f"nvidia-smi line has {len(row)} fields, expected {len(QUERY_FIELDS)}: {row!r}")
        index, uuid, name, memory, driver, bus = (c.strip() for c in row)
        gpus.append(
            {
                "index": int(index),
                "uuid": uuid,
                "name": name,
                "memory_mib": _memory_mib(memory),
                "driver_version": driver,
                "pci_bus_id": bus,
            }
        )
    return gpus


def detect_gpus(binary: str = "nvidia-smi", timeout: float = 10.0) -> list[dict[str, Any]]:
    """GPUs on this host; an empty list when ``nvidia-smi`` is absent or finds no device."""
    path = shutil.which(binary)
    if path is None:
        return []
    try:
        proc = subprocess.run(
            nvidia_smi_command(path), capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if proc.returncode != 0:
        return []
    return parse_nvidia_smi_csv(proc.stdout)


def _number(raw: str) -> float | None:
    try:
        return float(raw.strip().split()[0])
    except (ValueError, IndexError):
        return None  # "[N/A]", "[Not Supported]"


def parse_use_csv(text: str) -> list[dict[str, Any]]:
    """Parse ``nvidia-smi --query-gpu=<USE_FIELDS> --format=csv,noheader,nounits``: one dict per
    GPU with index, utilization_percent and memory_used_mib (``None`` where not reported)."""
    out: list[dict[str, Any]] = []
    for row in csv.reader(io.StringIO(text), skipinitialspace=True):
        if len(row) != len(USE_FIELDS) or not row[0].strip().isdigit():
            continue
        out.append({"index": int(row[0]), "utilization_percent": _number(row[1]), "memory_used_mib": _number(row[2])})
    return out


def gpu_use(binary: str = "nvidia-smi", timeout: float = 5.0) -> list[dict[str, Any]]:
    """Utilization and memory in use of this host's GPUs now; empty without ``nvidia-smi``."""
    path = shutil.which(binary)
    if path is None:
        return []
    try:
        proc = subprocess.run([path, "--query-gpu=" + ",".join(USE_FIELDS), "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return parse_use_csv(proc.stdout) if proc.returncode == 0 else []
