"""The ``nomad:`` section of ``agent.yaml``: its cerberus schema and the typed settings built from it.

:data:`NOMAD_CONFIG_SCHEMA` is a plain cerberus schema dict; the agent's config loader includes it
under the ``nomad`` key. :meth:`NomadSettings.from_config` normalizes and validates a section on
its own (the ``nomad-job render`` command and the tests use it) and is what the runtime consumes.

Every key, with its default::

    address: http://127.0.0.1:4646      # required; http(s)://host:port of a Nomad agent
    token: null                          # ACL secret sent as X-Nomad-Token
    tls: {ca: null, cert: null, key: null, verify: true}
    namespace: default
    region: null                         # null: the agent's own region
    datacenters: ["*"]
    node_pool: default
    job_prefix: fetchml-                 # jobs are <prefix>ws-<name> and <prefix>run-<id>
    default_image: quay.io/jupyter/base-notebook:latest
    allowed_images: ["quay.io/jupyter/*"]          # fnmatch patterns; anything else is refused
    allowed_host_volumes: []             # fnmatch patterns of Nomad host volume names
    allowed_csi_volumes: []              # fnmatch patterns of CSI volume IDs
    workspace_volume: null               # {type: host|csi, source: "fetchml-ws-{name}", ...}
    snapshot_volume: null                # {type: host|csi, source: NAME}: where experiment runs read
                                         # their snapshot (mounted read-only); runs need it
    snapshot_dir: null                   # that volume's root as the agent sees it (it writes the
                                         # snapshots there); null: the agent's experiments directory
    workdir: /home/jovyan/work           # Jupyter's root_dir inside the container
    workspace_user: {uid: 1000, gid: 100}  # owner of the rendered secrets file
    jupyter_port: 8888                   # the port Jupyter listens on inside the alloc's netns
    cpu_mode: cores                      # cores: Resources.Cores; mhz: Resources.CPU
    mhz_per_core: 2000                   # MHz per requested core (mhz mode, fractional cpus)
    defaults: {cpu: 1, memory_mb: 2048, disk_mb: 10240}   # when a workspace asks for nothing
    max: {cpu: 64, memory_mb: 524288, gpu: 8, disk_mb: 1048576}
    gpu: {constraints: [], affinities: [], require_nvidia_runtime: true}
    start_timeout: 120                   # seconds for placement, and again for readiness
    pull_timeout: 600                    # seconds for the image pull
    http_timeout: 10                     # seconds per ordinary Nomad API call
    templates_dir: null                  # the nomad_jobs/ directory (default: next to the package)
    agent_url: null                      # the agent's base URL as allocations reach it (package
                                         # index); null: agent.yaml public_url, else the listen address
    index: null                          # "ADDR:PORT" of this host where the agent also serves ONLY
                                         # /index to allocations; agent_url defaults to http(s)://ADDR:PORT
    events:                              # how the agent follows Nomad (docs/nomad.md, "Following Nomad")
      enabled: true                      # the event stream; false: blocking queries only
      read_timeout: 70                   # seconds without a line (Nomad sends heartbeats) = connection lost
      fallback_retry: 300                # seconds on blocking queries before the stream is tried again
    run_stats_interval: 5                # seconds between allocation stats of a running run (peak memory)
    data_volume: null                    # {type: host|csi, source: NAME}: shared data, mounted at data_mount
                                         # in every workspace (read-write) and run (read-only)
    data_mount: /data                    # where data_volume appears in workspaces and runs
    env_cache_volume: null               # {type: host|csi, source: NAME}: mounted read-write into runs,
                                         # where the workspace's installed packages are kept by lock
                                         # hash (shared by every run that mounts it; docs/experiments.md)
    agent_job:                           # the agent's OWN job (`fetchml-agent nomad-job render
                                         # fetchml-agent`); not held to allowed_images/allowed_host_volumes
      image: null                        # null: fetchml/agent:<this version> (images/build.sh agent)
      data_volume: fetchml-agent         # host volume holding the agent's data_dir
      data_dir: /var/lib/fetchml
      port: 9101                         # static port "api"; agent.yaml in the Variable listens on it
      cpu_mhz: 500
      memory_mb: 512
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cerberus

from fetchml_agent import __version__
from fetchml_agent.errors import InvalidArgument
from fetchml_agent.runtimes.base import DATA_MOUNT, DATA_MOUNT_SCHEMA

__all__ = [
    "AGENT_IMAGE",
    "IMAGE_REF",
    "NOMAD_CONFIG_SCHEMA",
    "VOLUME_NAME",
    "AgentJobSettings",
    "Defaults",
    "GpuPlacement",
    "Limits",
    "NomadSettings",
    "VolumeSettings",
    "matches_any",
]

_CONSTRAINT = {
    "type": "dict",
    "schema": {
        "attribute": {"type": "string", "required": True, "empty": False},
        "operator": {
            "type": "string",
            "default": "=",
            "allowed": [
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
                "is_set",
                "is_not_set",
            ],
        },
        "value": {"type": "string", "default": ""},
        "weight": {"type": "integer", "min": -100, "max": 100, "default": 50},
    },
}



def _volume_schema(access_mode: str) -> dict[str, Any]:
    """A ``{type, source, access_mode, attachment_mode}`` volume setting (nullable)."""
    return {
        "type": "dict",
        "nullable": True,
        "default": None,
        "schema": {
            "type": {"type": "string", "allowed": ["host", "csi"], "default": "host"},
            "source": {"type": "string", "required": True, "empty": False},
            "access_mode": {
                "type": "string",
                "default": access_mode,
                "allowed": [
                    "single-node-reader-only",
                    "single-node-writer",
                    "multi-node-reader-only",
                    "multi-node-single-writer",
                    "multi-node-multi-writer",
                ],
            },
            "attachment_mode": {
                "type": "string",
                "default": "file-system",
                "allowed": ["file-system", "block-device"],
            },
        },
    }


#: The agent's own image, as ``images/build.sh agent`` tags it.
AGENT_IMAGE = f"fetchml/agent:{__version__}"
#: What an image reference and a Nomad host volume name may look like (the renderer checks both).
IMAGE_REF = r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}\Z"
VOLUME_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z"

NOMAD_CONFIG_SCHEMA: dict[str, Any] = {
    "address": {
        "type": "string",
        "required": True,
        "regex": r"^https?://[^\s/?#]+/?$",
    },
    "token": {"type": "string", "nullable": True, "default": None},
    "tls": {
        "type": "dict",
        "default": {},
        "schema": {
            "ca": {"type": "string", "nullable": True, "default": None},
            "cert": {"type": "string", "nullable": True, "default": None},
            "key": {"type": "string", "nullable": True, "default": None},
            "verify": {"type": "boolean", "default": True},
        },
    },
    "namespace": {"type": "string", "default": "default", "regex": r"^[a-zA-Z0-9-]{1,128}$"},
    "region": {"type": "string", "nullable": True, "default": None},
    "datacenters": {
        "type": "list",
        "minlength": 1,
        "default": ["*"],
        "schema": {"type": "string", "empty": False},
    },
    "node_pool": {"type": "string", "default": "default", "empty": False},
    "job_prefix": {"type": "string", "default": "fetchml-", "regex": r"^[a-z0-9][a-z0-9-]{0,31}$"},
    "default_image": {"type": "string", "default": "quay.io/jupyter/base-notebook:latest"},
    "allowed_images": {
        "type": "list",
        "default": ["quay.io/jupyter/*"],
        "schema": {"type": "string", "empty": False},
    },
    "allowed_host_volumes": {"type": "list", "default": [], "schema": {"type": "string", "empty": False}},
    "allowed_csi_volumes": {"type": "list", "default": [], "schema": {"type": "string", "empty": False}},
    "workspace_volume": _volume_schema("single-node-writer"),
    "snapshot_volume": _volume_schema("multi-node-reader-only"),
    "snapshot_dir": {"type": "string", "nullable": True, "default": None, "regex": r"^/.*"},
    "env_cache_volume": _volume_schema("multi-node-multi-writer"),
    "data_volume": _volume_schema("multi-node-multi-writer"),
    "data_mount": DATA_MOUNT_SCHEMA,
    "workdir": {"type": "string", "default": "/home/jovyan/work", "regex": r"^/[A-Za-z0-9._/-]*$"},
    "workspace_user": {
        "type": "dict",
        "default": {},
        "schema": {
            "uid": {"type": "integer", "min": 0, "default": 1000},
            "gid": {"type": "integer", "min": 0, "default": 100},
        },
    },
    "jupyter_port": {"type": "integer", "min": 1, "max": 65535, "default": 8888},
    "cpu_mode": {"type": "string", "allowed": ["cores", "mhz"], "default": "cores"},
    "mhz_per_core": {"type": "integer", "min": 1, "default": 2000},
    "defaults": {
        "type": "dict",
        "default": {},
        "schema": {
            "cpu": {"type": "number", "min": 0, "default": 1},
            "memory_mb": {"type": "integer", "min": 1, "default": 2048},
            "disk_mb": {"type": "integer", "min": 1, "default": 10240},
        },
    },
    "max": {
        "type": "dict",
        "default": {},
        "schema": {
            "cpu": {"type": "number", "min": 0, "default": 64},
            "memory_mb": {"type": "integer", "min": 0, "default": 524288},
            "gpu": {"type": "integer", "min": 0, "default": 8},
            "disk_mb": {"type": "integer", "min": 0, "default": 1048576},
        },
    },
    "gpu": {
        "type": "dict",
        "default": {},
        "schema": {
            "constraints": {"type": "list", "default": [], "schema": _CONSTRAINT},
            "affinities": {"type": "list", "default": [], "schema": _CONSTRAINT},
            "require_nvidia_runtime": {"type": "boolean", "default": True},
        },
    },
    "start_timeout": {"type": "number", "min": 1, "default": 120},
    "pull_timeout": {"type": "number", "min": 1, "default": 600},
    "http_timeout": {"type": "number", "min": 1, "default": 10},
    "templates_dir": {"type": "string", "nullable": True, "default": None},
    "agent_url": {"type": "string", "nullable": True, "default": None, "regex": r"^https?://[^\s/?#]+(/[^\s?#]*)?$"},
    "index": {
        "type": "string",
        "nullable": True,
        "default": None,
        "regex": r"^(\[[0-9A-Fa-f:]+\]|[0-9.]+):\d{1,5}$",
    },
    "events": {
        "type": "dict",
        "default": {},
        "schema": {
            "enabled": {"type": "boolean", "default": True},
            "read_timeout": {"type": "number", "min": 1, "default": 70},
            "fallback_retry": {"type": "number", "min": 1, "default": 300},
        },
    },
    "run_stats_interval": {"type": "number", "min": 0.1, "default": 5},
    "agent_job": {
        "type": "dict",
        "default": {},
        "schema": {
            "image": {"type": "string", "nullable": True, "default": None, "regex": IMAGE_REF},
            "data_volume": {"type": "string", "default": "fetchml-agent", "regex": VOLUME_NAME},
            "data_dir": {"type": "string", "default": "/var/lib/fetchml", "regex": r"^/[A-Za-z0-9._/-]*$"},
            "port": {"type": "integer", "min": 1, "max": 65535, "default": 9101},
            "cpu_mhz": {"type": "integer", "min": 1, "max": 1_000_000, "default": 500},
            "memory_mb": {"type": "integer", "min": 16, "default": 512},
        },
    },
}


def matches_any(value: str, patterns: tuple[str, ...] | list[str]) -> bool:
    """True when ``value`` matches one of the fnmatch ``patterns`` (case-sensitive)."""
    return any(fnmatch.fnmatchcase(value, p) for p in patterns)


@dataclass(frozen=True)
class Limits:
    cpu: float = 64
    memory_mb: int = 524288
    gpu: int = 8
    disk_mb: int = 1048576


@dataclass(frozen=True)
class Defaults:
    cpu: float = 1
    memory_mb: int = 2048
    disk_mb: int = 10240


@dataclass(frozen=True)
class VolumeSettings:
    """The per-workspace volume; ``source`` may hold ``{name}`` (the workspace name)."""

    type: str
    source: str
    access_mode: str = "single-node-writer"
    attachment_mode: str = "file-system"


@dataclass(frozen=True)
class GpuPlacement:
    constraints: tuple[dict[str, Any], ...] = ()
    affinities: tuple[dict[str, Any], ...] = ()
    require_nvidia_runtime: bool = True


@dataclass(frozen=True)
class AgentJobSettings:
    """The agent's own service job (``nomad.agent_job``): its image and data volume are the
    operator's choice for the agent, not the workspace policy's (``allowed_images``,
    ``allowed_host_volumes`` say what workspaces may use)."""

    image: str = AGENT_IMAGE
    data_volume: str = "fetchml-agent"
    data_dir: str = "/var/lib/fetchml"
    port: int = 9101
    cpu_mhz: int = 500
    memory_mb: int = 512


@dataclass(frozen=True)
class NomadSettings:
    """The validated ``nomad:`` section. Build it with :meth:`from_config`."""

    address: str
    token: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_verify: bool = True
    namespace: str = "default"
    region: str | None = None
    datacenters: tuple[str, ...] = ("*",)
    node_pool: str = "default"
    job_prefix: str = "fetchml-"
    default_image: str = "quay.io/jupyter/base-notebook:latest"
    allowed_images: tuple[str, ...] = ("quay.io/jupyter/*",)
    allowed_host_volumes: tuple[str, ...] = ()
    allowed_csi_volumes: tuple[str, ...] = ()
    workspace_volume: VolumeSettings | None = None
    snapshot_volume: VolumeSettings | None = None
    snapshot_dir: str | None = None
    env_cache_volume: VolumeSettings | None = None
    data_volume: VolumeSettings | None = None
    data_mount: str = DATA_MOUNT
    workdir: str = "/home/jovyan/work"
    workspace_uid: int = 1000
    workspace_gid: int = 100
    jupyter_port: int = 8888
    cpu_mode: str = "cores"
    mhz_per_core: int = 2000
    defaults: Defaults = field(default_factory=Defaults)
    max: Limits = field(default_factory=Limits)
    gpu: GpuPlacement = field(default_factory=GpuPlacement)
    start_timeout: float = 120.0
    pull_timeout: float = 600.0
    http_timeout: float = 10.0
    templates_dir: str | None = None
    agent_url: str | None = None
    index: tuple[str, int] | None = None
    agent_job: AgentJobSettings = field(default_factory=AgentJobSettings)
    events_enabled: bool = True
    events_read_timeout: float = 70.0
    events_fallback_retry: float = 300.0
    run_stats_interval: float = 5.0

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None, where: str = "nomad") -> NomadSettings:
        """Validate and normalize a ``nomad:`` section.

        Raises :class:`~fetchml_agent.errors.InvalidArgument` naming every bad key
        (``nomad.max.cpu: min value is 0``).
        """
        validator = cerberus.Validator(NOMAD_CONFIG_SCHEMA)
        if not validator.validate(dict(section or {})):
            problems = "; ".join(_flatten_errors(validator.errors, where))
            raise InvalidArgument(f"invalid Nomad settings: {problems}", details="see docs/nomad.md")
        d = validator.document
        tls, mx, gpu, user, dft = d["tls"], d["max"], d["gpu"], d["workspace_user"], d["defaults"]
        vol, snap = d["workspace_volume"], d["snapshot_volume"]
        return cls(
            address=d["address"].rstrip("/"),
            token=d["token"] or None,
            tls_ca=tls["ca"],
            tls_cert=tls["cert"],
            tls_key=tls["key"],
            tls_verify=tls["verify"],
            namespace=d["namespace"],
            region=d["region"],
            datacenters=tuple(d["datacenters"]),
            node_pool=d["node_pool"],
            job_prefix=d["job_prefix"],
            default_image=d["default_image"],
            allowed_images=tuple(d["allowed_images"]),
            allowed_host_volumes=tuple(d["allowed_host_volumes"]),
            allowed_csi_volumes=tuple(d["allowed_csi_volumes"]),
            workspace_volume=VolumeSettings(**vol) if vol else None,
            snapshot_volume=VolumeSettings(**snap) if snap else None,
            snapshot_dir=d["snapshot_dir"],
            env_cache_volume=VolumeSettings(**d["env_cache_volume"]) if d["env_cache_volume"] else None,
            data_volume=VolumeSettings(**d["data_volume"]) if d["data_volume"] else None,
            data_mount=d["data_mount"],
            workdir=d["workdir"],
            workspace_uid=user["uid"],
            workspace_gid=user["gid"],
            jupyter_port=d["jupyter_port"],
            cpu_mode=d["cpu_mode"],
            mhz_per_core=d["mhz_per_core"],
            defaults=Defaults(cpu=dft["cpu"], memory_mb=dft["memory_mb"], disk_mb=dft["disk_mb"]),
            max=Limits(cpu=mx["cpu"], memory_mb=mx["memory_mb"], gpu=mx["gpu"], disk_mb=mx["disk_mb"]),
            gpu=GpuPlacement(
                constraints=tuple(gpu["constraints"]),
                affinities=tuple(gpu["affinities"]),
                require_nvidia_runtime=gpu["require_nvidia_runtime"],
            ),
            start_timeout=float(d["start_timeout"]),
            pull_timeout=float(d["pull_timeout"]),
            http_timeout=float(d["http_timeout"]),
            templates_dir=d["templates_dir"],
            agent_url=d["agent_url"].rstrip("/") if d["agent_url"] else None,
            index=_address(d["index"]) if d["index"] else None,
            agent_job=AgentJobSettings(**{**d["agent_job"], "image": d["agent_job"]["image"] or AGENT_IMAGE}),
            events_enabled=d["events"]["enabled"],
            events_read_timeout=float(d["events"]["read_timeout"]),
            events_fallback_retry=float(d["events"]["fallback_retry"]),
            run_stats_interval=float(d["run_stats_interval"]),
        )


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not 0 < int(port) < 65536:
        raise InvalidArgument(f"invalid Nomad settings: nomad.index: port {port} is out of range",
                              details="nomad.index is ADDR:PORT of this host, e.g. 10.0.0.5:9101")
    return host.strip("[]"), int(port)


def _flatten_errors(errors: Any, prefix: str) -> list[str]:
    out: list[str] = []
    if isinstance(errors, dict):
        for key, value in errors.items():
            out.extend(_flatten_errors(value, f"{prefix}.{key}"))
    elif isinstance(errors, list):
        for item in errors:
            if isinstance(item, (dict, list)):
                out.extend(_flatten_errors(item, prefix))
            else:
                out.append(f"{prefix}: {item}")
    else:
        out.append(f"{prefix}: {errors}")
    return out
