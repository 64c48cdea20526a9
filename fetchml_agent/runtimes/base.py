"""The runtime interface: how the agent starts, finds, measures and stops a workspace's Jupyter.

Three implementations sit behind it: ``local`` (child processes), ``docker`` (containers) and
``nomad`` (service jobs). The contract, modelled on JupyterHub's Spawner:

``start(spec, progress)``
    Starts the workload and returns once JupyterLab answers ``GET /api/status`` (ready), with a
    :class:`Started` holding the URL base and the runtime *state*: a JSON-able dict with only
    what finds the workload again (a pid and start time; a container id; a Nomad job and alloc
    id). Progress lines (``placing``, ``pulling image``, ``starting``, ``ready``) go to
    ``progress``. On failure it cleans up what it began and raises a project error
    (:class:`~fetchml_agent.errors.BackendError`, ``Timeout``, ``InsufficientResources``,
    ``BackendUnavailable``); it never returns a half-started workload.

``poll(state)``
    Returns a :class:`Status`; ``running`` only when the workload exists and is alive. A workload
    that vanished is ``missing``; one that exited is ``stopped`` or ``failed`` (with a message).
    Backend errors are raised as project errors, never folded into a status.

``stop(state, grace)``
    Stops the workload with a ladder: SIGINT, then SIGTERM after ``grace`` seconds, then SIGKILL
    (or the backend's equivalent). Stopping what is already gone is not an error. Files stay.

``remove(spec, state)``
    Deletes what the workspace owns in the backend besides the workload (volume, network,
    firewall rules, job history). Called by ``delete`` after ``stop``. Idempotent.

``discover()``
    Every workload this agent's runtime is running, as ``(workspace_id, state)`` pairs, so the
    agent can adopt after a restart: nothing is started twice, nothing forgotten.

``stats(state)``, ``exec(state, argv, output)``
    Resource use now; run a command inside the workspace's environment (package installs,
    experiment runs), streaming output, returning the exit code.

The store persists ``state``; a runtime never touches the database. Blocking SDK calls go
through :func:`fetchml_agent.aio.run_blocking`.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..allocators import GpuAllocator, PortAllocator

__all__ = [
    "ExecResult",
    "Output",
    "Progress",
    "Resources",
    "Runtime",
    "Started",
    "Status",
    "WorkspaceSpec",
    "State",
]

State = dict[str, Any]
Progress = Callable[[str], Awaitable[None]]
Output = Callable[[bytes], Awaitable[None]]
WorkloadState = Literal["starting", "running", "stopped", "failed", "missing"]


@dataclass(frozen=True)
class Resources:
    """What a workspace asked for. ``None`` means no limit was asked for."""

    cpu: float | None = None
    memory_mb: int | None = None
    gpu: int = 0
    disk_mb: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"cpu": self.cpu, "memory_mb": self.memory_mb, "gpu": self.gpu, "disk_mb": self.disk_mb}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Resources:
        d = d or {}
        return cls(d.get("cpu"), d.get("memory_mb"), int(d.get("gpu") or 0), d.get("disk_mb"))


@dataclass(frozen=True)
class WorkspaceSpec:
    """Everything a runtime needs to start one workspace.

    ``token`` is Jupyter's access token; ``password_hash`` is a ``jupyter_server`` argon2/sha1
    hash, or ``None``. Neither may be written anywhere in clear except to the workload itself.
    ``env`` holds what the agent injects (package index URLs, the ``fetchml`` helper's settings).
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
    gpu_ids: tuple[int, ...] = ()  # host GPU indexes assigned by the agent (local runtime)


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


class Runtime(abc.ABC):
    """Base class of the three runtimes; see the module docstring for the contract."""

    name: str = "abstract"
    #: The host GPUs this runtime hands out (inventory set by :meth:`open`); ``None`` when the
    #: backend places GPUs itself (Nomad). The agent claims a workspace's or run's GPUs here and
    #: passes them as ``spec.gpu_ids``.
    gpus: GpuAllocator | None = None
    #: The host ports workspaces' servers listen on, when the agent picks them (local); ``None``
    #: when the backend assigns ports itself.
    ports: PortAllocator | None = None

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

    def gpu_capacity(self) -> int | None:
        """GPUs on this host that the agent assigns itself (0 when none); ``None`` when the
        backend places GPUs itself (Nomad), so the agent does not count them."""
        return None if self.gpus is None else self.gpus.capacity

    def describe(self) -> dict[str, Any]:
        """For ``ml status``: the runtime's name and anything an operator should see."""
        return {"name": self.name}


def workspace_dir(data_dir: Path, name: str) -> Path:
    """Default directory of a workspace's files under the agent's data directory."""
    return data_dir / "workspaces" / name
