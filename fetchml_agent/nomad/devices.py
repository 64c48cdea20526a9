"""GPUs as Nomad's NVIDIA device plugin fingerprints them: what a ``--gpu-type`` means, which GPUs
are free on which node, and which constraint of a device request no node satisfies.

Standard library only, and nothing else of the package: the ``nomad_nodes`` inventory plugin
imports this file too (``plugins/inventory/nomad_nodes.py``).

**Device groups.** A client node lists its GPUs in ``NodeResources.Devices``: one group per
model (``Vendor`` ``nvidia``, ``Type`` ``gpu``, ``Name`` the NVML name, e.g. ``NVIDIA H100 80GB
HBM3``), its ``Instances`` the GPUs' UUIDs with a health flag, its ``Attributes`` typed values
(``memory`` in MiB, ``power`` in W, ...). A GPU in MIG mode is not listed itself; each of its MIG
devices is, in the group ``"<model> MIG <profile>"`` (``NVIDIA H100 80GB HBM3 MIG 3g.40gb``) with
its own memory (hashicorp/nomad-device-nvidia ``fingerprint.go``, ``nvml/``).

**A GPU type** (:func:`gpu_type_constraint`) is what a user names: a whole GPU model
(``H100``, ``a100-sxm4-80gb``, the full name), a MIG profile (``3g.40gb``, ``1g.10gb+me``) or both
(``H100:3g.40gb``). It becomes one constraint of the ``nvidia/gpu`` device request on
``${device.model}``: the group names that match it among the ones the cluster fingerprints
(``=`` for one, ``set_contains_any`` for several, so that a model never matches its own MIG
devices); without a fingerprint to look at, a full model name is used as it is and a MIG
profile as a ``regexp`` on the name's end.

**Attributes and constraints** follow Nomad (``plugins/shared/structs/attribute.go``,
``units.go``; ``scheduler/feasible/feasible.go`` ``checkAttributeConstraint``): a literal is a
number with an optional unit, a bool, or a string; numbers with units compare after conversion
(``40448 MiB`` is 39.5 GiB, below ``40 GiB``); a number with a unit never compares with one
without, and a failed comparison fails the constraint.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "GpuGroup",
    "check",
    "device_groups",
    "explain_unplaceable",
    "free_gpus",
    "gpu_type_constraint",
    "is_mig_profile",
    "parse_attribute",
    "satisfies",
    "used_device_ids",
]

GpuGroup = dict[str, Any]  # one fingerprinted device group (NodeResources.Devices[i])

_MIG_PROFILE = re.compile(r"^\d+g\.\d+gb(\+[a-z0-9]+)?$", re.IGNORECASE)
_TERMINAL_CLIENT = frozenset({"complete", "failed", "lost"})
_TYPE_TEXT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._+:-]{0,127}$")

# -- Nomad's typed attributes ---------------------------------------------------------------------

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
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def parse_attribute(text: str) -> dict[str, Any]:
    """A literal as Nomad reads it (``ParseAttribute``): ``{"Int"|"Float": n, "Unit": u}``,
    ``{"Bool": b}`` or ``{"String": s}``."""
    unit, numeric = "", text
    if text and text[-1].isalpha():
        unit = next((u for u in _BY_LENGTH if text.endswith(u)), "")
        numeric = text[: len(text) - len(unit)].strip() if unit else text
    for kind, cast in (("Int", int), ("Float", float)):
        try:
            return {kind: cast(numeric), **({"Unit": unit} if unit else {})}
        except ValueError:
            pass
    if text in _TRUE or text in _FALSE:
        return {"Bool": text in _TRUE}
    return {"String": text}


def _compare(a: Mapping[str, Any], b: Mapping[str, Any]) -> int | None:
    """``Attribute.Compare``: -1, 0 or 1, or ``None`` when the two cannot be compared."""
    ua, ub = _UNITS.get(a.get("Unit") or ""), _UNITS.get(b.get("Unit") or "")
    if (ua is None) != (ub is None) or (ua and ub and ua[0] != ub[0]):
        return None
    for kind in ("Bool", "String"):
        if kind in a or kind in b:
            if kind not in a or kind not in b:
                return None
            if a[kind] == b[kind]:
                return 0
            return 1 if kind == "Bool" else (a[kind] > b[kind]) - (a[kind] < b[kind])
    x = (a.get("Int", a.get("Float")) or 0) * (ua[1] if ua else 1)
    y = (b.get("Int", b.get("Float")) or 0) * (ub[1] if ub else 1)
    return (x > y) - (x < y)


def check(operand: str, left: Mapping[str, Any] | None, right: Mapping[str, Any] | None) -> bool:
    """Whether ``left OPERAND right`` holds for two resolved attributes (``None``: not found)."""
    if operand in ("distinct_hosts", "distinct_property"):
        return True
    if operand in ("is_set", "is_not_set"):
        return (left is not None) == (operand == "is_set")
    if operand in ("!=", "not") and (left is None) != (right is None):
        return True
    if left is None or right is None:
        return False
    if operand in ("regexp", "set_contains", "set_contains_all", "set_contains_any", "version", "semver"):
        ls, rs = left.get("String"), right.get("String")
        if ls is None or rs is None:
            return False
        if operand == "regexp":
            try:
                return re.search(rs, ls) is not None
            except re.error:
                return False
        if operand in ("version", "semver"):
            return False  # not used in device requests here
        have = {s.strip() for s in ls.split(",")}
        want = {s.strip() for s in rs.split(",")}
        return bool(have & want) if operand == "set_contains_any" else want <= have
    v = _compare(left, right)
    if v is None:
        return False
    return {"=": v == 0, "==": v == 0, "is": v == 0, "!=": v != 0, "not": v != 0,
            "<": v < 0, "<=": v <= 0, ">": v > 0, ">=": v >= 0}.get(operand, False)


def _resolve(target: str, group: Mapping[str, Any]) -> dict[str, Any] | None:
    """A constraint side: a ``${device...}`` reference resolved on ``group``, or a literal."""
    if not target.startswith("${"):
        return parse_attribute(target)
    fixed = {
        "${device.ids}": ",".join(str(i.get("ID")) for i in group.get("Instances") or []),
        "${device.model}": group.get("Name"),
        "${device.vendor}": group.get("Vendor"),
        "${device.type}": group.get("Type"),
    }
    if target in fixed:
        return {"String": fixed[target]} if fixed[target] is not None else None
    if target.startswith("${device.attr."):
        found = (group.get("Attributes") or {}).get(target[len("${device.attr."):-1])
        return dict(found) if found is not None else None
    return None


def satisfies(group: Mapping[str, Any], constraint: Mapping[str, Any]) -> bool:
    """Whether the device group meets one constraint (``{LTarget, Operand, RTarget}``)."""
    return check(constraint.get("Operand") or "=", _resolve(str(constraint.get("LTarget") or ""), group),
                 _resolve(str(constraint.get("RTarget") or ""), group))


# -- device groups, free GPUs -------------------------------------------------------------------


def device_groups(node: Mapping[str, Any]) -> list[GpuGroup]:
    """The node's NVIDIA GPU groups (``NodeResources.Devices`` of vendor nvidia, type gpu)."""
    devices = (node.get("NodeResources") or {}).get("Devices") or []
    return [d for d in devices if d.get("Vendor") == "nvidia" and d.get("Type") == "gpu"]


def _alloc_terminal(alloc: Mapping[str, Any]) -> bool:
    """``Allocation.TerminalStatus``: the scheduler no longer counts its resources."""
    return alloc.get("DesiredStatus") in ("stop", "evict") or alloc.get("ClientStatus") in _TERMINAL_CLIENT


def used_device_ids(allocs: Iterable[Mapping[str, Any]]) -> set[str]:
    """Device instance IDs held by allocations that are not terminal (their ``AllocatedResources``)."""
    used: set[str] = set()
    for alloc in allocs:
        if _alloc_terminal(alloc):
            continue
        for task in ((alloc.get("AllocatedResources") or {}).get("Tasks") or {}).values():
            for dev in (task or {}).get("Devices") or []:
                used.update(str(i) for i in dev.get("DeviceIDs") or [])
    return used


def free_gpus(nodes: Iterable[Mapping[str, Any]], allocs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per node and GPU type: ``{node, node_id, status, eligible, type, memory_mib, total,
    healthy, free}``; ``free`` counts healthy instances no live allocation holds."""
    by_node: dict[str, list[Mapping[str, Any]]] = {}
    for alloc in allocs:
        by_node.setdefault(str(alloc.get("NodeID") or ""), []).append(alloc)
    rows = []
    for node in nodes:
        used = used_device_ids(by_node.get(str(node.get("ID")), []))
        for group in device_groups(node):
            instances = group.get("Instances") or []
            healthy = [i for i in instances if i.get("Healthy")]
            memory = (group.get("Attributes") or {}).get("memory") or {}
            rows.append({
                "node": node.get("Name") or node.get("ID"),
                "node_id": node.get("ID"),
                "status": node.get("Status"),
                "eligible": node.get("SchedulingEligibility", "eligible") == "eligible",
                "type": group.get("Name"),
                "memory_mib": memory.get("Int") if memory.get("Unit", "MiB") == "MiB" else None,
                "total": len(instances),
                "healthy": len(healthy),
                "free": sum(1 for i in healthy if str(i.get("ID")) not in used),
            })
    return sorted(rows, key=lambda r: (str(r["node"]), str(r["type"])))


# -- --gpu-type ---------------------------------------------------------------------------------


def is_mig_profile(text: str) -> bool:
    """``3g.40gb``, ``1g.10gb+me``: a MIG profile as ``nvidia-smi mig -lgip`` names it."""
    return bool(_MIG_PROFILE.match(text.strip()))


def _split_type(gpu_type: str) -> tuple[str, str]:
    """``(model part, MIG profile)`` of a GPU type (either may be empty)."""
    text = " ".join(gpu_type.split())
    for sep in (":", " mig ", " MIG ", " "):
        model, found, profile = text.rpartition(sep)
        if found and model and is_mig_profile(profile):
            return model.strip(), profile.lower()
    if is_mig_profile(text):
        return "", text.lower()
    return text, ""


def _matches(name: str, model: str, profile: str) -> bool:
    base, mig, own_profile = name.partition(" MIG ")
    if profile:
        if not mig or own_profile.lower() != profile:
            return False
    elif mig:
        return False  # a model never means its MIG devices
    if not model:
        return True
    want = model.lower()
    have = base.lower()
    return want == have or want == name.lower() or re.search(
        r"(^|[\s-])" + re.escape(want) + r"($|[\s-])", have) is not None


def gpu_type_constraint(gpu_type: str, known: Iterable[str] | None = None) -> tuple[dict[str, str], list[str]]:
    """The ``${device.model}`` constraint a ``--gpu-type`` becomes, and the fingerprinted group
    names it matched.

    ``known``: the device group names the cluster fingerprints (``None``: not known, e.g. a token
    without ``node:read``). Matching is case-insensitive: a model part matches a name equal to it
    or containing it as a word (``H100`` matches ``NVIDIA H100 80GB HBM3`` and ``NVIDIA H100
    PCIe``, never their MIG devices); a MIG profile matches the MIG groups of that profile. With
    ``known`` given and nothing matching, the constraint still names the type as given (Nomad then
    explains that no node has it) and the list is empty. Raises ``ValueError`` for text that
    cannot be a GPU type.
    """
    text = " ".join(str(gpu_type).split())
    if not _TYPE_TEXT.match(text):
        raise ValueError(f"invalid GPU type {gpu_type!r}: a model such as H100 or A100-SXM4-80GB, or a MIG "
                         "profile such as 3g.40gb (optionally MODEL:PROFILE)")
    model, profile = _split_type(text)
    names = sorted({n for n in known or () if _matches(n, model, profile)})
    if len(names) == 1:
        return {"LTarget": "${device.model}", "Operand": "=", "RTarget": names[0]}, names
    if names:
        return {"LTarget": "${device.model}", "Operand": "set_contains_any", "RTarget": ",".join(names)}, names
    if profile:
        pattern = (re.escape(model) + r".* " if model else " ") + "MIG " + re.escape(profile) + "$"
        return {"LTarget": "${device.model}", "Operand": "regexp", "RTarget": "(?i)" + pattern}, []
    return {"LTarget": "${device.model}", "Operand": "=", "RTarget": text}, []


def _constraint_text(c: Mapping[str, Any]) -> str:
    right = str(c.get("RTarget") or "")
    if c.get("Operand") == "set_contains_any":
        return f"{c.get('LTarget')} in ({', '.join(right.split(','))})"
    return f"{c.get('LTarget')} {c.get('Operand')} {right!r}".replace("'", '"')


def explain_unplaceable(
    nodes: Sequence[Mapping[str, Any]], request: Mapping[str, Any], allocs: Iterable[Mapping[str, Any]] = (),
) -> str:
    """Why no node can give a device request (``{Name, Count, Constraints}``) its GPUs: the
    constraint no fingerprinted GPU satisfies, the pair of constraints none satisfies together,
    too few healthy GPUs of the kind on any one node, or all of them in use. ``nodes`` are the
    candidate nodes (pool, datacenter, ready) with their ``NodeResources``; ``allocs`` the live
    allocations on them (for "in use")."""
    groups = [(n, g) for n in nodes for g in device_groups(n)]
    if not groups:
        return "no node in the job's node pool and datacenters has an NVIDIA GPU"
    constraints = list(request.get("Constraints") or [])
    count = int(request.get("Count") or 1)
    for c in constraints:
        if not any(satisfies(g, c) for _, g in groups):
            return f"no GPU in the cluster has {_constraint_text(c)} (GPU types: {_types(groups)})"
    for i, a in enumerate(constraints):
        for b in constraints[i + 1:]:
            if not any(satisfies(g, a) and satisfies(g, b) for _, g in groups):
                near = next(g for _, g in groups if satisfies(g, a))
                return (f"no GPU has both {_constraint_text(a)} and {_constraint_text(b)} "
                        f"(e.g. {near.get('Name')}: {_attrs(near, b)})")
    fitting = [(n, g) for n, g in groups if all(satisfies(g, c) for c in constraints)]
    healthy: dict[str, int] = {}
    for n, g in fitting:
        key = str(n.get("Name") or n.get("ID"))
        healthy[key] = healthy.get(key, 0) + sum(1 for i in g.get("Instances") or [] if i.get("Healthy"))
    best = max(healthy.items(), key=lambda kv: kv[1])
    if best[1] < count:
        return (f"no node has {count} healthy GPUs of that kind (most: {best[1]} on {best[0]}; "
                f"types: {', '.join(sorted({str(g.get('Name')) for _, g in fitting}))})")
    used = used_device_ids(allocs)
    free: dict[str, int] = {}
    for n, g in fitting:
        key = str(n.get("Name") or n.get("ID"))
        free[key] = free.get(key, 0) + sum(1 for i in g.get("Instances") or []
                                           if i.get("Healthy") and str(i.get("ID")) not in used)
    most = max(free.items(), key=lambda kv: kv[1])
    return (f"all matching GPUs are in use: no node has {count} free (most free: {most[1]} on {most[0]}; "
            f"types: {', '.join(sorted({str(g.get('Name')) for _, g in fitting}))})")


def _types(groups: Sequence[tuple[Mapping[str, Any], GpuGroup]]) -> str:
    return ", ".join(sorted({str(g.get("Name")) for _, g in groups}))


def _attrs(group: Mapping[str, Any], c: Mapping[str, Any]) -> str:
    target = str(c.get("LTarget") or "")
    value = _resolve(target, group)
    if value is None:
        return f"{target} is not set"
    shown = value.get("Int", value.get("Float", value.get("String", value.get("Bool"))))
    return f"{target} is {shown}{(' ' + value['Unit']) if value.get('Unit') else ''}"
