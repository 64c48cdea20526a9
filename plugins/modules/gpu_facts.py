#!/usr/bin/python
"""Ansible module ``gpu_facts``: NVIDIA GPUs of a host as facts (see DOCUMENTATION)."""

# ruff: noqa: E402  (Ansible reads DOCUMENTATION, EXAMPLES and RETURN before the imports)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: gpu_facts
short_description: Gather NVIDIA GPU facts from nvidia-smi and the PCI bus
description:
  - Runs C(nvidia-smi --query-gpu=... --format=csv,noheader,nounits) and returns the GPUs as the
    fact C(fetchml_gpus) (count, models, memory, driver version, UUIDs).
  - Also lists NVIDIA display and 3D controllers found on the PCI bus (C(/sys/bus/pci/devices)), so a
    play can tell a GPU host before its driver is installed.
  - A host without C(nvidia-smi), or where it reports "No devices were found", has 0 GPUs; that is a
    normal answer, not a failure.
  - The CSV parser is the agent's own (C(fetchml_agent/gpus.py)), shipped as module_utils.
version_added: "0.1.0"
author: FetchML
options:
  nvidia_smi:
    description: Name or path of the C(nvidia-smi) executable.
    type: str
    default: nvidia-smi
  pci_root:
    description: Directory holding the PCI devices (for tests and chroots).
    type: path
    default: /sys/bus/pci/devices
attributes:
  check_mode:
    support: full
notes:
  - C(nvidia-smi) present but failing for another reason than "no devices" (driver not loaded,
    version mismatch after an upgrade) fails the module with its message; a reboot usually fixes it.
"""

EXAMPLES = r"""
- name: Gather GPU facts.
  gpu_facts:

- name: Show the GPUs.
  ansible.builtin.debug:
    msg: "{{ fetchml_gpus.count }} x {{ fetchml_gpus.models | join(', ') }}"
"""

RETURN = r"""
ansible_facts:
  description: Facts to add to ansible_facts.
  returned: always
  type: complex
  contains:
    fetchml_gpus:
      description: The NVIDIA GPUs of the host.
      returned: always
      type: complex
      contains:
        count:
          description: Number of GPUs nvidia-smi reports (0 without nvidia-smi).
          type: int
          sample: 2
        models:
          description: Distinct model names, sorted.
          type: list
          elements: str
          sample: ["NVIDIA A100-SXM4-80GB"]
        memory_mib:
          description: Memory of each GPU in MiB, in index order (null where nvidia-smi says [N/A]).
          type: list
          elements: int
          sample: [81920, 81920]
        memory_mib_total:
          description: Sum of the known memory sizes in MiB.
          type: int
          sample: 163840
        driver_version:
          description: The driver version, or null without GPUs.
          type: str
          sample: "535.129.03"
        uuids:
          description: GPU UUIDs in index order (what the Nomad device plugin calls instance IDs).
          type: list
          elements: str
        gpus:
          description: One entry per GPU with index, uuid, name, memory_mib, driver_version, pci_bus_id.
          type: list
          elements: dict
        pci_devices:
          description: NVIDIA display/3D controllers on the PCI bus, with address and device id.
          type: list
          elements: dict
          sample: [{"address": "0000:07:00.0", "device_id": "0x20b2"}]
        nvidia_smi:
          description: Path of the nvidia-smi that answered, or null when it is not installed.
          type: str
"""

import os

from ansible.module_utils.basic import AnsibleModule

# The shared code ships as module_utils: found by ansible.cfg's module_utils path in this repository,
# inside the collection when the module runs as fetchml.platform.gpu_facts (both imports are optional to
# Ansible's module packer, which takes whichever it finds).
try:
    from ansible.module_utils.fetchml_gpus import nvidia_smi_command, parse_nvidia_smi_csv
except ImportError:
    from ansible_collections.fetchml.platform.plugins.module_utils.fetchml_gpus import (
        nvidia_smi_command,
        parse_nvidia_smi_csv,
    )

__all__ = ["gpu_summary", "main", "nvidia_pci_devices"]

_NVIDIA_VENDOR = "0x10de"
# PCI class 0x0300 (VGA controller) and 0x0302 (3D controller): what datacenter GPUs report.
_GPU_CLASSES = ("0x0300", "0x0302")
# nvidia-smi exits 6 with "No devices were found" on a host with the driver but no GPU.
_NO_DEVICES_RC = 6


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return ""


def nvidia_pci_devices(pci_root: str) -> list[dict[str, str]]:
    """NVIDIA display/3D controllers under ``pci_root`` (``/sys/bus/pci/devices``), sorted by address."""
    try:
        entries = sorted(os.listdir(pci_root))
    except OSError:
        return []
    found = []
    for address in entries:
        base = os.path.join(pci_root, address)
        if _read(os.path.join(base, "vendor")) != _NVIDIA_VENDOR:
            continue
        if _read(os.path.join(base, "class"))[:6] not in _GPU_CLASSES:
            continue
        found.append({"address": address, "device_id": _read(os.path.join(base, "device"))})
    return found


def gpu_summary(gpus: list[dict], pci_devices: list[dict], nvidia_smi: str | None) -> dict:
    """The ``fetchml_gpus`` fact from parsed nvidia-smi rows and PCI devices."""
    gpus = sorted(gpus, key=lambda g: g["index"])
    memory = [g["memory_mib"] for g in gpus]
    drivers = sorted({g["driver_version"] for g in gpus if g["driver_version"]})
    return {
        "count": len(gpus),
        "models": sorted({g["name"] for g in gpus}),
        "memory_mib": memory,
        "memory_mib_total": sum(m for m in memory if m is not None),
        "driver_version": drivers[0] if drivers else None,
        "uuids": [g["uuid"] for g in gpus],
        "gpus": gpus,
        "pci_devices": pci_devices,
        "nvidia_smi": nvidia_smi,
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            nvidia_smi=dict(type="str", default="nvidia-smi"),
            pci_root=dict(type="path", default="/sys/bus/pci/devices"),
        ),
        supports_check_mode=True,
    )
    pci = nvidia_pci_devices(module.params["pci_root"])
    binary = module.params["nvidia_smi"]
    path = binary if os.path.isabs(binary) and os.access(binary, os.X_OK) else module.get_bin_path(binary)
    gpus: list[dict] = []
    if path:
        # Reading GPUs changes nothing, so it runs in check mode too.
        rc, out, err = module.run_command(
            nvidia_smi_command(path), environ_update={"LC_ALL": "C"}, check_rc=False
        )
        if rc == _NO_DEVICES_RC or (rc != 0 and "No devices were found" in out + err):
            gpus = []
        elif rc != 0:
            module.fail_json(
                msg=f"{path} failed (exit {rc}): {(err or out).strip()}. The NVIDIA driver may not be "
                "loaded: check `dmesg | grep -i nvrm`, or reboot after a driver install.",
                rc=rc,
            )
        else:
            try:
                gpus = parse_nvidia_smi_csv(out)
            except ValueError as exc:
                module.fail_json(msg=f"cannot read the output of {path}: {exc}")
    module.exit_json(changed=False, ansible_facts={"fetchml_gpus": gpu_summary(gpus, pci, path)})


if __name__ == "__main__":
    main()
