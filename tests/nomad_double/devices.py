"""NVIDIA GPUs as Nomad sees them: the device plugin's fingerprint and the scheduler's device checks.

**Fingerprint**, as hashicorp/nomad-device-nvidia builds it (``fingerprint.go``, ``nvml/client.go``,
``nvml/driver_linux.go``):

* one device group per NVML device name, vendor ``nvidia``, type ``gpu``; its instances are the
  devices' UUIDs, sorted, all healthy (the plugin has no health check), each with its PCI bus id
  as NVML gives it: the 16-character id padded to 32 bytes with NUL characters (``buildID``);
* a GPU with MIG enabled is not fingerprinted itself; each of its MIG devices is, in the group
  ``"<model> MIG <profile>"`` (NVML's name of a MIG device), with a ``MIG-<uuid>`` id and the MIG
  device's own memory; power, bar1, clocks, PCI bandwidth and bus id are read from its parent;
* group attributes: ``memory`` (MiB), ``power`` (W), ``bar1`` (MiB), ``cores_clock`` and
  ``memory_clock`` (MHz), ``pci_bandwidth`` (MB/s), ``display_state`` and ``persistence_mode``
  (NVML enable states printed with ``%v``: ``"0"``/``"1"``), and ``driver_version``;
* the plugin reports no statistics for MIG devices (``GetStatsData`` skips them).

**Scheduling** (hashicorp/nomad ``scheduler/feasible/feasible.go`` DeviceChecker,
``scheduler/feasible/device.go`` createOffer, ``plugins/shared/structs/attribute.go``): a request
named ``<type>``, ``<vendor>/<type>`` or ``<vendor>/<type>/<model>`` matches groups on those
parts, then on its constraints over ``${device.model|vendor|type|ids|attr.<name>}``, compared as
Nomad's typed attributes (units convert; a number with a unit never compares with one without).
A node whose matching groups hold fewer healthy instances than asked (counted across groups) is
filtered as ``missing devices`` (ConstraintFiltered); one whose matching instances are all taken
is exhausted as ``devices: no devices match request`` (DimensionExhausted); an assignment takes
its instances from one group.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from packaging.version import InvalidVersion, Version

__all__ = [
    "A100_40GB",
    "H100",
    "MIG_MEMORY_MIB",
    "DoubleGPU",
    "assign",
    "check",
    "fingerprint",
    "has_devices",
]

DRIVER_VERSION = "550.54.15"

# MiB of a MIG device by (GPU model, profile): ``nvidia-smi mig -lgip`` as published for an H100
# 80GB HBM3 (GiB with two decimals: 9.75, 19.62, 39.50, 79.25), and NVML's totals for an
# A100-SXM4-40GB's 1g.5gb and 2g.10gb devices.
MIG_MEMORY_MIB = {
    ("NVIDIA H100 80GB HBM3", "1g.10gb"): 9984,
    ("NVIDIA H100 80GB HBM3", "1g.20gb"): 20096,
    ("NVIDIA H100 80GB HBM3", "2g.20gb"): 20096,
    ("NVIDIA H100 80GB HBM3", "3g.40gb"): 40448,
    ("NVIDIA H100 80GB HBM3", "4g.40gb"): 40448,
    ("NVIDIA H100 80GB HBM3", "7g.80gb"): 81152,
    ("NVIDIA A100-SXM4-40GB", "1g.5gb"): 4864,
    ("NVIDIA A100-SXM4-40GB", "2g.10gb"): 9856,
}


@dataclass(frozen=True)
class DoubleGPU:
    """One physical GPU. ``mig``: the profiles of its MIG devices when MIG is enabled (e.g.
    ``("1g.10gb",) * 7``). The model and memory are what ``nvidia-smi`` prints; the power, clocks
    and bar1 are representative readings of an idle card, not a recording."""

    model: str = "NVIDIA H100 80GB HBM3"
    memory_mib: int = 81559
    mig: tuple[str, ...] = ()
    bar1_mib: int = 131072
    power_w: int = 72
    cores_clock_mhz: int = 345
    memory_clock_mhz: int = 2619
    pci_bandwidth_mbps: int = 49152  # the plugin's figure for PCIe gen 5 x16


H100 = DoubleGPU()
A100_40GB = DoubleGPU(
    "NVIDIA A100-SXM4-40GB",
    40960,
    bar1_mib=65536,
    power_w=55,
    cores_clock_mhz=210,
    memory_clock_mhz=1215,
    pci_bandwidth_mbps=32768,
)


def fingerprint(gpus: Sequence[DoubleGPU]) -> list[dict[str, Any]] | None:
    """A node's ``NodeResources.Devices`` for these GPUs (``None`` without any, as Nomad sends)."""
    groups: dict[str, dict[str, Any]] = {}
    for i, gpu in enumerate(gpus):
        bus = f"00000000:{0x17 + i:02X}:00.0".ljust(32, "\0")
        devices = [
            (f"{gpu.model} MIG {p}", f"MIG-{uuid.uuid4()}", MIG_MEMORY_MIB[(gpu.model, p)]) for p in gpu.mig
        ]
        for name, dev_id, memory in devices or [(gpu.model, f"GPU-{uuid.uuid4()}", gpu.memory_mib)]:
            attrs = {
                "memory": {"Int": memory, "Unit": "MiB"},
                "power": {"Int": gpu.power_w, "Unit": "W"},
                "bar1": {"Int": gpu.bar1_mib, "Unit": "MiB"},
                "cores_clock": {"Int": gpu.cores_clock_mhz, "Unit": "MHz"},
                "memory_clock": {"Int": gpu.memory_clock_mhz, "Unit": "MHz"},
                "pci_bandwidth": {"Int": gpu.pci_bandwidth_mbps, "Unit": "MB/s"},
                "display_state": {"String": "0"},
                "persistence_mode": {"String": "1"},
                "driver_version": {"String": DRIVER_VERSION},
            }
            group = groups.setdefault(
                name, {"Vendor": "nvidia", "Type": "gpu", "Name": name, "Instances": [], "Attributes": attrs}
            )
            group["Instances"].append(
                {"ID": dev_id, "Healthy": True, "HealthDescription": "", "Locality": {"PciBusID": bus}}
            )
    for group in groups.values():
        group["Instances"].sort(key=lambda d: d["ID"])
    return list(groups.values()) or None


# -- Nomad's typed attributes (plugins/shared/structs/attribute.go, units.go) ----------------------

_UNITS: dict[str, tuple[str, float]] = {
    **{u: ("B", 1024.0**i) for i, u in enumerate(("KiB", "MiB", "GiB", "TiB", "PiB", "EiB"), 1)},
    **{u: ("B", 1000.0**i) for i, u in enumerate(("kB", "MB", "GB", "TB", "PB", "EB"), 1)},
    **{u + "/s": ("B/s", 1024.0**i) for i, u in enumerate(("KiB", "MiB", "GiB", "TiB", "PiB", "EiB"), 1)},
    **{u + "/s": ("B/s", 1000.0**i) for i, u in enumerate(("kB", "MB", "GB", "TB", "PB", "EB"), 1)},
    "KB": ("B", 1000.0),
    "KB/s": ("B/s", 1000.0),
    "MHz": ("Hz", 1e6),
    "GHz": ("Hz", 1e9),
    **{u: ("W", 1000.0**i) for i, u in enumerate(("mW", "W", "kW", "MW", "GW"))},
}
_BY_LENGTH = sorted(_UNITS, key=len, reverse=True)


def parse_attribute(text: str) -> dict[str, Any]:
    """``ParseAttribute``: a number with an optional known unit, a bool, or else a string."""
    unit, numeric = "", text
    if text and text[-1].isalpha():
        unit = next((u for u in _BY_LENGTH if text.endswith(u)), "")
        numeric = text[: len(text) - len(unit)].strip() if unit else text
    for kind, cast in (("Int", int), ("Float", float)):
        try:
            return {kind: cast(numeric), **({"Unit": unit} if unit else {})}
        except ValueError:
            pass
    if text in ("1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False"):
        return {"Bool": text in ("1", "t", "T", "TRUE", "true", "True")}
    return {"String": text}


def _compare(a: dict[str, Any] | None, b: dict[str, Any] | None) -> int | None:
    """``Attribute.Compare``: -1, 0 or 1, or ``None`` when the two do not compare."""
    if a is None or b is None:
        return None
    ua, ub = _UNITS.get(a.get("Unit") or ""), _UNITS.get(b.get("Unit") or "")
    if (ua is None) != (ub is None) or (ua and ub and ua[0] != ub[0]):
        return None
    for kind in ("Bool", "String"):
        if kind in a or kind in b:
            if kind not in a or kind not in b:
                return None
            return (
                0
                if a[kind] == b[kind]
                else (1 if kind == "Bool" else (a[kind] > b[kind]) - (a[kind] < b[kind]))
            )
    x = (a.get("Int", a.get("Float")) or 0) * (ua[1] if ua else 1)
    y = (b.get("Int", b.get("Float")) or 0) * (ub[1] if ub else 1)
    return (x > y) - (x < y)


def _version_ok(value: str, constraint: str) -> bool:
    ops = {"=": "__eq__", "!=": "__ne__", ">": "__gt__", "<": "__lt__", ">=": "__ge__", "<=": "__le__"}
    try:
        have = Version(value)
        for part in constraint.split(","):
            m = re.fullmatch(r"\s*(>=|<=|!=|=|>|<)?\s*(\S+)\s*", part)
            if not m or not getattr(have, ops[m.group(1) or "="])(Version(m.group(2))):
                return False
    except InvalidVersion:
        return False
    return True


def check(op: str, left: dict[str, Any] | None, right: dict[str, Any] | None) -> bool:
    """``checkAttributeConstraint`` for two resolved attributes (``None``: not found)."""
    if op in ("distinct_hosts", "distinct_property"):
        return True
    if op in ("is_set", "is_not_set"):
        return (left is not None) == (op == "is_set")
    if op in ("!=", "not") and (left is None) != (right is None):
        return True
    if left is None or right is None:
        return False
    if op in ("regexp", "set_contains", "set_contains_all", "set_contains_any", "version", "semver"):
        ls, rs = left.get("String"), right.get("String")
        if ls is None or rs is None:
            return False
        if op == "regexp":
            return re.search(rs, ls) is not None
        if op in ("version", "semver"):
            return _version_ok(ls, rs)
        have, want = {s.strip() for s in ls.split(",")}, {s.strip() for s in rs.split(",")}
        return bool(have & want) if op == "set_contains_any" else want <= have
    v = _compare(left, right)
    if v is None:
        return False
    return {
        "=": v == 0,
        "==": v == 0,
        "is": v == 0,
        "!=": v != 0,
        "not": v != 0,
        "<": v < 0,
        "<=": v <= 0,
        ">": v > 0,
        ">=": v >= 0,
    }.get(op, False)


def _resolve(target: str, group: dict[str, Any]) -> dict[str, Any] | None:
    """``resolveDeviceTarget``: a ``${device...}`` reference or a literal."""
    if not target.startswith("${"):
        return parse_attribute(target)
    fixed = {
        "${device.ids}": ",".join(i["ID"] for i in group["Instances"]),
        "${device.model}": group["Name"],
        "${device.vendor}": group["Vendor"],
        "${device.type}": group["Type"],
    }
    if target in fixed:
        return {"String": fixed[target]}
    if target.startswith("${device.attr."):
        return (group.get("Attributes") or {}).get(target[len("${device.attr.") : -1])
    return None


def _matches(group: dict[str, Any], req: dict[str, Any]) -> bool:
    """``nodeDeviceMatches``: the name's parts, then every constraint."""
    parts = (req.get("Name") or "").split("/", 2)
    want = dict(zip(("Type",) if len(parts) == 1 else ("Vendor", "Type", "Name"), parts, strict=False))
    if any(v and group[k] != v for k, v in want.items()):
        return False
    return all(
        check(
            c.get("Operand") or "=",
            _resolve(c.get("LTarget") or "", group),
            _resolve(c.get("RTarget") or "", group),
        )
        for c in req.get("Constraints") or []
    )


def _count(req: dict[str, Any]) -> int:
    return int(req["Count"]) if req.get("Count") is not None else 1


def has_devices(groups: list[dict[str, Any]] | None, requests: list[dict[str, Any]]) -> bool:
    """``DeviceChecker.hasDevices``: enough healthy instances (busy or not) for every request."""
    if not requests:
        return True
    left = {i: sum(d["Healthy"] for d in g["Instances"]) for i, g in enumerate(groups or [])}
    for req in requests:
        want = _count(req)
        for i, group in enumerate(groups or []):
            if left[i] and _matches(group, req):
                took = min(want, left[i])
                left[i] -= took
                want -= took
                if want == 0:
                    break
        if want:
            return False
    return True


def assign(groups: list[dict[str, Any]] | None, req: dict[str, Any], taken: set[str]) -> dict[str, Any] | str:
    """``createOffer``: an AllocatedDeviceResource from one group, or the reason there is none."""
    if not groups:
        return "no devices available"
    if _count(req) == 0:
        return "invalid request of zero devices"
    best: tuple[float, dict[str, Any]] | None = None
    for group in groups:
        if not _matches(group, req):
            continue
        free = [d["ID"] for d in group["Instances"] if d["Healthy"] and d["ID"] not in taken]
        for c in req.get("Constraints") or []:  # deviceIDMatchesConstraint
            for ids, other in ((c.get("LTarget"), c.get("RTarget")), (c.get("RTarget"), c.get("LTarget"))):
                if ids == "${device.ids}":
                    target = _resolve(other or "", group)
                    free = [d for d in free if check(c.get("Operand") or "=", target, {"String": d})]
                    break
        if len(free) < _count(req):
            continue
        weights = [a.get("Weight") or 0 for a in req.get("Affinities") or []]
        score = sum(
            a.get("Weight") or 0
            for a in req.get("Affinities") or []
            if check(
                a.get("Operand") or "=",
                _resolve(a.get("LTarget") or "", group),
                _resolve(a.get("RTarget") or "", group),
            )
        ) / (sum(abs(w) for w in weights) or 1)
        if best is None or score >= best[0]:
            grant = {k: group[k] for k in ("Vendor", "Type", "Name")}
            best = (score, {**grant, "DeviceIDs": free[: _count(req)]})
    return best[1] if best else "no devices match request"
