"""The runtime contract: everything the service layer may ask of a runtime, and nothing else.

Three implementations sit behind it: ``local`` (child processes), ``docker`` (containers) and
``nomad`` (service and batch jobs). Like Nomad's task-driver interface, the contract has three
parts, and the service layer learns what a runtime can do only from them — never from its name,
never by probing for attributes:

1. **The required interface** (:class:`Runtime`), modelled on JupyterHub's Spawner:

   ``open()`` / ``close()``
       Connect to the backend once at agent start (:class:`~fetchml_agent.errors.BackendUnavailable`
       when it is down) and release clients at shutdown; workloads keep running.
   ``start(spec, progress)``
       Starts the workload and returns once JupyterLab answers ``GET /api/status`` (ready), with a
       :class:`Started` holding the URL base and the runtime *state*: a JSON-able dict with only
       what finds the workload again (a pid and start time; a container id; a Nomad job and alloc
       id). Progress lines (``placing``, ``pulling image``, ``starting``, ``ready``) go to
       ``progress``. On failure it cleans up what it began and raises a project error
       (:class:`~fetchml_agent.errors.BackendError`, ``Timeout``, ``InsufficientResources``,
       ``BackendUnavailable``); it never returns a half-started workload. The GPUs it uses are
       ``spec.gpu_ids`` (claimed by the agent from :attr:`Runtime.gpus`), the port ``spec.port``
       (from :attr:`Runtime.ports`) where the agent picks ports.
   ``poll(state)``
       Returns a :class:`Status`; ``running`` only when the workload exists and is alive; while it
       comes up, ``starting``. A workload that vanished is ``missing``; one that exited is
       ``stopped`` or ``failed`` (with a message). Backend errors are raised as project errors,
       never folded into a status.
   ``stop(state, grace)``
       Stops the workload with a ladder: SIGINT, then SIGTERM after ``grace`` seconds, then
       SIGKILL (or the backend's equivalent). Stopping what is already gone is not an error. Files
       stay. The agent passes :attr:`Runtime.stop_grace`.
   ``remove(spec, state)``
       Deletes what the workspace owns in the backend besides the workload (volume, network,
       firewall rules, job history). Called by ``delete`` after ``stop``. Idempotent.
   ``discover()``
       Every workload this agent's runtime is running, as ``(workspace_id, state)`` pairs, so the
       agent can adopt after a restart: nothing is started twice, nothing forgotten.
   ``stats(state)``, ``exec(spec, state, argv, ...)``
       Resource use now; run a command inside the workspace's environment (package installs, file
       transfer, git), streaming output, returning the exit code. ``stats`` answers a dict with
       what the runtime can measure, under these keys (the usage history reads them,
       :mod:`fetchml_agent.usage.sampler`): ``cpu_percent`` (100 = one core, over a short window)
       or ``cpu_seconds`` (cumulative); ``memory_bytes`` or ``memory_mb``; ``memory_limit_mb``;
       ``processes`` or ``pids``; ``gpus`` (``[{utilization_percent, memory_used_mb}]``);
       ``disk_bytes``; ``oom_kills`` (the workload's cumulative OOM-kill counter) and
       ``oom_killed`` (its last exit was an OOM kill); ``restarts`` (cumulative restarts of the
       workload by the backend itself).
   ``reset_environment(spec, state)``, ``describe()``, ``files_root(spec, state)``
       Discard installed packages (``reset --hard``); what ``ml status`` shows; where the
       workspace's files are as ``exec``'d commands see them.

2. **Declared capabilities** (:class:`Capabilities`): plain values each runtime declares as the
   class attribute ``capabilities``, read by the service layer (where files live, who places GPUs
   and runs, where the startup package scan can look).

3. **Optional features**, each a small interface a runtime implements or not:
   :class:`RunBackend` (experiment runs), :class:`PackageIndexReach` (how workspaces reach the
   agent's package index), :class:`ImageBuilder` (custom images), :class:`PackageInventory`
   (installed packages, read without running the workspace), :class:`GpuActivity` (how busy the
   GPUs of each workspace are: idle culling), :class:`WarmPool` (pre-started workspaces that a
   create claims: docs/warm-pool.md), :class:`DeviceInventory` (the cluster's GPUs per node and
   type) and :class:`StatusFeed` (changes reported as they happen). :func:`capability` returns the
   implementation or raises :class:`~fetchml_agent.errors.NotSupported` (``0x15``) naming the
   runtime and the feature, like Nomad's ``DriverExecTaskNotSupported``.

The store persists ``state``; a runtime never touches the database. Blocking SDK calls go
through :func:`fetchml_agent.aio.run_blocking`.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from ..allocators import GpuAllocator, PortAllocator
from ..errors import NotSupported

__all__ = [
    "RUN_ENVIRONMENT_REPORT",
    "RUN_LOCK",
    "RUN_LOCK_DIR",
    "ENVIRONMENT_VERSIONS",
    "VERSION_PROBE",
    "Capabilities",
    "DeviceInventory",
    "ExecResult",
    "GpuActivity",
    "ImageBuilder",
    "Inventory",
    "Output",
    "PackageCheck",
    "PackageIndexReach",
    "PackageInventory",
    "PoolMember",
    "Progress",
    "Resources",
    "RunBackend",
    "RunSpec",
    "RunState",
    "RunStatus",
    "Runtime",
    "Started",
    "State",
    "Status",
    "StatusChange",
    "StatusFeed",
    "WarmPool",
    "WorkspaceSpec",
    "version_mismatch",
    "capability",
    "find_capability",
    "workspace_dir",
]

State = dict[str, Any]
Progress = Callable[[str], Awaitable[None]]
Output = Callable[[bytes], Awaitable[None]]
WorkloadState = Literal["starting", "running", "stopped", "failed", "missing"]
RunState = Literal["queued", "running", "succeeded", "failed", "timed_out", "cancelled", "missing"]
#: Where the startup package scan can look: the workspace's own layer on this host before it
#: starts (``host``), the image before it starts (``image``), or only inside the running
#: workload (``workload``: a hit stops the workspace again).
ScanScope = Literal["host", "image", "workload"]
#: The package policy's check of build specs: raises to refuse (PolicyDenied, ApprovalRequired).
PackageCheck = Callable[[list[str]], "Awaitable[None] | None"]


@dataclass(frozen=True)
class Resources:
    """What a workspace asked for. ``None`` means no limit was asked for. ``gpu_type`` names the
    kind of GPU (a model or a MIG profile, ``--gpu-type``); only a runtime that places GPUs itself
    (``capabilities.places_gpus``) is given one."""

    cpu: float | None = None
    memory_mb: int | None = None
    gpu: int = 0
    disk_mb: int | None = None
    gpu_type: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"cpu": self.cpu, "memory_mb": self.memory_mb, "gpu": self.gpu, "disk_mb": self.disk_mb}
        if self.gpu_type:
            d["gpu_type"] = self.gpu_type
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Resources:
        d = d or {}
        return cls(d.get("cpu"), d.get("memory_mb"), int(d.get("gpu") or 0), d.get("disk_mb"), d.get("gpu_type") or None)


@dataclass(frozen=True)
class WorkspaceSpec:
    """Everything a runtime needs to start one workspace.

    ``token`` is Jupyter's access token; ``password_hash`` is a ``jupyter_server`` argon2/sha1
    hash, or ``None``. Neither may be written anywhere in clear except to the workload itself.
    ``env`` holds what the agent injects (package index URLs, the ``fetchml`` helper's settings).
    ``backing`` names the warm pool member the workspace was claimed from (:class:`WarmPool`): the
    backend resources it took over (a volume, a network) carry that name and not the workspace's;
    empty for a workspace that started cold.
    """

    id: str
    name: str
    owner: str
    path: Path
    token: str
    password_hash: str | None = None
    resources: Resources = field(default_factory=Resources)
    image: str | None = None
    port: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    gpu_ids: tuple[int, ...] = ()  # host GPU indexes claimed by the agent (Runtime.gpus)
    backing: str = ""


@dataclass(frozen=True)
class Started:
    """What a successful start returns."""

    state: State
    url: str  # base URL of JupyterLab as the user reaches it, e.g. http://127.0.0.1:8888/
    limits: dict[str, Any] = field(default_factory=dict)  # {"enforced": bool, "how"/"why": str}


@dataclass(frozen=True)
class Status:
    state: WorkloadState
    message: str = ""
    url: str | None = None


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    output: bytes = b""


#: ``environment:`` settings of a workspace config that name versions, and what they name (see
#: :meth:`Runtime.check_environment`).
ENVIRONMENT_VERSIONS = {"python_version": "Python", "jupyter_version": "JupyterLab"}
#: What prints those versions inside a workspace, as one JSON line: the Python a kernel runs
#: (``python3`` first on the workspace's PATH: its kernel environment) and the JupyterLab of the
#: server environment (the interpreter of ``jupyter-lab``'s script, asked when the kernel's
#: environment has no JupyterLab of its own, as in the project's image).
VERSION_PROBE = ["python3", "-c", """\
import json, platform, shutil, subprocess
from importlib.metadata import PackageNotFoundError, version
try:
    lab = version('jupyterlab')
except PackageNotFoundError:
    lab = None
    script = shutil.which('jupyter-lab')
    if script:
        with open(script, 'rb') as fh:
            line = fh.readline().decode(errors='replace')
        if line.startswith('#!'):
            ask = "from importlib.metadata import version; print(version('jupyterlab'))"
            lab = subprocess.run([*line[2:].split(), '-c', ask], capture_output=True, text=True).stdout.strip() or None
print(json.dumps({'python_version': platform.python_version(), 'jupyter_version': lab}))
"""]


def version_mismatch(settings: Mapping[str, Any], have: Mapping[str, str]) -> tuple[str, str, str] | None:
    """The first ``environment:`` version setting that ``have`` does not satisfy, as
    ``(key, wanted, had)``; ``3.11`` is satisfied by ``3.11.7``."""
    for key in ENVIRONMENT_VERSIONS:
        want = settings.get(key)
        if want is None:
            continue
        want, got = str(want).strip(), str(have.get(key) or "none")
        if not (got == want or got.startswith(want + ".")):
            return key, want, got
    return None


@dataclass(frozen=True)
class Capabilities:
    """What a runtime declares about itself; the service layer reads these, never the name."""

    #: The workspace's files are ``spec.path`` on the agent's host (local). Otherwise they live
    #: in the workload (a volume, an allocation) and the agent reaches them only through ``exec``.
    host_files: bool
    #: The backend places GPUs itself (Nomad's device requests): the agent claims none and
    #: counts none, and the runtime has no :attr:`Runtime.gpus`.
    places_gpus: bool
    #: The backend queues and places experiment runs itself (Nomad's scheduler): every queued
    #: run is submitted at once, the agent's worker pool does not apply.
    schedules_runs: bool
    #: Where the startup package scan can look (:data:`ScanScope`); ``host`` and ``image`` need
    #: :class:`PackageInventory`. ``host`` also means that what it lists is the workspace's own
    #: layer over a shared base (the local venv over the agent's environment, which JupyterLab
    #: needs), so ``ml jupyter packages`` can tell the two apart.
    package_scan: ScanScope


class Runtime(abc.ABC):
    """Base class of the runtimes; see the module docstring for the contract."""

    name: ClassVar[str] = "abstract"
    capabilities: ClassVar[Capabilities]
    #: The host GPUs this runtime hands out (inventory set by :meth:`open`); ``None`` when the
    #: backend places GPUs itself (``capabilities.places_gpus``). The agent claims a workspace's
    #: or run's GPUs here and passes them as ``spec.gpu_ids``.
    gpus: GpuAllocator | None = None
    #: The host ports workspaces' servers listen on, when the agent picks them (local); ``None``
    #: when the backend assigns ports itself.
    ports: PortAllocator | None = None
    #: Seconds between the rungs of :meth:`stop`'s SIGINT → SIGTERM → SIGKILL ladder.
    stop_grace: float = 5.0

    async def open(self) -> None:
        """Connect to the backend; called once at agent start. Raise BackendUnavailable if down."""

    async def close(self) -> None:
        """Release clients; workloads keep running."""

    @abc.abstractmethod
    async def start(self, spec: WorkspaceSpec, progress: Progress) -> Started: ...

    @abc.abstractmethod
    async def poll(self, state: State) -> Status: ...

    @abc.abstractmethod
    async def stop(self, state: State, grace: float = 5.0) -> None: ...

    async def remove(self, spec: WorkspaceSpec, state: State | None) -> None:
        """Delete backend resources owned by the workspace (default: nothing besides files)."""

    @abc.abstractmethod
    async def discover(self) -> list[tuple[str, State]]: ...

    @abc.abstractmethod
    async def stats(self, state: State) -> dict[str, Any]: ...

    @abc.abstractmethod
    async def exec(
        self,
        spec: WorkspaceSpec,
        state: State | None,
        argv: list[str],
        output: Output | None = None,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
        stdin: bytes | None = None,
    ) -> ExecResult:
        """Run ``argv`` in the workspace's environment (its Python first on PATH); ``stdin``, when
        given, is written to the command and closed (else the command's stdin is empty)."""

    async def reset_environment(self, spec: WorkspaceSpec, state: State | None) -> None:
        """Discard what was installed into the workspace's environment (``reset --hard``),
        keeping its files. Called while the workspace is stopped. Default: nothing to discard."""

    def files_root(self, spec: WorkspaceSpec, state: State | None) -> str:
        """The workspace's directory as commands run by :meth:`exec` see it (default: its path)."""
        return str(spec.path)

    def host_cpus(self) -> int | None:
        """CPUs of the host workspaces run on, when that is this host (local, docker); ``None``
        where the backend places them on nodes of its own (Nomad)."""
        return os.cpu_count()

    def gpu_capacity(self) -> int | None:
        """GPUs on this host that the agent assigns itself (0 when none); ``None`` when the
        backend places GPUs itself (Nomad), so the agent does not count them."""
        return None if self.gpus is None else self.gpus.capacity

    def describe(self) -> dict[str, Any]:
        """For ``ml status``: the runtime's name and anything an operator should see."""
        return {"name": self.name}

    def check_environment(self, image: str | None, settings: Mapping[str, Any]) -> bool:
        """Whether a new workspace's ``image`` and ``environment:`` version settings
        (:data:`ENVIRONMENT_VERSIONS`) can be honoured here: raises
        :class:`~fetchml_agent.errors.NotSupported` for what cannot; returns True when the versions
        are the image's, to be read inside the started workspace (:data:`VERSION_PROBE`). Default:
        image runtimes."""
        return any(settings.get(k) is not None for k in ENVIRONMENT_VERSIONS)


# -- optional features ----------------------------------------------------------------------------


class _Feature:
    """An optional part of the contract: ``feature`` and ``hint`` word the NotSupported error."""

    feature: ClassVar[str] = ""
    hint: ClassVar[str] = ""


C = TypeVar("C", bound=_Feature)


def capability(runtime: Runtime, kind: type[C]) -> C:
    """``runtime`` as the optional feature ``kind`` (:class:`RunBackend`, ...), or
    :class:`NotSupported` (0x15) naming the runtime and the feature."""
    found = find_capability(runtime, kind)
    if found is None:
        raise NotSupported(f"the {runtime.name} runtime cannot {kind.feature}", kind.hint)
    return found


def find_capability(runtime: Runtime, kind: type[C]) -> C | None:
    """``runtime`` as the optional feature ``kind``, or ``None`` where the caller has a fallback."""
    return runtime if isinstance(runtime, kind) else None


@dataclass(frozen=True)
class RunSpec:
    """One experiment run, as every :class:`RunBackend` receives it.

    ``notebook`` (a ``.ipynb`` run by papermill, or with ``kind="script"`` a ``.py`` run by
    ``python3``) is relative to the snapshot directory: ``snapshot_path`` inside the volume
    ``snapshot_volume`` (a host volume name or CSI volume ID, mounted read-only, for container
    backends) or the ``work/`` directory of ``run_dir`` (the run's directory on the agent's host,
    holding ``job.json``, where the local backend runs it). ``timeout`` (seconds) bounds the run;
    ``retries`` is how often a failed run is tried again. ``kernel`` and ``language`` are papermill's
    (``None``: the notebook's own). ``gpu_ids`` are the host GPUs the agent
    claimed for it (none where the backend places GPUs). ``workspace_spec`` and
    ``workspace_state`` are the workspace's, for a backend that runs the run in the workspace's
    own environment (local); ``warm_runner_idle_s`` is how long that backend keeps a warm runner
    (papermill imported, forking runs on request) waiting for the next run (0: none).
    """

    run_id: str
    workspace: str
    notebook: str
    owner: str = ""
    experiment_id: str = ""
    image: str | None = None
    snapshot_volume: str | None = None
    snapshot_volume_type: str = "host"
    snapshot_path: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)
    timeout: float = 3600.0
    retries: int = 0
    resources: Resources = field(default_factory=Resources)
    env: Mapping[str, str] = field(default_factory=dict)
    kind: str = "notebook"
    kernel: str | None = None
    language: str | None = None
    gpu_ids: tuple[int, ...] = ()
    run_dir: str = ""
    workspace_spec: WorkspaceSpec | None = None
    workspace_state: State | None = None
    warm_runner_idle_s: float = 0.0


@dataclass(frozen=True)
class RunStatus:
    """Where an experiment run stands. ``exit_code`` is the run's, when it ended; ``result`` is
    the run's own result document when the backend's runner wrote one (the local runner's
    ``result.json``: attempts, error with its cell, peak memory), else ``None`` and the agent
    words the result from the status."""

    state: RunState
    message: str = ""
    alloc_id: str | None = None
    exit_code: int | None = None
    result: dict[str, Any] | None = None
    peak_memory_bytes: int | None = None  # the most memory the run was seen using, where the backend samples it


#: A run's working directory holds the workspace's package lock at RUN_LOCK_DIR/RUN_LOCK (hidden: never
#: a source, never synced); the run's launcher writes RUN_ENVIRONMENT_REPORT, which a backend brings
#: back into the run's directory with its results (fetchml_agent/experiments/environment.py).
RUN_LOCK_DIR = ".fetchml"
RUN_LOCK = "environment.lock"
RUN_ENVIRONMENT_REPORT = "environment.json"


class RunBackend(_Feature, abc.ABC):
    """Executes experiment runs: submit, follow, fetch results, cancel, forget, recover.

    The agent calls, in order: :meth:`submit_run` (returns the run's *state*, JSON-able, which
    the agent keeps in the run's directory), then :meth:`run_status` and :meth:`wait_run` until
    the run is neither ``queued`` nor ``running``, then :meth:`fetch_run_outputs` (into the run's
    directory: ``output.ipynb``, ``metrics.jsonl``, ``work/outputs/``) and :meth:`purge_run`.
    :meth:`cancel_run` may come at any time. After an agent restart, :meth:`recover_run` turns a
    stored state back into one to follow (``None``: the run was never started).
    """

    feature = "run experiments"
    hint = "experiment runs need a runtime that executes them (local, docker, nomad)"
    #: Runs start from the workspace's image, not its environment: the run's launcher installs the
    #: workspace's packages from the lock queued with the snapshot (fetchml_agent/experiments/environment.py).
    rebuilds_environment = False

    @abc.abstractmethod
    def run_job_id(self, run_id: str) -> str:
        """The backend's name for a run (a job ID, a container name), known before it is submitted."""

    @abc.abstractmethod
    def run_snapshot_location(self, experiments_root: Path) -> tuple[str, str, Path] | None:
        """Where runs read their snapshots: ``(volume, volume type, its root on the agent's
        host)``; ``None`` when none is configured (runs are then refused when queued)."""

    @abc.abstractmethod
    async def submit_run(self, spec: RunSpec, progress: Progress | None = None) -> State:
        """Start (or queue with the backend) a run; return its state. Raises project errors;
        leaves nothing behind when it raises."""

    @abc.abstractmethod
    async def run_status(self, state: State) -> RunStatus:
        """Where the run stands now; a run past its timeout is stopped and ``timed_out``."""

    @abc.abstractmethod
    async def wait_run(self, state: State, index: int, wait: float) -> int:
        """Block until the run may have changed (or ``wait`` seconds pass); return the index to
        pass next time (0 the first time: returns at once)."""

    @abc.abstractmethod
    async def fetch_run_outputs(self, state: State, dest: Path) -> list[str]:
        """Copy the run's results into ``dest`` (the run's directory); return the paths written.
        Raises :class:`~fetchml_agent.errors.NotFound` when they are gone."""

    @abc.abstractmethod
    async def cancel_run(self, state: State, grace: float = 5.0) -> None:
        """Stop the run (politely, then by force after ``grace`` seconds where the backend lets
        the agent choose); its results stay until purged."""

    @abc.abstractmethod
    async def purge_run(self, state: State) -> None:
        """Forget the run in the backend (its job, container, task directories)."""

    async def recover_run(self, state: State) -> State | None:
        """After an agent restart: the stored state, completed from the backend's own records,
        to follow again; ``None`` when the run was never started. Default: the state as stored."""
        return state


class PackageIndexReach(_Feature, abc.ABC):
    """Workspaces that do not share the agent's loopback reach its package index elsewhere."""

    feature = "serve the package index to its workspaces at another address"

    @property
    @abc.abstractmethod
    def index(self) -> tuple[str, int] | None:
        """The address and port of this host where the agent also serves only the package index
        (an index-only listener binds there); ``None`` when no extra listener is needed."""

    @abc.abstractmethod
    def index_base_url(self, scheme: str) -> str | None:
        """The agent's base URL as workspaces reach it (``scheme`` is the agent's own, http or
        https); ``None`` to fall back to agent.yaml ``public_url``, else the listen address."""


class ImageBuilder(_Feature, abc.ABC):
    """Builds custom workspace images (``ml jupyter build``)."""

    feature = "build images"
    hint = "ml jupyter build needs runtime: docker in agent.yaml (images are built by the Docker engine)"

    #: Bases ``ml jupyter build --base`` may name (``None``: any).
    allowed_bases: list[str] | None

    @abc.abstractmethod
    async def build_image(
        self,
        name: str,
        *,
        base: str,
        packages: Sequence[str],
        check_packages: PackageCheck,
        allowed_bases: Sequence[str] | None,
        progress: Progress,
        gpu_support: bool = False,
        index_url: str | None = None,
    ) -> str:
        """Build image ``name`` FROM ``base`` with ``packages`` pip-installed; return its tag.
        ``check_packages(specs)`` is the package policy; it raises to refuse, before any build."""


@dataclass(frozen=True)
class Inventory:
    """Python distributions a workspace holds, read without running anything in it."""

    packages: list[tuple[str, str]]  # (name, version)
    scope: str  # what was read, for messages: "workspace layer", "image fetchml/workspace:0.1.0"
    #: Of ``packages``, those the workspace installed itself, where the runtime tells them apart
    #: from a base it shares (the local kernel environment); ``None``: not told apart.
    own: list[tuple[str, str]] | None = None


class PackageInventory(_Feature, abc.ABC):
    """Lists a workspace's installed packages before it starts (the startup scan's ``host`` and
    ``image`` scopes)."""

    feature = "list a workspace's packages without starting it"

    @abc.abstractmethod
    async def inventory(self, spec: WorkspaceSpec) -> Inventory: ...


class GpuActivity(_Feature, abc.ABC):
    """How busy the GPUs of running workspaces are now, from their own processes (the idle
    culler's GPU signal: a workspace that computes on a GPU is not idle, one that only holds GPU
    memory is)."""

    feature = "measure the GPU utilization of a workspace's processes"

    @abc.abstractmethod
    async def gpu_utilization(self, states: Mapping[str, State]) -> dict[str, float]:
        """For the running workspaces ``states`` (workspace id → state): the utilization (percent
        of a GPU's streaming multiprocessors, summed over the workspace's processes on one GPU,
        the busiest of its GPUs) of each workspace whose processes use a GPU now. A workspace
        left out uses none. Raises :class:`~fetchml_agent.errors.BackendUnavailable` when it
        cannot be measured now (the caller then knows nothing, rather than "idle")."""


@dataclass(frozen=True)
class PoolMember:
    """One pre-started workspace of a warm pool, owned by nobody until it is claimed.

    ``id`` (``warm_<hex>``, a name no workspace can have; or, where
    :attr:`WarmPool.members_are_workspaces`, the id the claiming workspace takes) names its
    backend resources; ``spec``
    is what it was started with: the pool's image and resources, a server credential and a
    package index key of its own (the claimant takes both over), an environment without identity.
    ``state`` finds the workload, as :meth:`Runtime.start`'s state does.
    """

    id: str
    pool: str
    spec: WorkspaceSpec
    state: State
    url: str
    started_at: float


class WarmPool(_Feature, abc.ABC):
    """Pre-started workspaces (docs/warm-pool.md): :meth:`prepare_member` starts one for a pool
    (``spec.backing`` is the member's id), :meth:`claim_member` turns a ready one into a
    workspace's workload, :meth:`discard_member` removes one never claimed. A member is claimed
    at most once; nothing of one claimant is ever in another's."""

    feature = "keep warm pools of pre-started workspaces"
    hint = "warm_pool: needs the docker or local runtime"
    #: Whether a member can take GPUs when it is claimed; else a GPU profile's members hold theirs
    #: from their start (``hold_gpu``), or the pool is not kept.
    gpus_at_claim: ClassVar[bool] = False
    #: Whether a member's workload is named by its id and directory (the local runtime: its run
    #: directory, venv, cgroup and JupyterLab's root_dir): then a member is prepared under a fresh
    #: workspace id and a directory of its own, and the claiming workspace takes both (docker
    #: renames a container instead, and the workspace keeps its own).
    members_are_workspaces: ClassVar[bool] = False

    def pool_unavailable(self) -> str:
        """Why this runtime, as configured, keeps no members at all ("" when it does)."""
        return ""

    @abc.abstractmethod
    async def prepare_member(self, spec: WorkspaceSpec, progress: Progress) -> Started:
        """Start a member from ``spec`` (``backing`` set, ``owner`` empty); return once its
        JupyterLab answers, like :meth:`Runtime.start`. Cleans up and raises on failure."""

    @abc.abstractmethod
    async def claim_member(self, member: PoolMember, spec: WorkspaceSpec) -> Started:
        """Make the running ``member`` the workload of workspace ``spec`` (whose ``backing`` is
        the member's id, whose token is the member's credential). Fast: no process starts. Raises
        a project error when the member is gone or unusable (the caller then starts cold)."""

    @abc.abstractmethod
    async def discard_member(self, member_id: str, state: State | None) -> None:
        """Remove a member that was never claimed, with everything it owns. Idempotent."""

    @abc.abstractmethod
    async def list_members(self) -> dict[str, State]:
        """Every member this runtime still has, claimed or not, by id (after an agent restart:
        the agent discards those no workspace took)."""


class DeviceInventory(_Feature, abc.ABC):
    """The GPUs of the backend's nodes, as the backend fingerprints them (``ml status``)."""

    feature = "list its nodes' GPUs"

    @abc.abstractmethod
    async def device_inventory(self) -> dict[str, Any]:
        """``{"gpus": [row, ...], "note": str}``: one row per node and GPU type with ``node``,
        ``type`` (model or MIG device), ``total``, ``healthy`` and ``free`` (healthy and held by no
        live workload), plus what else the backend knows (``status``, ``eligible``,
        ``memory_mib``); ``note`` says what the counts could not see ("" when nothing)."""


@dataclass(frozen=True)
class StatusChange:
    """A workspace's workload changed in the backend: its status now (what :meth:`Runtime.poll`
    would answer), and the runtime state to keep when the workload moved (a rescheduled Nomad
    allocation: a new alloc id and URL), else ``None``."""

    workspace_id: str
    status: Status
    state: State | None = None


Deliver = Callable[[list[StatusChange], int], Awaitable[None]]


class StatusFeed(_Feature, abc.ABC):
    """The backend reports workload changes as they happen (Nomad's event stream), so the agent
    polls no workspace: one feed replaces a query per workspace."""

    feature = "report changes as they happen"

    #: Names the feed's position in the store (``runtime_cursors``), e.g. ``nomad:events``.
    feed_name: ClassVar[str] = ""

    @abc.abstractmethod
    async def follow_status(self, since: int, deliver: Deliver) -> None:
        """Run until cancelled, calling ``deliver(changes, position)`` in order for the changes
        of workspaces' workloads after position ``since`` (0: none processed yet), with the
        position to resume from; the agent keeps it and passes it back after a restart. Nothing is
        lost: after a gap (a reconnect, a feed that could not resume where asked) the runtime
        compares the backend's current state with what it delivered and delivers what differs;
        a change may come twice, so applying one is idempotent. Never raises but
        ``CancelledError``: outages are retried, and a backend that refuses the feed is followed
        another way (Nomad: blocking queries)."""

    @abc.abstractmethod
    def feed_info(self) -> dict[str, Any]:
        """For ``ml status``: ``mode`` (how the backend is followed now), ``position``, counters."""


def workspace_dir(data_dir: Path, name: str) -> Path:
    """Default directory of a workspace's files under the agent's data directory."""
    return data_dir / "workspaces" / name
