"""Decoding and validating Nomad JSON jobs the way a Nomad server does (a subset, written down).

Two stages, as in Nomad:

1. **Decoding** (``decode``): request bodies are matched to the Go structs of Nomad's ``api``
   package as Nomad's OpenAPI description declares them (``contract.component``). Keys match
   field names case-insensitively (Go's ``encoding/json``); a value of the wrong JSON type is
   refused with HTTP 400 and Go's message; ``time.Duration`` fields take integers (ns) only. *Stricter than Nomad:* an unknown key is refused (400,
   ``json: unknown field "X"``) where Nomad silently drops it, so a misspelt field in a template
   fails a test instead of vanishing.
2. **Validation** (``validate_job``): the server-side checks that Nomad reports as a multierror
   with HTTP 500 on register (``1 error occurred:\\n\\t* ...``) and as ``ValidationErrors`` from
   ``/v1/validate/job`` (``nomad/structs/structs.go``: ``Job.Validate`` and what it calls).
"""

from __future__ import annotations

import re
from typing import Any

from .contract import component

__all__ = [
    "DecodeError",
    "DOCKER_CONFIG_KEYS",
    "canonicalize_job",
    "decode",
    "multierror",
    "validate_job",
]


class DecodeError(Exception):
    """A body that Go's decoder (or the double's stricter decoder) refuses: HTTP 400."""


# The docker driver's task config keys (its hclspec, drivers/docker/config.go); anything else fails.
DOCKER_CONFIG_KEYS = frozenset(
    """image args command entrypoint ports network_mode volumes mount mounts privileged cap_add cap_drop
    labels shm_size work_dir runtime force_pull auth auth_soft_fail devices ulimit security_opt ipc_mode
    pid_mode uts_mode cgroupns init group_add extra_hosts dns_servers dns_search_domains dns_options
    image_pull_timeout cpu_hard_limit cpu_cfs_period memory_hard_limit oom_score_adj userns_mode hostname
    interactive tty sysctl storage_opt readonly_rootfs logging load mac_address pids_limit isolation
    volume_driver healthchecks cpuset_cpus ipv4_address ipv6_address advertise_ipv6_address
    container_exists_ok""".split()
)
# time.Duration fields of the api structs (the spec calls them int64); only Go's wording needs them.
_DURATIONS = frozenset(
    """KillTimeout ShutdownDelay StopAfterClientDisconnect MaxClientDisconnect MaxRunDuration Interval
    Delay MaxDelay Timeout Grace Splay VaultGrace Min Max Stagger MinHealthyTime HealthyDeadline
    ProgressDeadline LostAfter""".split()
)


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _go_type(schema: dict[str, Any], field: str) -> str:
    if "$ref" in schema:
        return "*api." + schema["$ref"].rsplit("/", 1)[1]
    kind = schema.get("type")
    if kind == "array":
        return "[]" + _go_type(schema.get("items") or {}, "")
    if kind == "object":
        inner = schema.get("additionalProperties")
        return "map[string]" + (_go_type(inner, "") if isinstance(inner, dict) and inner else "interface {}")
    if kind == "integer":
        return (
            "time.Duration"
            if field in _DURATIONS
            else {"uint64": "uint64", "int64": "int64"}.get(schema.get("format", ""), "int")
        )
    return {"string": "string", "boolean": "bool", "number": "float64"}.get(kind or "", "interface {}")


def decode(value: Any, schema: str | dict[str, Any], where: str = "", field: str = "") -> Any:
    """Decode ``value`` as Go's ``encoding/json`` decodes it into the api struct of Nomad's spec
    named ``schema`` (``contract.component``); returns it with keys spelt as Nomad spells them.

    Keys match case-insensitively; a value of the wrong JSON type is Go's error; *stricter than
    Nomad*, a key the struct lacks is refused (``json: unknown field``) where Nomad drops it."""
    if isinstance(schema, str):
        schema = {"$ref": f"#/components/schemas/{schema}"}
    if value is None:
        return None
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        struct = component(name)
        if "properties" not in struct:
            return decode(value, struct, where, field)
        if not isinstance(value, dict):
            raise _type_error(value, f"api.{name}", where)
        fields = struct["properties"]
        lower = {k.lower(): k for k in fields}
        out: dict[str, Any] = {}
        for key, item in value.items():
            real = lower.get(key.lower())
            if real is None:
                raise DecodeError(f'json: unknown field "{key}" (in {name})')
            out[real] = decode(item, fields[real], f"{where or name}.{real}", real)
        return out
    kind = schema.get("type")
    if kind == "array":
        if not isinstance(value, list):
            raise _type_error(value, _go_type(schema, field), where)
        return [decode(v, schema.get("items") or {}, where) for v in value]
    if kind == "object":
        if not isinstance(value, dict):
            raise _type_error(value, _go_type(schema, field), where)
        inner = schema.get("additionalProperties")
        return (
            {k: decode(v, inner, where) for k, v in value.items()}
            if isinstance(inner, dict) and inner
            else value
        )
    ok = {
        "string": isinstance(value, str),
        "boolean": isinstance(value, bool),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
    }.get(kind or "", True)
    if kind == "integer" and isinstance(value, float) and not isinstance(value, bool):
        if value.is_integer():
            return int(value)
        raise DecodeError(f"json: cannot unmarshal number {value} into Go struct field {where} of type int64")
    if not ok:
        raise _type_error(value, _go_type(schema, field), where)
    return value


def _type_error(value: Any, go_type: str, where: str) -> DecodeError:
    return DecodeError(
        f"json: cannot unmarshal {_json_kind(value)} into Go struct field {where or 'value'} of type {go_type}"
    )


def multierror(errors: list[str]) -> str:
    """Nomad's (go-multierror) rendering of several errors."""
    head = "1 error occurred:" if len(errors) == 1 else f"{len(errors)} errors occurred:"
    return head + "\n" + "".join(f"\t* {e}\n" for e in errors) + "\n"


_OPERANDS = {
    "=",
    "==",
    "is",
    "!=",
    "not",
    "<",
    "<=",
    ">",
    ">=",
    "regexp",
    "version",
    "semver",
    "set_contains",
    "set_contains_all",
    "set_contains_any",
    "distinct_hosts",
    "distinct_property",
    "is_set",
    "is_not_set",
}
_SERVICE_NAME = re.compile(r"^(?i:[a-z0-9]|[a-z0-9][a-z0-9\-]{0,61}[a-z0-9])$")


def _sub(prefix: str, errs: list[str]) -> list[str]:
    return [f"{prefix} validation failed: {multierror(errs).rstrip()}"] if errs else []


def validate_job(job: dict[str, Any]) -> list[str]:
    """The server's validation errors for a decoded, canonicalized job (empty when valid)."""
    errs: list[str] = []
    jid = job.get("ID") or ""
    if not jid:
        errs.append("Missing job ID")
    elif " " in jid:
        errs.append("Job ID contains a space")
    elif "\x00" in jid:
        errs.append("Job ID contains a null character")
    if job.get("Type") not in ("service", "batch", "system", "sysbatch"):
        errs.append(f"Invalid job type: {job.get('Type')!r}")
    if not 1 <= int(job.get("Priority") or 0) <= 100:
        errs.append("Job priority must be between [1, 100]")
    if not job.get("Datacenters"):
        errs.append("Missing job datacenters")
    for c in job.get("Constraints") or []:
        errs.extend(_constraint_errors(c))
    groups = job.get("TaskGroups") or []
    if not groups:
        errs.append("Missing job task groups")
    seen: set[str] = set()
    for i, tg in enumerate(groups):
        name = tg.get("Name") or ""
        if not name:
            errs.append(f"Job task group {i + 1} missing name")
        elif name in seen:
            errs.append(f"Job task group {i + 1} redefines '{name}' from group {i}")
        seen.add(name)
        errs.extend(_sub(f"Task group {name}", _group_errors(job, tg)))
    return errs


def _constraint_errors(c: dict[str, Any]) -> list[str]:
    op = c.get("Operand") or "="
    if op not in _OPERANDS:
        return [f"Unknown constraint type {op!r}"]
    if op == "regexp":
        try:
            re.compile(c.get("RTarget") or "")
        except re.error as exc:
            return [f"Regular expression failed to compile: {exc}"]
    return []


def _group_errors(job: dict[str, Any], tg: dict[str, Any]) -> list[str]:
    errs: list[str] = []
    if int(tg.get("Count") or 0) < 0:
        errs.append("Task group count can't be negative")
    if not tg.get("Tasks"):
        errs.append("Missing tasks for task group")
    disk = tg.get("EphemeralDisk") or {}
    if disk and int(disk.get("SizeMB") or 0) < 10:
        errs.append(f"minimum DiskMB value is 10; got {int(disk.get('SizeMB') or 0)}")
    rp = tg.get("RestartPolicy") or {}
    if rp:
        if rp.get("Mode") not in ("delay", "fail"):
            errs.append(f"Unsupported restart mode: {rp.get('Mode')!r}")
        if int(rp.get("Attempts") or 0) < 0:
            errs.append("Restart attempts can't be negative")
    rs = tg.get("ReschedulePolicy") or {}
    if rs and rs.get("DelayFunction") not in (None, "", "constant", "exponential", "fibonacci"):
        errs.append(f"Invalid delay function {rs.get('DelayFunction')!r}")
    labels: set[str] = set()
    for net in tg.get("Networks") or []:
        mode = net.get("Mode") or "host"
        if mode not in ("host", "bridge", "none") and not mode.startswith("cni/"):
            errs.append(f"Invalid network mode {mode!r}")
        for port in (net.get("ReservedPorts") or []) + (net.get("DynamicPorts") or []):
            label = port.get("Label") or ""
            if not label:
                errs.append("Port label is required")
            elif label in labels:
                errs.append(f"Port label {label!r} already in use")
            labels.add(label)
            if int(port.get("To") or 0) < -1:
                errs.append(f"Port {label!r} cannot be mapped to negative value {port.get('To')}")
        for port in net.get("DynamicPorts") or []:
            if port.get("Value"):
                errs.append(f"Dynamic port {port.get('Label')!r} cannot have a static value")
    volumes = tg.get("Volumes") or {}
    for vname, vol in volumes.items():
        if vol.get("Type") not in ("host", "csi"):
            errs.append(f"Volume {vname} has unrecognised type {vol.get('Type')!r}")
        if not vol.get("Source"):
            errs.append(f"Volume {vname} has an empty source")
        if vol.get("Type") == "csi" and (not vol.get("AccessMode") or not vol.get("AttachmentMode")):
            errs.append(f"CSI volume {vname} must have an attachment mode and access mode")
    for svc in tg.get("Services") or []:
        errs.extend(_service_errors(svc, labels, group_level=True))
    for task in tg.get("Tasks") or []:
        errs.extend(_sub(f"Task {task.get('Name') or '?'}", _task_errors(job, tg, task, labels, volumes)))
    return errs


def _service_errors(svc: dict[str, Any], labels: set[str], group_level: bool) -> list[str]:
    errs: list[str] = []
    name = svc.get("Name") or ""
    if not _SERVICE_NAME.match(name):
        errs.append(
            f"Service name must be valid per RFC 1123 and can contain only alphanumeric characters or dashes: {name!r}"
        )
    if svc.get("Provider") not in (None, "", "consul", "nomad"):
        errs.append(f"Service provider must be one of consul or nomad, got {svc.get('Provider')!r}")
    port = svc.get("PortLabel") or ""
    if port and not port.isdigit() and port not in labels:
        errs.append(f"Service {name} port label {port!r} is not defined in the group network")
    for chk in svc.get("Checks") or []:
        kind = chk.get("Type")
        if kind not in ("http", "tcp", "script", "grpc"):
            errs.append(f"check type must be one of http, tcp, script, grpc; got {kind!r}")
        if kind == "http" and not chk.get("Path"):
            errs.append(f"http type must have http path for check {chk.get('Name')!r}")
        if int(chk.get("Interval") or 0) < 1_000_000_000:
            errs.append(
                f"check {chk.get('Name')!r}: interval ({chk.get('Interval')}) cannot be lower than 1s"
            )
        if int(chk.get("Timeout") or 0) < 1_000_000_000:
            errs.append(f"check {chk.get('Name')!r}: timeout ({chk.get('Timeout')}) cannot be lower than 1s")
        cport = chk.get("PortLabel") or ""
        if cport and cport not in labels:
            errs.append(f"check {chk.get('Name')!r}: port label {cport!r} is not defined")
    return errs


def _task_errors(
    job: dict[str, Any], tg: dict[str, Any], task: dict[str, Any], labels: set[str], volumes: dict[str, Any]
) -> list[str]:
    errs: list[str] = []
    if not task.get("Name"):
        errs.append("Missing task name")
    driver = task.get("Driver") or ""
    if not driver:
        errs.append("Missing task driver")
    res = task.get("Resources") or {}
    cpu, cores = int(res.get("CPU") or 0), int(res.get("Cores") or 0)
    if cpu and cores:
        errs.append("Task can only ask for 'cpu' or 'cores' resource, not both.")
    if not cores and cpu < 1:
        errs.append(f"minimum CPU value is 1; got {cpu}")
    if int(res.get("MemoryMB") or 0) < 10:
        errs.append(f"minimum MemoryMB value is 10; got {int(res.get('MemoryMB') or 0)}")
    mmax = int(res.get("MemoryMaxMB") or 0)
    if mmax and mmax < int(res.get("MemoryMB") or 0):
        errs.append(
            f"MemoryMaxMB value ({mmax}) should be larger than MemoryMB value ({res.get('MemoryMB')})"
        )
    for dev in res.get("Devices") or []:  # RequestedDevice.Validate
        if not dev.get("Name"):
            errs.append(
                "device name must be given as one of the following: type, vendor/type, or vendor/type/name"
            )
        for i, c in enumerate(dev.get("Constraints") or [], 1):
            if c.get("Operand") in ("distinct_hosts", "distinct_property"):
                errs.append(f'Constraint {i} validation failed: using unsupported operand "{c["Operand"]}"')
            errs.extend(f"Constraint {i} validation failed: {e}" for e in _constraint_errors(c))
    if int(task.get("KillTimeout") or 0) < 0:
        errs.append("KillTimeout must be a positive value")
    logs = task.get("LogConfig") or {}
    if logs and (int(logs.get("MaxFiles") or 0) < 1 or int(logs.get("MaxFileSizeMB") or 0) < 1):
        errs.append("log config: MaxFiles and MaxFileSizeMB must be at least 1")
    for c in task.get("Constraints") or []:
        errs.extend(_constraint_errors(c))
    dests: set[str] = set()
    for tmpl in task.get("Templates") or []:
        dest = tmpl.get("DestPath") or ""
        if not dest:
            errs.append("Template: must specify a destination")
        if dest in dests:
            errs.append(f"Template: destination {dest!r} used more than once")
        dests.add(dest)
        if not tmpl.get("SourcePath") and tmpl.get("EmbeddedTmpl") is None:
            errs.append("Template: must specify a source path or have an embedded template")
        if tmpl.get("ChangeMode") not in (None, "", "noop", "restart", "signal", "script"):
            errs.append(f"Template: invalid change mode {tmpl.get('ChangeMode')!r}")
        perms = tmpl.get("Perms")
        if perms and not re.match(r"^[0-7]{3,4}$", perms):
            errs.append(f"Template: failed to parse perms {perms!r} as octal")
    for mount in task.get("VolumeMounts") or []:
        if mount.get("Volume") not in volumes:
            errs.append(f"Volume Mount ({mount.get('Volume')}) references undefined volume")
        if not (mount.get("Destination") or "").startswith("/"):
            errs.append(f"Volume Mount ({mount.get('Volume')}) destination must be an absolute path")
    if driver == "docker":
        cfg = task.get("Config") or {}
        unknown = sorted(set(cfg) - DOCKER_CONFIG_KEYS)
        for key in unknown:
            errs.append(f'Invalid driver config: An argument named "{key}" is not expected here.')
        if not isinstance(cfg.get("image"), str) or not cfg.get("image"):
            errs.append(
                'Invalid driver config: The argument "image" is required, but no definition was found.'
            )
        if "args" in cfg and not (
            isinstance(cfg["args"], list) and all(isinstance(a, str) for a in cfg["args"])
        ):
            errs.append(
                'Invalid driver config: Inappropriate value for attribute "args": list of string required.'
            )
        if "command" in cfg and not isinstance(cfg["command"], str):
            errs.append(
                'Invalid driver config: Inappropriate value for attribute "command": string required.'
            )
        for port in cfg.get("ports") or []:
            if port not in labels:
                errs.append(f"Port {port!r} not found, check network block")
    for svc in task.get("Services") or []:
        errs.extend(_service_errors(svc, labels, group_level=False))
    return errs


def canonicalize_job(job: dict[str, Any], namespace: str, region: str) -> dict[str, Any]:
    """Fill the defaults ``Job.Canonicalize`` fills (the subset the double reports back)."""
    job.setdefault("Region", None)
    job["Region"] = job.get("Region") or region
    job["Namespace"] = job.get("Namespace") or namespace
    job["Name"] = job.get("Name") or job.get("ID")
    job["Type"] = job.get("Type") or "service"
    job["Priority"] = job.get("Priority") or 50
    job["Datacenters"] = job.get("Datacenters") or ["*"]
    job["NodePool"] = job.get("NodePool") or "default"
    job["Meta"] = job.get("Meta") or None
    job.setdefault("Stop", False)
    for tg in job.get("TaskGroups") or []:
        if tg.get("Count") is None:
            tg["Count"] = 1
        tg["EphemeralDisk"] = tg.get("EphemeralDisk") or {"Sticky": False, "Migrate": False, "SizeMB": 300}
        if not tg.get("RestartPolicy"):
            batch = job["Type"] == "batch"
            tg["RestartPolicy"] = {
                "Attempts": 3 if batch else 2,
                "Interval": (86400 if batch else 1800) * 1_000_000_000,
                "Delay": 15_000_000_000,
                "Mode": "fail",
                "RenderTemplates": False,
            }
        for task in tg.get("Tasks") or []:
            res = task.setdefault("Resources", {}) or {}
            task["Resources"] = res
            if not res.get("Cores") and not res.get("CPU"):
                res["CPU"] = 100
            res.setdefault("MemoryMB", 300)
            if res.get("MemoryMB") is None:
                res["MemoryMB"] = 300
            task["KillTimeout"] = task.get("KillTimeout") or 5_000_000_000
            task["RestartPolicy"] = task.get("RestartPolicy") or dict(tg["RestartPolicy"])
    return job
