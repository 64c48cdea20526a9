"""Validated inputs for the Nomad job templates in ``nomad_jobs/``, and their rendering.

The same code path serves the ``nomad`` runtime and ``fetchml-agent nomad-job render``:
validate the request against the agent's :class:`~fetchml_agent.nomad.schema.NomadSettings`
(allowed images, allowed volumes, resource maxima), then render the Jinja2 template into a Nomad
JSON job wrapped as ``{"Job": {...}}`` (what ``POST /v1/jobs`` and ``nomad job run -json`` take).

Refusals happen here, before anything reaches Nomad:

* an image outside ``allowed_images`` → :class:`~fetchml_agent.errors.PolicyDenied`;
* a host (CSI) volume outside ``allowed_host_volumes`` (``allowed_csi_volumes``) →
  :class:`~fetchml_agent.errors.PolicyDenied`;
* resources above ``max`` or malformed values → :class:`~fetchml_agent.errors.InvalidArgument`.

No input of a template is a secret: Jupyter's token and password hash travel in the Nomad Variable
at :func:`secret_variable_path` (see :func:`jupyter_secret_items`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from fetchml_agent.errors import InvalidArgument, PolicyDenied
from fetchml_agent.nomad.devices import gpu_type_constraint
from fetchml_agent.nomad.schema import IMAGE_REF, VOLUME_NAME, NomadSettings, VolumeSettings, matches_any
from fetchml_agent.runtimes.base import Resources, RunSpec

__all__ = [
    "JOB_TEMPLATES",
    "SECRET_ITEM",
    "TEMPLATES_DIR",
    "AgentJobRequest",
    "JobRenderer",
    "RUN_LAUNCHER",
    "RunTask",
    "WorkspaceJobRequest",
    "jupyter_secret_items",
    "run_job_id",
    "run_task",
    "secret_variable_path",
    "workspace_job_id",
]

# In a checkout this is a link to nomad_jobs/; in an installed wheel, a copy of it.
TEMPLATES_DIR = Path(__file__).resolve().parent / "jobs"
JOB_TEMPLATES = {
    "jupyter-workspace": "jupyter-workspace.json.j2",
    "experiment-run": "experiment-run.json.j2",
    "fetchml-agent": "fetchml-agent.json.j2",
}
SECRET_ITEM = "jupyter_config"
SNAPSHOT_MOUNT = "/fetchml/snapshot"
ENV_CACHE_MOUNT = "/fetchml/env-cache"  # nomad.env_cache_volume in a run (FETCHML_ENV_CACHE)
OUTPUT_NOTEBOOK = "output.ipynb"
# Delimiters that never occur in a run's parameters: the template block then copies the
# parameters verbatim instead of interpreting them as a consul-template.
_LITERAL_LEFT = "[[fetchml-literal:"
_LITERAL_RIGHT = ":fetchml-literal]]"

_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9_.-]{0,61}[a-z0-9])?\Z")
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
_META_VALUE_MAX = 512
_IMAGE = re.compile(IMAGE_REF)
_VOLUME = re.compile(VOLUME_NAME)
_REL_PATH = re.compile(r"^(?:[A-Za-z0-9_.@+-]+/)*[A-Za-z0-9_.@+ -]+\Z")
_RUN_ENV = {
    # What the ``fetchml`` helper reads inside a run (see fetchml/__init__.py), in the allocation's
    # layout: results under alloc/data mirror the agent's run directory.
    "FETCHML_METRICS_FILE": "${NOMAD_ALLOC_DIR}/data/metrics.jsonl",
    "FETCHML_OUTPUTS_DIR": "${NOMAD_ALLOC_DIR}/data/work/outputs",
    "FETCHML_PARAMETERS_FILE": "${NOMAD_TASK_DIR}/parameters.json",
}
_RESERVED_ENV = frozenset({"JUPYTER_CONFIG_PATH", "JUPYTER_TOKEN", "FETCHML_RUN_ID", "FETCHML_EXPERIMENT",
                           "FETCHML_ENV_CACHE", *_RUN_ENV})
# The run task's entry: copy the read-only snapshot ($1) into the task's own directory, point its
# outputs/ at the results in alloc/data, install the workspace's packages when the snapshot holds
# their lock (the environment step, fetchml_agent/experiments/env_step.py: its report goes to
# alloc/data/environment.json), and run the command there. Only $VAR forms: Nomad interpolates
# ${...} in job arguments.
RUN_LAUNCHER = """set -eu
work="$NOMAD_TASK_DIR/work"
out="$NOMAD_ALLOC_DIR/data/work/outputs"
mkdir -p "$work" "$out"
cp -R "$1/." "$work/"
if [ -d "$work/outputs" ] && [ ! -L "$work/outputs" ]; then cp -R "$work/outputs/." "$out/"; rm -rf "$work/outputs"; fi
ln -sfn "$out" "$work/outputs"
if [ -f "$work/.fetchml/environment.lock" ]; then
PYTHONPATH=$(python3 "$work/.fetchml/environment_step.py" "$work/.fetchml/environment.lock" "$NOMAD_ALLOC_DIR/data/environment.json")
export PYTHONPATH
fi
cd "$work"
shift
exec "$@"
"""
_HTTP_PATH = re.compile(r"^/[A-Za-z0-9._/-]*\Z")


def workspace_job_id(settings: NomadSettings, name: str) -> str:
    """The Nomad job ID of workspace ``name`` (``<job_prefix>ws-<name>``)."""
    return f"{settings.job_prefix}ws-{name}"


def run_job_id(settings: NomadSettings, run_id: str) -> str:
    """The Nomad job ID of experiment run ``run_id`` (``<job_prefix>run-<run_id>``)."""
    return f"{settings.job_prefix}run-{run_id}"


def secret_variable_path(job_id: str) -> str:
    """The Nomad Variable holding a job's secrets; its tasks may read it without an ACL policy."""
    return f"nomad/jobs/{job_id}"


def jupyter_secret_items(token: str, password_hash: str | None = None) -> dict[str, str]:
    """The Variable items the workspace job reads: one JSON ``jupyter_server_config`` document.

    The whole config file is one item so that the template block stays a plain copy (no
    quoting or missing-key behaviour of consul-template to rely on).
    """
    if not token:
        raise InvalidArgument("a workspace needs a Jupyter token; an empty token disables authentication")
    config: dict[str, Any] = {"IdentityProvider": {"token": token}}
    if password_hash:
        config["PasswordIdentityProvider"] = {"hashed_password": password_hash}
    return {SECRET_ITEM: json.dumps(config, sort_keys=True)}


@dataclass(frozen=True)
class WorkspaceJobRequest:
    """What a workspace asks for; :meth:`JobRenderer.workspace` validates and renders it."""

    name: str
    workspace_id: str = ""
    owner: str = ""
    image: str | None = None
    resources: Resources = field(default_factory=Resources)
    memory_max_mb: int | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    volume_source: str | None = None


@dataclass(frozen=True)
class RunTask:
    """What a run's task executes, whatever schedules it: ``/bin/sh -c`` :data:`RUN_LAUNCHER`
    ``fetchml-run SNAPSHOT_DIR`` followed by ``command``, with ``env``, and ``parameters_json``
    written to ``${NOMAD_TASK_DIR}/parameters.json``. ``command`` and ``env`` name Nomad's task
    layout (``${NOMAD_ALLOC_DIR}``, ``${NOMAD_TASK_DIR}``); another runtime provides the same."""

    command: list[str]
    env: dict[str, str]
    parameters_json: str


def run_task(spec: RunSpec) -> RunTask:
    """Validate the run's target, parameters and environment and build its :class:`RunTask`."""
    notebook = _check_rel_path(spec.kind, spec.notebook)
    if spec.kind not in ("notebook", "script"):
        raise InvalidArgument(f"a run is a notebook or a script, not {spec.kind!r}")
    suffix = ".ipynb" if spec.kind == "notebook" else ".py"
    if not notebook.endswith(suffix):
        raise InvalidArgument(f"{spec.kind} {spec.notebook!r} is not a {suffix} file")
    try:
        parameters_json = json.dumps(dict(spec.parameters), sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"run parameters are not JSON: {exc}") from None
    if _LITERAL_LEFT in parameters_json or _LITERAL_RIGHT in parameters_json:
        raise InvalidArgument("run parameters contain a reserved marker", details=_LITERAL_LEFT)
    env = dict(_check_env(spec.env))
    env.update({"FETCHML_RUN_ID": spec.run_id, **_RUN_ENV})
    if spec.experiment_id:
        env["FETCHML_EXPERIMENT"] = spec.experiment_id
    if spec.kind == "notebook":
        command = [
            "papermill", notebook, f"${{NOMAD_ALLOC_DIR}}/data/{OUTPUT_NOTEBOOK}",
            "--parameters_file", "${NOMAD_TASK_DIR}/parameters.json",
            "--execution-timeout", str(math.ceil(spec.timeout)),
            "--log-output", "--no-progress-bar",
        ]
        if spec.kernel:
            command += ["-k", spec.kernel]
        if spec.language:
            command += ["--language", spec.language]
    else:
        command = ["python3", notebook]
    return RunTask(command, env, parameters_json)


@dataclass(frozen=True)
class AgentJobRequest:
    """The agent as a Nomad job: its image, API port, and the host volume for its data dir.
    ``None`` takes the value of ``nomad.agent_job`` (:class:`~fetchml_agent.nomad.schema.AgentJobSettings`)."""

    image: str | None = None
    data_volume: str | None = None
    port: int | None = None
    data_dir: str | None = None
    health_path: str = "/api/v1/health"
    cpu_mhz: int | None = None
    memory_mb: int | None = None
    job_name: str = "agent"


def _tojson(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _ns(seconds: float) -> int:
    return round(seconds * 1_000_000_000)


class JobRenderer:
    """Renders the three job templates for one set of :class:`NomadSettings`.

    Templates are compiled once per renderer; rendering is pure CPU (no I/O after construction).
    """

    def __init__(self, settings: NomadSettings, templates_dir: Path | None = None) -> None:
        self.settings = settings
        directory = templates_dir or (
            Path(settings.templates_dir) if settings.templates_dir else TEMPLATES_DIR
        )
        if not directory.is_dir():
            raise InvalidArgument(
                f"Nomad job templates not found in {directory}",
                details="set nomad.templates_dir to the nomad_jobs/ directory of this release",
            )
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(directory)),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
        )
        env.filters["tojson"] = _tojson
        env.filters["ns"] = _ns
        self._templates = {name: env.get_template(fname) for name, fname in JOB_TEMPLATES.items()}

    # -- workspace -------------------------------------------------------------------------

    def workspace(self, req: WorkspaceJobRequest, gpu_types: Iterable[str] | None = None) -> dict[str, Any]:
        """Validate ``req`` and return the ``{"Job": ...}`` dict of its service job.

        ``gpu_types``: the GPU device groups the cluster fingerprints (their names), against which
        a ``resources.gpu_type`` is matched (:func:`~fetchml_agent.nomad.devices.gpu_type_constraint`);
        ``None`` when they are not known."""
        s = self.settings
        name = _check_name(req.name)
        job_id = workspace_job_id(s, name)
        image = self._check_image(req.image or s.default_image)
        cpu, memory_mb, disk_mb, gpu = self._resources(req.resources)
        memory_max_mb = None
        if req.memory_max_mb is not None:
            memory_max_mb = _check_int(
                "memory_max", req.memory_max_mb, s.max.memory_mb, "MB", "nomad.max.memory_mb"
            )
            if memory_max_mb < memory_mb:
                raise InvalidArgument(f"memory_max ({memory_max_mb} MB) is below memory ({memory_mb} MB)")
        volume = self._workspace_volume(name, req.volume_source)
        meta = {
            "fetchml_kind": "workspace",
            "fetchml_workspace": name,
            "fetchml_workspace_id": _check_meta("workspace_id", req.workspace_id or name),
            "fetchml_owner": _check_meta("owner", req.owner),
        }
        for key, value in sorted(req.labels.items()):
            meta[f"fetchml_label_{_check_key('label', key)}"] = _check_meta(f"label {key}", value)
        context = {
            **self._placement(),
            **_cpu_fields(cpu, s),
            **self._gpu_fields(gpu, req.resources.gpu_type, gpu_types),
            "job_id": job_id,
            "meta": meta,
            "image": image,
            "jupyter_port": s.jupyter_port,
            "workdir": s.workdir,
            "volume": volume,
            **self._data_volume(),
            "disk_mb": disk_mb,
            "memory_mb": memory_mb,
            "memory_max_mb": memory_max_mb,
            "env": {**_check_env(req.env), "JUPYTER_CONFIG_PATH": "${NOMAD_SECRETS_DIR}"},
            "service_name": job_id,
            "secret_var_path": secret_variable_path(job_id),
            "secret_item": SECRET_ITEM,
            "uid": s.workspace_uid,
            "gid": s.workspace_gid,
        }
        return self._render("jupyter-workspace", context)

    # -- experiment run --------------------------------------------------------------------

    def run(self, spec: RunSpec, gpu_types: Iterable[str] | None = None) -> dict[str, Any]:
        """Validate ``spec`` and return the ``{"Job": ...}`` dict of its batch job (``gpu_types``:
        as for :meth:`workspace`)."""
        s = self.settings
        if not _RUN_ID.match(spec.run_id or ""):
            raise InvalidArgument(f"invalid run id {spec.run_id!r}", details="letters, digits, '_', '.', '-'")
        workspace = _check_name(spec.workspace)
        job_id = run_job_id(s, spec.run_id)
        image = self._check_image(spec.image or s.default_image)
        task = run_task(spec)
        cpu, memory_mb, disk_mb, gpu = self._resources(spec.resources)
        if not (isinstance(spec.retries, int) and 0 <= spec.retries <= 10):
            raise InvalidArgument(f"retries must be an integer from 0 to 10, got {spec.retries!r}")
        if not (isinstance(spec.timeout, (int, float)) and 1 <= spec.timeout <= 7 * 86400):
            raise InvalidArgument(f"timeout must be 1 s to 7 days, got {spec.timeout!r}")
        snapshot_volume = None
        if spec.snapshot_volume:
            snapshot_volume = self._check_volume(
                VolumeSettings(
                    type=spec.snapshot_volume_type,
                    source=spec.snapshot_volume,
                    access_mode="multi-node-reader-only",
                    attachment_mode="file-system",
                ),
            )
        env_cache = self._check_volume(s.env_cache_volume) if s.env_cache_volume else None
        env = dict(task.env)
        if env_cache is not None:
            env["FETCHML_ENV_CACHE"] = ENV_CACHE_MOUNT
        snapshot_dir = SNAPSHOT_MOUNT if snapshot_volume else "."
        if spec.snapshot_path:
            snapshot_dir += "/" + _check_rel_path("snapshot_path", spec.snapshot_path)
        meta = {
            "fetchml_kind": "run",
            "fetchml_run_id": spec.run_id,
            "fetchml_workspace": workspace,
            "fetchml_owner": _check_meta("owner", spec.owner),
            "fetchml_experiment": _check_meta("experiment_id", spec.experiment_id),
            "fetchml_timeout": str(int(spec.timeout)),
        }
        context = {
            **self._placement(),
            **_cpu_fields(cpu, s),
            **self._gpu_fields(gpu, spec.resources.gpu_type, gpu_types),
            "job_id": job_id,
            "meta": meta,
            "image": image,
            "snapshot_volume": snapshot_volume,
            "snapshot_mount": SNAPSHOT_MOUNT,
            "snapshot_dir": snapshot_dir,
            "env_cache_volume": env_cache,
            "env_cache_mount": ENV_CACHE_MOUNT,
            **self._data_volume(),
            "launcher": RUN_LAUNCHER,
            "command": task.command,
            "retries": spec.retries,
            "disk_mb": disk_mb,
            "memory_mb": memory_mb,
            "env": env,
            "parameters_json": task.parameters_json,
            "no_template_left": _LITERAL_LEFT,
            "no_template_right": _LITERAL_RIGHT,
        }
        return self._render("experiment-run", context)

    # -- the agent itself ------------------------------------------------------------------

    def agent(self, req: AgentJobRequest) -> dict[str, Any]:
        """Validate ``req`` and return the ``{"Job": ...}`` dict of the agent's service job.

        The agent's image and data volume come from ``req``, else ``nomad.agent_job``; they are
        checked for syntax only: ``allowed_images`` and ``allowed_host_volumes`` say what
        *workspaces* may use, and rendering the agent's own job must not mean loosening them."""
        s = self.settings
        own = s.agent_job
        job_id = f"{s.job_prefix}{_check_name(req.job_name)}"
        image = req.image if req.image is not None else own.image
        if not isinstance(image, str) or not _IMAGE.match(image):
            raise InvalidArgument(f"invalid image reference {image!r}", details="nomad.agent_job.image or --image")
        volume = req.data_volume if req.data_volume is not None else own.data_volume
        if not isinstance(volume, str) or not _VOLUME.match(volume):
            raise InvalidArgument(f"invalid volume name {volume!r}", details="nomad.agent_job.data_volume or --data-volume")
        port = req.port if req.port is not None else own.port
        if isinstance(port, bool) or not (isinstance(port, int) and 1 <= port <= 65535):
            raise InvalidArgument(f"port must be 1-65535, got {port!r}")
        data_dir = req.data_dir if req.data_dir is not None else own.data_dir
        for what, path in (("data_dir", data_dir), ("health_path", req.health_path)):
            if not _HTTP_PATH.match(path):
                raise InvalidArgument(f"{what} must be an absolute path, got {path!r}")
        cpu_mhz = own.cpu_mhz if req.cpu_mhz is None else req.cpu_mhz
        memory_mb = own.memory_mb if req.memory_mb is None else req.memory_mb
        context = {
            **self._placement(),
            "job_id": job_id,
            "meta": {"fetchml_kind": "agent"},
            "image": image,
            "port": port,
            "data_volume": volume,
            "data_dir": data_dir,
            "health_path": req.health_path,
            "service_name": job_id,
            "config_var_path": secret_variable_path(job_id),
            "cpu_mhz": _check_int("cpu_mhz", cpu_mhz, 1_000_000, "MHz", "nomad.agent_job.cpu_mhz"),
            "memory_mb": _check_int("memory", memory_mb, 1 << 30, "MB", "nomad.agent_job.memory_mb"),
            "env": {},
        }
        return self._render("fetchml-agent", context)

    # -- shared pieces ---------------------------------------------------------------------

    def _render(self, template: str, context: dict[str, Any]) -> dict[str, Any]:
        text = self._templates[template].render(context)
        try:
            job: dict[str, Any] = json.loads(text)
        except json.JSONDecodeError as exc:  # a template bug, not a user error
            raise InvalidArgument(f"template {template} rendered invalid JSON: {exc}") from None
        return job

    def _placement(self) -> dict[str, Any]:
        s = self.settings
        return {
            "namespace": s.namespace,
            "region": s.region,
            "datacenters": list(s.datacenters),
            "node_pool": s.node_pool,
        }

    def _resources(self, res: Resources) -> tuple[float, int, int, int]:
        """Resources with the configured defaults filled in, checked against ``nomad.max``."""
        s = self.settings
        cpu = _check_cpu(s.defaults.cpu if res.cpu is None else res.cpu, s.max.cpu)
        memory_mb = _check_int(
            "memory",
            s.defaults.memory_mb if res.memory_mb is None else res.memory_mb,
            s.max.memory_mb,
            "MB",
            "nomad.max.memory_mb",
        )
        disk_mb = _check_int(
            "disk",
            s.defaults.disk_mb if res.disk_mb is None else res.disk_mb,
            s.max.disk_mb,
            "MB",
            "nomad.max.disk_mb",
        )
        return cpu, memory_mb, disk_mb, _check_gpu(res.gpu, s.max.gpu)

    def _gpu_fields(self, gpu: int, gpu_type: str | None = None, known: Iterable[str] | None = None) -> dict[str, Any]:
        g = self.settings.gpu
        by_type: list[dict[str, str]] = []
        if gpu and gpu_type:
            try:
                by_type = [gpu_type_constraint(gpu_type, known)[0]]
            except ValueError as exc:
                raise InvalidArgument(str(exc)) from None
        return {
            "gpu_count": gpu,
            "require_nvidia_runtime": g.require_nvidia_runtime,
            "gpu_constraints": by_type + [
                {"LTarget": c["attribute"], "Operand": c["operator"], "RTarget": c["value"]}
                for c in g.constraints
            ],
            "gpu_affinities": [
                {
                    "LTarget": c["attribute"],
                    "Operand": c["operator"],
                    "RTarget": c["value"],
                    "Weight": c["weight"],
                }
                for c in g.affinities
            ],
        }

    def _check_image(self, image: str) -> str:
        if not isinstance(image, str) or not _IMAGE.match(image):
            raise InvalidArgument(f"invalid image reference {image!r}")
        if not matches_any(image, self.settings.allowed_images):
            raise PolicyDenied(
                f"image {image!r} is not allowed on Nomad",
                details="allowed images (nomad.allowed_images): "
                + (", ".join(self.settings.allowed_images) or "none"),
            )
        return image

    def _workspace_volume(self, name: str, source: str | None) -> VolumeSettings | None:
        base = self.settings.workspace_volume
        if source is None and base is None:
            return None
        vol = base or VolumeSettings(type="host", source=source or "")
        resolved = (source or vol.source).replace("{name}", name)
        return self._check_volume(
            VolumeSettings(
                type=vol.type,
                source=resolved,
                access_mode=vol.access_mode,
                attachment_mode=vol.attachment_mode,
            )
        )

    def _data_volume(self) -> dict[str, Any]:
        """``nomad.data_volume``: mounted at ``nomad.data_mount`` in every workspace (read-write)
        and every run (read-only), for data larger than a run's snapshot takes."""
        vol = self.settings.data_volume
        return {"data_volume": self._check_volume(vol) if vol else None, "data_mount": self.settings.data_mount}

    def _check_volume(self, vol: VolumeSettings) -> VolumeSettings:
        if vol.type not in ("host", "csi"):
            raise InvalidArgument(f"volume type must be host or csi, got {vol.type!r}")
        if not _VOLUME.match(vol.source):
            raise InvalidArgument(f"invalid volume name {vol.source!r}")
        allowed, key = (
            (self.settings.allowed_host_volumes, "nomad.allowed_host_volumes")
            if vol.type == "host"
            else (self.settings.allowed_csi_volumes, "nomad.allowed_csi_volumes")
        )
        if not matches_any(vol.source, allowed):
            raise PolicyDenied(
                f"{vol.type} volume {vol.source!r} is not allowed on Nomad",
                details=f"allowed ({key}): " + (", ".join(allowed) or "none"),
            )
        return vol


def _cpu_fields(cpu: float, s: NomadSettings) -> dict[str, Any]:
    if s.cpu_mode == "cores" and float(cpu).is_integer():
        return {"cores": int(cpu), "cpu_mhz": None}
    return {"cores": None, "cpu_mhz": max(1, round(cpu * s.mhz_per_core))}


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidArgument(
            f"invalid workspace name {name!r}",
            details="lower-case letters, digits, '-', '_', '.'; at most 63 characters",
        )
    return name


def _check_cpu(cpu: float, maximum: float) -> float:
    if isinstance(cpu, bool) or not isinstance(cpu, (int, float)) or not (cpu > 0) or math.isinf(cpu):
        raise InvalidArgument(f"cpu must be a positive number of cores, got {cpu!r}")
    if cpu > maximum:
        raise InvalidArgument(f"cpu {cpu:g} is above the maximum of {maximum:g} cores (nomad.max.cpu)")
    return float(cpu)


def _check_int(what: str, value: int, maximum: int, unit: str, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidArgument(f"{what} must be a positive whole number of {unit}, got {value!r}")
    if value > maximum:
        raise InvalidArgument(f"{what} {value} {unit} is above the maximum of {maximum} {unit} ({key})")
    return value


def _check_gpu(gpu: int, maximum: int) -> int:
    if isinstance(gpu, bool) or not isinstance(gpu, int) or gpu < 0:
        raise InvalidArgument(f"gpu must be a whole number of GPUs, got {gpu!r}")
    if gpu > maximum:
        raise InvalidArgument(f"gpu {gpu} is above the maximum of {maximum} GPUs (nomad.max.gpu)")
    return gpu


def _check_key(what: str, key: str) -> str:
    if not isinstance(key, str) or not _ENV_KEY.match(key):
        raise InvalidArgument(f"invalid {what} name {key!r}", details="letters, digits and '_'")
    return key


def _check_meta(what: str, value: str) -> str:
    if not isinstance(value, str) or len(value) > _META_VALUE_MAX or any(ord(c) < 32 for c in value):
        raise InvalidArgument(f"invalid {what} {value!r}")
    return value


def _check_env(env: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in sorted(env.items()):
        _check_key("environment variable", key)
        if key in _RESERVED_ENV:
            raise InvalidArgument(f"environment variable {key} is set by the agent and cannot be overridden")
        if not isinstance(value, str):
            raise InvalidArgument(f"environment variable {key} must be a string, got {value!r}")
        out[key] = value
    return out


def _check_rel_path(what: str, path: str) -> str:
    if (
        not isinstance(path, str)
        or not _REL_PATH.match(path)
        or any(part in ("..", ".") for part in path.split("/"))
    ):
        raise InvalidArgument(f"{what} must be a relative path inside the snapshot, got {path!r}")
    return path
