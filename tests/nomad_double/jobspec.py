"""Decoding and validating Nomad JSON jobs the way a Nomad server does (a subset, written down).

Two stages, as in Nomad:

1. **Decoding** (``decode``): request bodies are matched to the Go structs of Nomad's ``api``
   package. Keys match field names case-insensitively (Go's ``encoding/json``); a value of the
   wrong JSON type is refused with HTTP 400 and Go's message; ``time.Duration`` fields take
   integers (nanoseconds) only. *Stricter than Nomad:* an unknown key is refused (400,
   ``json: unknown field "X"``) where Nomad silently drops it, so a misspelt field in a template
   fails a test instead of vanishing.
2. **Validation** (``validate_job``): the server-side checks that Nomad reports as a multierror
   with HTTP 500 on register (``1 error occurred:\\n\\t* ...``) and as ``ValidationErrors`` from
   ``/v1/validate/job``.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "DecodeError",
    "DOCKER_CONFIG_KEYS",
    "canonicalize_job",
    "decode",
    "multierror",
    "validate_job",
    "STRUCTS",
]


class DecodeError(Exception):
    """A body that Go's decoder (or the double's stricter decoder) refuses: HTTP 400."""


# Field types: "str", "int", "bool", "float", "ns" (time.Duration), "any", ("list", T),
# ("map", T), or the name of a struct in STRUCTS.
_CONSTRAINT = {"LTarget": "str", "RTarget": "str", "Operand": "str"}
STRUCTS: dict[str, dict[str, Any]] = {
    "JobRegisterRequest": {
        "Job": "Job",
        "EnforceIndex": "bool",
        "JobModifyIndex": "int",
        "PolicyOverride": "bool",
        "PreserveCounts": "bool",
        "PreserveResources": "bool",
        "EvalPriority": "int",
        "Submission": "any",
        "Region": "str",
        "Namespace": "str",
        "SecretID": "str",
        "IdempotencyToken": "str",
    },
    "JobValidateRequest": {"Job": "Job", "Region": "str", "Namespace": "str", "SecretID": "str"},
    "Job": {
        "Region": "str",
        "Namespace": "str",
        "ID": "str",
        "Name": "str",
        "Type": "str",
        "Priority": "int",
        "AllAtOnce": "bool",
        "Datacenters": ("list", "str"),
        "NodePool": "str",
        "Constraints": ("list", "Constraint"),
        "Affinities": ("list", "Affinity"),
        "TaskGroups": ("list", "TaskGroup"),
        "Update": "any",
        "Multiregion": "any",
        "Spreads": ("list", "any"),
        "Periodic": "any",
        "ParameterizedJob": "any",
        "Reschedule": "ReschedulePolicy",
        "Migrate": "any",
        "Meta": ("map", "str"),
        "UI": "any",
        "Stop": "bool",
        "ParentID": "str",
        "Dispatched": "bool",
        "DispatchIdempotencyToken": "str",
        "Payload": "str",
        "ConsulNamespace": "str",
        "VaultNamespace": "str",
        "NomadTokenID": "str",
        "Status": "str",
        "StatusDescription": "str",
        "Stable": "bool",
        "Version": "int",
        "SubmitTime": "int",
        "CreateIndex": "int",
        "ModifyIndex": "int",
        "JobModifyIndex": "int",
        "VersionTag": "any",
        "ConsulToken": "str",
        "VaultToken": "str",
    },
    "Constraint": _CONSTRAINT,
    "Affinity": {**_CONSTRAINT, "Weight": "int"},
    "TaskGroup": {
        "Name": "str",
        "Count": "int",
        "Constraints": ("list", "Constraint"),
        "Affinities": ("list", "Affinity"),
        "Tasks": ("list", "Task"),
        "Spreads": ("list", "any"),
        "Volumes": ("map", "VolumeRequest"),
        "RestartPolicy": "RestartPolicy",
        "Disconnect": "any",
        "ReschedulePolicy": "ReschedulePolicy",
        "EphemeralDisk": "EphemeralDisk",
        "Update": "any",
        "Migrate": "any",
        "Networks": ("list", "NetworkResource"),
        "Meta": ("map", "str"),
        "Services": ("list", "Service"),
        "ShutdownDelay": "ns",
        "MaxRunDuration": "ns",
        "StopAfterClientDisconnect": "ns",
        "MaxClientDisconnect": "ns",
        "PreventRescheduleOnLost": "bool",
        "Scaling": "any",
        "Consul": "any",
    },
    "Task": {
        "Name": "str",
        "Driver": "str",
        "User": "str",
        "Lifecycle": "Lifecycle",
        "Config": ("map", "any"),
        "Constraints": ("list", "Constraint"),
        "Affinities": ("list", "Affinity"),
        "Env": ("map", "str"),
        "Services": ("list", "Service"),
        "Resources": "Resources",
        "RestartPolicy": "RestartPolicy",
        "Meta": ("map", "str"),
        "KillTimeout": "ns",
        "LogConfig": "LogConfig",
        "Artifacts": ("list", "any"),
        "Vault": "any",
        "Consul": "any",
        "Templates": ("list", "Template"),
        "DispatchPayload": "DispatchPayload",
        "VolumeMounts": ("list", "VolumeMount"),
        "CSIPluginConfig": "any",
        "Leader": "bool",
        "ShutdownDelay": "ns",
        "KillSignal": "str",
        "Kind": "str",
        "ScalingPolicies": ("list", "any"),
        "Secrets": ("list", "any"),
        "Identity": "any",
        "Identities": ("list", "any"),
        "Actions": ("list", "any"),
        "Schedule": "any",
    },
    "Lifecycle": {"Hook": "str", "Sidecar": "bool"},
    "RestartPolicy": {
        "Attempts": "int",
        "Interval": "ns",
        "Delay": "ns",
        "Mode": "str",
        "RenderTemplates": "bool",
    },
    "ReschedulePolicy": {
        "Attempts": "int",
        "Interval": "ns",
        "Delay": "ns",
        "DelayFunction": "str",
        "MaxDelay": "ns",
        "Unlimited": "bool",
    },
    "EphemeralDisk": {"Sticky": "bool", "Migrate": "bool", "SizeMB": "int"},
    "Resources": {
        "CPU": "int",
        "Cores": "int",
        "MemoryMB": "int",
        "MemoryMaxMB": "int",
        "DiskMB": "int",
        "Networks": ("list", "NetworkResource"),
        "Devices": ("list", "RequestedDevice"),
        "NUMA": "any",
        "SecretsMB": "int",
        "IOPS": "int",
    },
    "RequestedDevice": {
        "Name": "str",
        "Count": "int",
        "Constraints": ("list", "Constraint"),
        "Affinities": ("list", "Affinity"),
    },
    "NetworkResource": {
        "Mode": "str",
        "Device": "str",
        "CIDR": "str",
        "IP": "str",
        "DNS": "DNSConfig",
        "ReservedPorts": ("list", "Port"),
        "DynamicPorts": ("list", "Port"),
        "Hostname": "str",
        "MBits": "int",
        "CNI": "any",
    },
    "DNSConfig": {"Servers": ("list", "str"), "Searches": ("list", "str"), "Options": ("list", "str")},
    "Port": {"Label": "str", "Value": "int", "To": "int", "HostNetwork": "str", "IgnoreCollision": "bool"},
    "Service": {
        "Name": "str",
        "Tags": ("list", "str"),
        "CanaryTags": ("list", "str"),
        "EnableTagOverride": "bool",
        "PortLabel": "str",
        "AddressMode": "str",
        "Address": "str",
        "Checks": ("list", "ServiceCheck"),
        "CheckRestart": "any",
        "Connect": "any",
        "Meta": ("map", "str"),
        "CanaryMeta": ("map", "str"),
        "TaggedAddresses": ("map", "str"),
        "TaskName": "str",
        "OnUpdate": "str",
        "Identity": "any",
        "Weights": "any",
        "Provider": "str",
        "Cluster": "str",
        "Kind": "str",
    },
    "ServiceCheck": {
        "Name": "str",
        "Type": "str",
        "Command": "str",
        "Args": ("list", "str"),
        "Path": "str",
        "Protocol": "str",
        "PortLabel": "str",
        "Expose": "bool",
        "AddressMode": "str",
        "Advertise": "str",
        "Interval": "ns",
        "Timeout": "ns",
        "InitialStatus": "str",
        "Notes": "str",
        "TLSServerName": "str",
        "TLSSkipVerify": "bool",
        "Header": ("map", ("list", "str")),
        "Method": "str",
        "Body": "str",
        "CheckRestart": "any",
        "GRPCService": "str",
        "GRPCUseTLS": "bool",
        "TaskName": "str",
        "SuccessBeforePassing": "int",
        "FailuresBeforeCritical": "int",
        "FailuresBeforeWarning": "int",
        "OnUpdate": "str",
    },
    "LogConfig": {"MaxFiles": "int", "MaxFileSizeMB": "int", "Disabled": "bool", "Enabled": "bool"},
    "Template": {
        "SourcePath": "str",
        "DestPath": "str",
        "EmbeddedTmpl": "str",
        "ChangeMode": "str",
        "ChangeSignal": "str",
        "ChangeScript": "any",
        "Once": "bool",
        "Splay": "ns",
        "Perms": "str",
        "Uid": "int",
        "Gid": "int",
        "LeftDelim": "str",
        "RightDelim": "str",
        "Envvars": "bool",
        "VaultGrace": "ns",
        "Wait": "WaitConfig",
        "ErrMissingKey": "bool",
    },
    "WaitConfig": {"Min": "ns", "Max": "ns"},
    "DispatchPayload": {"File": "str"},
    "VolumeRequest": {
        "Name": "str",
        "Type": "str",
        "Source": "str",
        "ReadOnly": "bool",
        "AccessMode": "str",
        "AttachmentMode": "str",
        "MountOptions": "any",
        "PerAlloc": "bool",
        "Sticky": "bool",
    },
    "VolumeMount": {
        "Volume": "str",
        "Destination": "str",
        "ReadOnly": "bool",
        "PropagationMode": "str",
        "SELinuxLabel": "str",
    },
    "Variable": {
        "Namespace": "str",
        "Path": "str",
        "Items": ("map", "str"),
        "Lock": "any",
        "CreateIndex": "int",
        "ModifyIndex": "int",
        "CreateTime": "int",
        "ModifyTime": "int",
    },
    "AllocRestartRequest": {"TaskName": "str", "AllTasks": "bool"},
    "AllocSignalRequest": {"Signal": "str", "Task": "str"},
}

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
_GO_TYPES = {"str": "string", "int": "int", "bool": "bool", "float": "float64", "ns": "time.Duration"}


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def decode(value: Any, spec: Any, where: str = "") -> Any:
    """Decode ``value`` as ``spec``; returns it with keys spelt as Nomad spells them."""
    if value is None:
        return None
    if spec == "any":
        return value
    if isinstance(spec, tuple):
        kind, inner = spec
        if kind == "list":
            if not isinstance(value, list):
                raise _type_error(value, f"[]{_go_name(inner)}", where)
            return [decode(v, inner, where) for v in value]
        if not isinstance(value, dict):
            raise _type_error(value, f"map[string]{_go_name(inner)}", where)
        return {k: decode(v, inner, where) for k, v in value.items()}
    if spec in _GO_TYPES:
        if spec == "str" and isinstance(value, str):
            return value
        if spec == "bool" and isinstance(value, bool):
            return value
        if spec in ("int", "ns") and isinstance(value, int) and not isinstance(value, bool):
            return value
        if spec in ("int", "ns") and isinstance(value, float) and not isinstance(value, bool):
            if value.is_integer():
                return int(value)
            raise DecodeError(
                f"json: cannot unmarshal number {value} into Go struct field {where} of type int64"
            )
        if spec == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        raise _type_error(value, _GO_TYPES[spec], where)
    fields = STRUCTS[spec]
    if not isinstance(value, dict):
        raise _type_error(value, f"api.{spec}", where)
    lower = {k.lower(): k for k in fields}
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = lower.get(key.lower())
        if name is None:
            raise DecodeError(f'json: unknown field "{key}" (in {spec})')
        out[name] = decode(item, fields[name], f"{spec}.{name}" if not where else f"{where}.{name}")
    return out


def _go_name(spec: Any) -> str:
    if isinstance(spec, tuple):
        return ("[]" if spec[0] == "list" else "map[string]") + _go_name(spec[1])
    return _GO_TYPES.get(spec, "interface {}" if spec == "any" else f"*api.{spec}")


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
_DEVICE_NAME = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+){0,2}$")


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
    for dev in res.get("Devices") or []:
        if not _DEVICE_NAME.match(dev.get("Name") or ""):
            errs.append(
                f"device name {dev.get('Name')!r} is not in the form <type>, <vendor>/<type> or <vendor>/<type>/<model>"
            )
        if int(dev.get("Count") if dev.get("Count") is not None else 1) < 1:
            errs.append("device count must be at least 1")
        for c in dev.get("Constraints") or []:
            errs.extend(_constraint_errors(c))
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
