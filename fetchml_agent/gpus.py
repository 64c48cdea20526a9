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

__all__ = ["PMON_ARGS", "QUERY_FIELDS", "USE_FIELDS", "detect_gpus", "gpu_use", "nvidia_smi_command",
           "parse_nvidia_smi_csv", "parse_pmon", "parse_use_csv", "process_utilization"]

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


# -- per-process utilization: ``nvidia-smi pmon`` ----------------------------------------------

#: One sample of per-process utilization: ``nvidia-smi pmon -c 1 -s u``.
PMON_ARGS = ("pmon", "-c", "1", "-s", "u")


def parse_pmon(text: str) -> list[tuple[int, int, float | None]]:
    """Parse ``nvidia-smi pmon`` output into ``(gpu index, pid, sm %)`` rows.

    The columns are read from the header line (``# gpu pid type sm mem enc dec [jpg ofa] [fb]
    command``: drivers add columns over time, and ``-s um`` adds memory ones), so any version's
    layout parses. ``-`` is no sample: a GPU without processes has a row of dashes (skipped); a
    process the interval saw no kernel of has ``-`` for ``sm`` (``None``: idle). Raises ValueError
    when the text has no header line with ``pid`` and ``sm``.
    """
    columns: list[str] | None = None
    rows: list[tuple[int, int, float | None]] = []
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if fields[0] == "#" or fields[0].startswith("#"):
            names = [f.lower() for f in (fields[1:] if fields[0] == "#" else [fields[0][1:], *fields[1:]])]
            if "pid" in names and "sm" in names:
                columns = names
            continue
        if columns is None:
            raise ValueError("nvidia-smi pmon output without a header line naming pid and sm")
        values = dict(zip(columns, fields, strict=False))
        gpu, pid, sm = values.get("gpu", ""), values.get("pid", "-"), values.get("sm", "-")
        if not gpu.isdigit() or not pid.isdigit():
            continue  # an idle GPU's row of dashes
        try:
            util: float | None = float(sm)
        except ValueError:
            util = None
        rows.append((int(gpu), int(pid), util))
    return rows


def process_utilization(command: list[str] | None = None, timeout: float = 10.0) -> dict[int, dict[int, float]]:
    """Per-process SM utilization now, ``{pid: {gpu index: percent}}`` (processes on a GPU with no
    sample in the interval show 0). ``command``: the pmon command line (default: ``nvidia-smi``
    with :data:`PMON_ARGS`). Raises OSError when nvidia-smi is absent or fails: the caller then
    does not know, which is not the same as idle."""
    if command is None:
        path = shutil.which("nvidia-smi")
        if path is None:
            raise FileNotFoundError("nvidia-smi is not installed")
        command = [path, *PMON_ARGS]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise OSError(f"nvidia-smi pmon did not answer within {timeout:g}s") from exc
    if proc.returncode != 0:
        raise OSError(f"nvidia-smi pmon failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[-300:]}")
    try:
        rows = parse_pmon(proc.stdout)
    except ValueError as exc:
        raise OSError(str(exc)) from exc
    out: dict[int, dict[int, float]] = {}
    for gpu, pid, util in rows:
        per_gpu = out.setdefault(pid, {})
        per_gpu[gpu] = per_gpu.get(gpu, 0.0) + (util or 0.0)
    return out


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
