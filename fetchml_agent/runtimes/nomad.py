"""The ``nomad`` runtime: each workspace is a Nomad service job, each experiment run a batch job.

Implements :class:`~fetchml_agent.runtimes.base.Runtime` over Nomad's HTTP API (python-nomad via
:class:`~fetchml_agent.nomad.client.NomadClient`, the exec WebSocket via
:func:`~fetchml_agent.nomad.exec.alloc_exec`).

Lifecycle of a workspace:

``start``
    validate and render the ``jupyter-workspace`` job (refusing disallowed images, volumes and
    resources before anything reaches Nomad), write Jupyter's token/password hash to the Nomad
    Variable ``nomad/jobs/<job>`` (never into the job spec) and register the job, both at once
    (the task's template waits for the Variable), then follow the evaluation and the allocation
    with blocking queries, reporting ``placing``, ``pulling image``, ``starting`` and ``ready``.
    Each phase has its own deadline: ``start_timeout`` for placement, ``pull_timeout`` from the
    first "Downloading image" event, ``start_timeout`` again from the task's start until Jupyter
    answers ``GET /api/status`` with the workspace token at the allocation's address and port.
    A job Nomad rejects raises :class:`InvalidArgument` with the messages of Nomad's
    ``/v1/validate/job`` (asked only then). Placement failures raise
    :class:`InsufficientResources` naming the cause (no node with a free GPU, not enough memory,
    port conflict, a volume no node has); an image that cannot be pulled raises
    :class:`BackendError`; a deadline raises :class:`Timeout`. On any failure the job is purged
    and the Variable deleted.
``stop``
    deregisters the job (Nomad sends the task's KillSignal, SIGTERM, then SIGKILL after
    KillTimeout) and waits for the allocation to end; the Variable is deleted.
``remove``
    purges the job and deletes the Variable. ``restart`` restarts the allocation in place.
``discover``
    lists jobs named ``<job_prefix>ws-*`` whose meta says ``fetchml_kind=workspace`` and returns
    their states, so a new agent process adopts what runs.

Runtime state (what the store persists): ``{"job_id", "alloc_id", "eval_id", "namespace", "url",
"node_id", "memory_mb"}``.

Package installs (``exec``) run inside the allocation; pip there reaches the agent's package
index at :meth:`NomadRuntime.index_base_url` (``nomad.agent_url``, or the index-only listener
``nomad.index``), never the agent's loopback.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import shlex
import time
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from fetchml_agent.errors import (
    BackendError,
    FetchmlError,
    InsufficientResources,
    InvalidArgument,
    InvalidState,
    NotFound,
    Timeout,
)
from fetchml_agent.nomad.client import NomadClient
from fetchml_agent.nomad.exec import alloc_exec
from fetchml_agent.nomad.render import (
    JobRenderer,
    WorkspaceJobRequest,
    jupyter_secret_items,
    run_job_id,
    secret_variable_path,
    workspace_job_id,
)
from fetchml_agent.nomad.schema import NomadSettings
from fetchml_agent.runtimes.base import (
    Capabilities,
    ExecResult,
    Output,
    PackageIndexReach,
    Progress,
    RunBackend,
    RunSpec,
    RunState,
    RunStatus,
    Runtime,
    Started,
    State,
    Status,
    WorkspaceSpec,
)

if TYPE_CHECKING:
    from fetchml_agent.settings import AgentConfig

__all__ = ["NomadRuntime", "placement_cause"]

log = logging.getLogger(__name__)

WORKSPACE_TASK = "jupyter"
RUN_TASK = "run"
_TERMINAL = {"complete", "failed", "lost"}
_MAX_WAIT = 30.0
_MAX_OUTPUT_BYTES = 1 << 30
# Seconds an exec session outlives its command's own ``timeout`` (which runs in the container):
# time for the kill and for the exit frame to come back.
_EXEC_GRACE = 15.0


async def _no_progress(_line: str) -> None:
    return None


def placement_cause(failed: Mapping[str, Any]) -> str:
    """A sentence explaining Nomad's ``FailedTGAllocs`` (one ``AllocMetric`` per task group)."""
    parts: list[str] = []
    for metric in failed.values():
        evaluated = int(metric.get("NodesEvaluated") or 0)
        if evaluated == 0:
            available = metric.get("NodesAvailable") or {}
            parts.append(
                "no client node is ready in the job's datacenters and node pool"
                + (
                    f" (available: {', '.join(f'{k}={v}' for k, v in available.items())})"
                    if available
                    else ""
                )
            )
            continue
        for reason, count in (metric.get("ConstraintFiltered") or {}).items():
            if reason == "missing devices":
                text = "no node has a GPU matching the request (nvidia/gpu)"
            elif reason == "missing compatible host volumes":
                text = "no node has the workspace's host volume"
            elif reason == "missing drivers":
                text = "no node runs a healthy docker driver"
            else:
                text = f"constraint not met: {reason}"
            parts.append(f"{text} ({count} of {evaluated} nodes)")
        for dim, count in (metric.get("DimensionExhausted") or {}).items():
            if dim.startswith("devices"):
                text = "no node with a free GPU"
            elif dim in ("memory", "cpu", "cores", "disk"):
                text = f"not enough free {dim}"
            elif dim.startswith("network"):
                text = f"port conflict ({dim})"
            else:
                text = f"exhausted: {dim}"
            parts.append(f"{text} ({count} of {evaluated} nodes)")
        if not (metric.get("ConstraintFiltered") or metric.get("DimensionExhausted")):
            parts.append(f"{evaluated} nodes evaluated, none fits")
    return "; ".join(dict.fromkeys(parts)) or "Nomad found no node for the job"


def _event_text(event: Mapping[str, Any]) -> str:
    return str(
        event.get("DisplayMessage") or event.get("DriverError") or event.get("Message") or event.get("Type")
    )


def _task_cause(alloc: Mapping[str, Any], task: str) -> str:
    """The most telling recent event of a task: why it failed or what it waits for."""
    state = (alloc.get("TaskStates") or {}).get(task) or {}
    events = state.get("Events") or []
    for event in reversed(events):
        if event.get("FailsTask") or event.get("Type") in (
            "Driver Failure",
            "Setup Failure",
            "Failed Validation",
        ):
            return _event_text(event)
    for event in reversed(events):
        if event.get("Type") in ("Terminated", "Template", "Killing", "Restarting"):
            return _event_text(event)
    return str(alloc.get("ClientDescription") or alloc.get("DesiredDescription") or alloc.get("ClientStatus"))


def _current_alloc(allocs: list[dict[str, Any]], eval_id: str | None = None) -> dict[str, Any] | None:
    """The allocation that matters: the one our evaluation placed, else the newest wanted one."""
    if eval_id:
        mine = [a for a in allocs if a.get("EvalID") == eval_id]
        if mine:
            return max(mine, key=lambda a: a.get("CreateIndex", 0))
    wanted = [a for a in allocs if a.get("DesiredStatus") == "run"]
    pool = wanted or allocs
    return max(pool, key=lambda a: a.get("CreateIndex", 0)) if pool else None


def _is_loopback(host: str) -> bool:
    """True for loopback addresses, ``localhost`` and wildcards (a wildcard listen address is given
    to workspaces as 127.0.0.1)."""
    if host in ("", "0.0.0.0", "::") or host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _url_from_ports(ports: list[dict[str, Any]] | None, label: str = "http") -> str | None:
    for port in ports or []:
        if port.get("Label") == label and port.get("Value"):
            host = port.get("HostIP") or "127.0.0.1"
            if ":" in host:
                host = f"[{host}]"
            return f"http://{host}:{port['Value']}/"
    return None


class NomadRuntime(Runtime, RunBackend, PackageIndexReach):
    """Workspaces as Nomad service jobs; see the module docstring for the contract."""

    name = "nomad"
    # Nomad places GPUs (device requests) and experiment runs (its scheduler) itself; the
    # workspace's files live in the allocation; the startup scan can only look inside it.
    capabilities = Capabilities(host_files=False, places_gpus=True, schedules_runs=True, package_scan="workload")

    def __init__(
        self,
        settings: NomadSettings | Mapping[str, Any],
        probe_timeout: float = 3.0,
        agent_config: AgentConfig | None = None,
    ) -> None:
        self.settings = (
            settings if isinstance(settings, NomadSettings) else NomadSettings.from_config(settings)
        )
        self.renderer = JobRenderer(self.settings)
        self.probe_timeout = probe_timeout
        self.agent_config = agent_config
        self._client: NomadClient | None = None
        self._http: httpx.AsyncClient | None = None
        self._gpus = 0

    @classmethod
    def from_config(cls, config: AgentConfig) -> NomadRuntime:
        """From agent.yaml: its ``nomad:`` section, and the listen address and ``public_url`` (to
        warn at :meth:`open` when workspaces would be given a loopback package index)."""
        return cls(config.section("nomad"), agent_config=config)

    # -- plumbing --------------------------------------------------------------------------

    @property
    def client(self) -> NomadClient:
        if self._client is None:
            self._client = NomadClient(self.settings)
        return self._client

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(trust_env=False, timeout=self.probe_timeout)
        return self._http

    async def open(self) -> None:
        """Check that Nomad answers (BackendUnavailable otherwise) and count its GPUs; warn once
        when workspaces would get a package index URL they cannot reach (:meth:`index_warning`)."""
        await self.client.leader()
        await self._refresh_gpus()
        warning = self.index_warning()
        if warning:
            log.warning("%s", warning)

    @property
    def index(self) -> tuple[str, int] | None:
        """``nomad.index``: the address and port of this host where the agent also serves only the
        package index, for allocations (the server's index-only listener binds there, see
        :mod:`fetchml_agent.server.index_listener`); ``None`` when not configured."""
        return self.settings.index

    def index_base_url(self, scheme: str) -> str | None:
        """The agent's base URL as allocations reach it: ``nomad.agent_url``, else
        ``http(s)://`` :attr:`index`. ``None`` when neither is set: the packages service then uses
        agent.yaml ``public_url``, else the listen address."""
        if self.settings.agent_url:
            return self.settings.agent_url
        if self.settings.index:
            host, port = self.settings.index
            return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"
        return None

    def index_warning(self) -> str | None:
        """Why workspaces on other nodes will not reach the package index, or ``None``: neither
        ``nomad.agent_url`` nor ``nomad.index`` is set and the fallback (``public_url``, else the
        listen address, a wildcard meaning 127.0.0.1) is a loopback address. A one-node cluster
        whose tasks share the agent's host may ignore it."""
        cfg = self.agent_config
        if cfg is None or self.settings.agent_url or self.settings.index:
            return None
        public = cfg.raw.get("public_url")
        host = (urlsplit(public).hostname or "") if public else cfg.host
        if not _is_loopback(host):
            return None
        shown_host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else f"[{host}]" if ":" in host else host
        shown = public or f"{cfg.scheme}://{shown_host}:{cfg.port}"
        return (
            f"workspaces on other Nomad nodes cannot reach the agent's package index: they would be "
            f"given {shown}, a loopback address, so pip installs in them fail; set nomad.agent_url to "
            "the agent's URL as allocations reach it, or nomad.index to an address of this host for an "
            "index-only listener (docs/nomad.md, 'Packages')"
        )

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def describe(self) -> dict[str, Any]:
        s = self.settings
        return {
            "name": self.name,
            "address": s.address,
            "namespace": s.namespace,
            "region": s.region,
            "datacenters": list(s.datacenters),
            "node_pool": s.node_pool,
            "gpus": self._gpus,
        }

    async def _refresh_gpus(self) -> None:
        try:
            nodes = await self.client.list_nodes()
        except FetchmlError as exc:  # a token without node:read still runs workspaces
            log.warning("cannot count Nomad GPUs: %s", exc)
            return
        total = 0
        for node in nodes:
            if node.get("Status") != "ready" or node.get("NodePool", "default") != self.settings.node_pool:
                continue
            for dev in ((node.get("NodeResources") or {}).get("Devices")) or []:
                if dev.get("Vendor") == "nvidia" and dev.get("Type") == "gpu":
                    total += sum(1 for i in dev.get("Instances") or [] if i.get("Healthy"))
        self._gpus = total

    async def _cleanup(self, job_id: str, purge_job: bool = True) -> None:
        """Purge a job (unless ``purge_job`` is false) and delete its secret Variable; never
        raises (the original error matters more)."""
        try:
            if purge_job:
                await self.client.deregister_job(job_id, purge=True)
        except FetchmlError as exc:
            log.warning("cleanup of Nomad job %s incomplete: %s", job_id, exc)
        try:
            await self.client.delete_variable(secret_variable_path(job_id))
        except FetchmlError as exc:
            log.warning("cleanup of Nomad job %s incomplete: %s", job_id, exc)

    @staticmethod
    def _assert_no_secret(job: dict[str, Any], *secrets: str | None) -> None:
        text = json.dumps(job)
        for secret in secrets:
            if secret and len(secret) >= 8 and secret in text:
                raise BackendError(
                    "refusing to send a job spec that contains the workspace's secret to Nomad"
                )

    async def _register(self, job: dict[str, Any]) -> tuple[str, int]:
        """Register a job; return its evaluation's ID and create index.

        On rejection, asks ``/v1/validate/job`` for Nomad's own messages (InvalidArgument).
        """
        job_id = job["Job"]["ID"]
        try:
            answer = await self.client.register_job(job)
        except (BackendError, InvalidArgument) as exc:
            try:
                report = await self.client.validate_job(job)
            except FetchmlError:
                raise exc from None
            problems = report.get("ValidationErrors") or []
            if problems:
                raise InvalidArgument(
                    f"Nomad rejected job {job_id}: " + "; ".join(" ".join(str(p).split()) for p in problems),
                    details="the job template or its inputs are invalid for this Nomad version",
                ) from exc
            raise
        if answer.get("Warnings"):
            log.warning("Nomad warnings for job %s: %s", job_id, " ".join(str(answer["Warnings"]).split()))
        return str(answer.get("EvalID") or ""), int(answer.get("EvalCreateIndex") or 0)

    async def _wait_evaluation(
        self, eval_id: str, deadline: float, what: str, index: int = 0, blocked_ok: bool = False
    ) -> dict[str, Any]:
        """Block until the scheduler has processed ``eval_id`` (starting from its create index).

        Placement failures raise :class:`InsufficientResources`, except with ``blocked_ok`` when
        Nomad keeps a blocked evaluation and every failure is a node that is merely full
        (``NodesExhausted``): then the evaluation is returned and Nomad places it later."""
        while True:
            remaining = deadline - time.monotonic()
            ev, index = await self.client.get_evaluation(
                eval_id, index or None, min(_MAX_WAIT, max(0.1, remaining)) if index else None
            )
            status = ev.get("Status")
            if status in ("complete", "blocked"):
                break
            if status in ("failed", "canceled"):
                raise BackendError(
                    f"Nomad's scheduler failed for {what}: {ev.get('StatusDescription') or status}"
                )
            if remaining <= 0:
                raise Timeout(
                    f"Nomad did not schedule {what} within {self.settings.start_timeout:g} s",
                    details="check the Nomad servers (nomad.start_timeout)",
                )
        failed = ev.get("FailedTGAllocs") or {}
        if blocked_ok and failed and ev.get("BlockedEval") and all(
            int(m.get("NodesExhausted") or 0) > 0 for m in failed.values()
        ):
            return ev
        if failed:
            raise InsufficientResources(
                f"Nomad cannot place {what}: {placement_cause(ev['FailedTGAllocs'])}",
                details=f"evaluation {eval_id}",
            )
        return ev

    # -- start -----------------------------------------------------------------------------

    async def start(self, spec: WorkspaceSpec, progress: Progress | None = None) -> Started:
        """Start ``spec`` as a Nomad service job and return once Jupyter answers (see module doc)."""
        progress = progress or _no_progress
        job_id, eval_id, alloc, url = await self._launch(spec, progress)
        try:
            await self._wait_ready(alloc["ID"], url, spec.token, f"workspace {spec.name}")
            await progress("ready")
        except BaseException:
            await asyncio.shield(self._cleanup(job_id))
            raise
        task_res = ((alloc.get("AllocatedResources") or {}).get("Tasks") or {}).get(WORKSPACE_TASK) or {}
        state = {
            "job_id": job_id,
            "alloc_id": alloc["ID"],
            "eval_id": eval_id,
            "namespace": self.settings.namespace,
            "url": url,
            "node_id": alloc.get("NodeID"),
            "memory_mb": (task_res.get("Memory") or {}).get("MemoryMB"),
        }
        return Started(
            state=state,
            url=url,
            limits={
                "enforced": True,
                "how": "Nomad docker driver: cgroup cpu/memory limits and device reservation",
            },
        )

    async def _launch(self, spec: WorkspaceSpec, progress: Progress) -> tuple[str, str, dict[str, Any], str]:
        """:meth:`start` up to a running allocation with an address (Jupyter's readiness aside):
        render, write the secret Variable and register the job, follow the evaluation and the
        allocation. Returns ``(job_id, eval_id, full allocation, Jupyter's URL)``; on failure
        nothing of it stays in Nomad. This is the agent's own work per create, the part
        benchmarks/bench_nomad.py measures.
        """
        job = self.renderer.workspace(
            WorkspaceJobRequest(
                name=spec.name,
                workspace_id=spec.id,
                owner=spec.owner,
                image=spec.image,
                resources=spec.resources,
                env=spec.env,
                # the agent's own fetchml.* labels are the job's fetchml_* meta already
                labels={k: v for k, v in spec.labels.items() if not k.startswith("fetchml.")},
            )
        )
        self._assert_no_secret(job, spec.token, spec.password_hash)
        job_id = job["Job"]["ID"]
        what = f"workspace {spec.name}"
        eval_id, eval_index = await self._register_with_secret(
            job, jupyter_secret_items(spec.token, spec.password_hash)
        )
        try:
            await progress("placing")
            await self._wait_evaluation(
                eval_id, time.monotonic() + self.settings.start_timeout, what, eval_index
            )
            alloc = await self._follow_allocation(job_id, eval_id, WORKSPACE_TASK, progress, what)
            url = _url_from_ports(((alloc.get("AllocatedResources") or {}).get("Shared") or {}).get("Ports"))
            if url is None:
                raise BackendError(
                    f"Nomad allocated no http port for {what}", details=f"allocation {alloc['ID']}"
                )
        except BaseException:
            await asyncio.shield(self._cleanup(job_id))
            raise
        return job_id, eval_id, alloc, url

    async def _register_with_secret(self, job: dict[str, Any], items: dict[str, str]) -> tuple[str, int]:
        """Write the job's secret Variable and register the job at the same time.

        They need no order: Nomad's scheduler places a job without reading Variables, and the
        task's template blocks until ``nomad/jobs/<job>`` exists (Nomad shows "Missing:
        nomad.var.block(...)" meanwhile), so Jupyter never starts without its secret. When one
        of the two fails (or the caller is cancelled), the other is undone once both have
        landed: a job Nomad rejected leaves whatever job Nomad had under this ID and only our
        Variable goes; a Variable that could not be written purges the job just registered.
        Returns :meth:`_register`'s ``(eval_id, eval_index)``; raises the register error first.
        """
        job_id = job["Job"]["ID"]
        both = asyncio.gather(
            self.client.put_variable(secret_variable_path(job_id), items),
            self._register(job),
            return_exceptions=True,
        )
        try:
            written, registered = await asyncio.shield(both)
        except asyncio.CancelledError:
            await asyncio.shield(self._undo_register_with_secret(both, job_id))
            raise
        if isinstance(registered, BaseException) or isinstance(written, BaseException):
            await asyncio.shield(self._undo_register_with_secret(both, job_id))
            raise registered if isinstance(registered, BaseException) else written
        return registered

    async def _undo_register_with_secret(self, both: asyncio.Future[list[Any]], job_id: str) -> None:
        _written, registered = await both
        await self._cleanup(job_id, purge_job=not isinstance(registered, BaseException))

    async def _follow_allocation(
        self, job_id: str, eval_id: str, task: str, progress: Progress, what: str
    ) -> dict[str, Any]:
        """Follow the allocation of ``eval_id`` with blocking queries until its task runs,
        reporting ``pulling image`` and ``starting``; raise with Nomad's cause if it fails.

        The allocation is found in the job's allocation list, then that one allocation is read
        (blocking while it is pending), so what returns is the full running allocation, with
        its ports and resources.
        """
        s = self.settings
        deadline = time.monotonic() + s.start_timeout
        phase = "placing"
        index = 0
        alloc_id: str | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Timeout(*self._phase_timeout(phase, what))
            wait = min(_MAX_WAIT, remaining) if index else None
            if alloc_id is None:
                allocs, index = await self.client.job_allocations(job_id, index or None, wait)
                found = _current_alloc(allocs, eval_id)
                if found is None:
                    continue
                alloc, full, alloc_id = found, False, found["ID"]
            else:
                alloc, index = await self.client.get_allocation(alloc_id, index or None, wait)
                full = True
            events = ((alloc.get("TaskStates") or {}).get(task) or {}).get("Events") or []
            for event in events:
                kind = event.get("Type")
                if kind == "Driver" and "Downloading image" in _event_text(event) and phase == "placing":
                    phase = "pulling image"
                    deadline = time.monotonic() + s.pull_timeout
                    await progress("pulling image")
                elif kind == "Started" and phase != "starting":
                    phase = "starting"
                    deadline = time.monotonic() + s.start_timeout
                    await progress("starting")
                elif kind == "Driver Failure":
                    text = _event_text(event)
                    if "Failed to pull" in text or "pull" in text.lower():
                        raise BackendError(
                            f"the image for {what} could not be pulled: {text}",
                            details="check the image name, the registry and its credentials",
                        )
                    raise BackendError(f"the docker driver could not start {what}: {text}")
            status = alloc.get("ClientStatus")
            if status == "running":
                if full:
                    return alloc
                index = 0  # the list's stub has no ports: read the allocation itself, now
                continue
            if status in _TERMINAL or alloc.get("DesiredStatus") != "run":
                raise BackendError(
                    f"{what} stopped while starting: {_task_cause(alloc, task)}",
                    details=f"allocation {alloc['ID']} is {status}",
                )

    def _phase_timeout(self, phase: str, what: str) -> tuple[str, str]:
        s = self.settings
        if phase == "pulling image":
            return (
                f"the image for {what} was not pulled within {s.pull_timeout:g} s",
                "raise nomad.pull_timeout or pre-pull the image on the clients",
            )
        if phase == "starting":
            return (
                f"{what} started but Jupyter did not answer within {s.start_timeout:g} s",
                "see the task's logs in Nomad; raise nomad.start_timeout for slow images",
            )
        return (
            f"{what} did not start within {s.start_timeout:g} s",
            "the task may wait for its Nomad Variable or a host volume; check `nomad alloc status`",
        )

    async def _wait_ready(self, alloc_id: str, url: str, token: str, what: str) -> None:
        """Poll Jupyter's ``/api/status`` with the workspace token until it answers 200."""
        deadline = time.monotonic() + self.settings.start_timeout
        delay = 0.1
        next_check = time.monotonic() + 2.0
        while True:
            try:
                resp = await self.http.get(url + "api/status", headers={"Authorization": f"token {token}"})
                if resp.status_code == 200:
                    return
                if resp.status_code == 403:
                    raise BackendError(
                        f"Jupyter in {what} refused the workspace token",
                        details="the secrets file from the Nomad Variable was not applied",
                    )
            except httpx.HTTPError:
                pass
            now = time.monotonic()
            if now >= deadline:
                raise Timeout(*self._phase_timeout("starting", what))
            if now >= next_check:
                next_check = now + 2.0
                alloc, _ = await self.client.get_allocation(alloc_id)
                if alloc.get("ClientStatus") != "running" or alloc.get("DesiredStatus") != "run":
                    raise BackendError(
                        f"{what} stopped before Jupyter answered: {_task_cause(alloc, WORKSPACE_TASK)}"
                    )
            await asyncio.sleep(min(delay, max(0.0, deadline - now)))
            delay = min(1.0, delay * 1.5)

    # -- status ----------------------------------------------------------------------------

    def _status_of(
        self,
        state: State,
        job: Mapping[str, Any] | None,
        allocs: list[dict[str, Any]],
        url: str | None = None,
    ) -> Status:
        job_id = state.get("job_id", "?")
        if job is None:
            return Status("missing", f"Nomad has no job {job_id}")
        if job.get("Stop"):
            return Status("stopped", f"Nomad job {job_id} is stopped")
        alloc = _current_alloc(allocs)
        if alloc is None:
            return Status("starting", f"Nomad job {job_id} waits for placement")
        client_status = alloc.get("ClientStatus")
        if client_status == "running":
            return Status("running", url=url or state.get("url"))
        if client_status == "pending":
            return Status("starting", _task_cause(alloc, WORKSPACE_TASK))
        if client_status == "complete":
            return Status("stopped", _task_cause(alloc, WORKSPACE_TASK))
        return Status("failed", _task_cause(alloc, WORKSPACE_TASK))

    async def poll(self, state: State) -> Status:
        job_id = state["job_id"]
        job = await self.client.find_job(job_id)
        if job is None:
            return self._status_of(state, None, [])
        allocs, _ = await self.client.job_allocations(job_id)
        alloc = _current_alloc(allocs)
        url = state.get("url")
        if (
            alloc is not None
            and alloc.get("ID") != state.get("alloc_id")
            and alloc.get("ClientStatus") == "running"
        ):
            full, _ = await self.client.get_allocation(alloc["ID"])  # rescheduled: a new address
            url = (
                _url_from_ports(((full.get("AllocatedResources") or {}).get("Shared") or {}).get("Ports"))
                or url
            )
        return self._status_of(state, job, allocs, url)

    async def poll_many(self, states: list[State]) -> list[Status]:
        """Statuses of many workspaces with two requests (jobs list and allocations list).

        Messages are Nomad's allocation descriptions; :meth:`poll` gives a task's own cause.
        """
        prefix = f"{self.settings.job_prefix}ws-"
        jobs = {j["ID"]: j for j in await self.client.list_jobs(prefix)}
        allocs, _ = await self.client.list_allocations(
            filter_=f'JobID matches "^{prefix}"', resources=True, task_states=False
        )
        by_job: dict[str, list[dict[str, Any]]] = {}
        for a in allocs:
            by_job.setdefault(a["JobID"], []).append(a)
        out = []
        for state in states:
            mine = by_job.get(state["job_id"], [])
            cur = _current_alloc(mine)
            url = _url_from_ports(
                ((cur or {}).get("AllocatedResources") or {}).get("Shared", {}).get("Ports")
            )
            out.append(self._status_of(state, jobs.get(state["job_id"]), mine, url))
        return out

    # -- stop, restart, remove ---------------------------------------------------------------

    async def stop(self, state: State, grace: float = 5.0) -> None:
        """Deregister the job and wait (grace + the task's KillTimeout) for its allocation to end."""
        job_id = state["job_id"]
        await self.client.deregister_job(job_id)
        deadline = time.monotonic() + grace + 35.0
        index = 0
        while time.monotonic() < deadline:
            allocs, index = await self.client.job_allocations(
                job_id,
                index or None,
                min(_MAX_WAIT, max(0.1, deadline - time.monotonic())) if index else None,
            )
            if all(a.get("ClientStatus") in _TERMINAL for a in allocs):
                break
        else:
            log.warning("allocation of %s still running %g s after the stop request", job_id, grace + 35.0)
        await self.client.delete_variable(secret_variable_path(job_id))

    async def restart(self, state: State) -> None:
        """Restart the workspace's allocation in place (same node, same port, same files)."""
        alloc_id = state.get("alloc_id")
        if not alloc_id:
            raise InvalidState("the workspace has no Nomad allocation to restart")
        await self.client.restart_allocation(alloc_id)

    async def remove(self, spec: WorkspaceSpec, state: State | None) -> None:
        """Purge the workspace's job (its history) and delete its Variable. Idempotent."""
        job_id = (state or {}).get("job_id") or workspace_job_id(self.settings, spec.name)
        await self.client.deregister_job(job_id, purge=True)
        await self.client.delete_variable(secret_variable_path(job_id))

    # -- adoption --------------------------------------------------------------------------

    async def discover(self) -> list[tuple[str, State]]:
        """Workspaces this agent runs in Nomad (by job name prefix and meta), with their states."""
        prefix = f"{self.settings.job_prefix}ws-"
        stubs = await self.client.list_jobs(prefix)
        allocs, _ = await self.client.list_allocations(filter_=f'JobID matches "^{prefix}"', resources=True)
        by_job: dict[str, list[dict[str, Any]]] = {}
        for a in allocs:
            by_job.setdefault(a["JobID"], []).append(a)
        found: list[tuple[str, State]] = []
        for stub in stubs:
            if stub.get("Stop") or not stub["ID"].startswith(prefix):
                continue
            meta = stub.get("Meta")
            if meta is None and "Meta" not in stub:  # an older Nomad without ?meta=true
                meta = (await self.client.get_job(stub["ID"])).get("Meta")
            meta = meta or {}
            if meta.get("fetchml_kind") != "workspace":
                continue
            alloc = _current_alloc(by_job.get(stub["ID"], []))
            resources = (alloc or {}).get("AllocatedResources") or {}
            task_res = (resources.get("Tasks") or {}).get(WORKSPACE_TASK) or {}
            state = {
                "job_id": stub["ID"],
                "alloc_id": (alloc or {}).get("ID"),
                "eval_id": (alloc or {}).get("EvalID"),
                "namespace": stub.get("Namespace") or self.settings.namespace,
                "url": _url_from_ports((resources.get("Shared") or {}).get("Ports")),
                "node_id": (alloc or {}).get("NodeID"),
                "memory_mb": (task_res.get("Memory") or {}).get("MemoryMB"),
            }
            found.append(
                (meta.get("fetchml_workspace_id") or meta.get("fetchml_workspace") or stub["ID"], state)
            )
        await self._refresh_gpus()
        return found

    # -- stats and exec --------------------------------------------------------------------

    async def stats(self, state: State) -> dict[str, Any]:
        """CPU %, memory (cgroup ``Usage``, RSS where Usage is not measured) and GPU stats."""
        alloc_id = state.get("alloc_id")
        if not alloc_id:
            raise InvalidState("the workspace has no running Nomad allocation")
        raw = await self.client.allocation_stats(alloc_id)
        usage = raw.get("ResourceUsage") or {}
        mem = usage.get("MemoryStats") or {}
        measured = mem.get("Measured") or []
        memory = (
            int(mem.get("Usage") or 0)
            if ("Usage" in measured or mem.get("Usage"))
            else int(mem.get("RSS") or 0)
        )
        cpu = usage.get("CpuStats") or {}
        gpus = []
        for dev in usage.get("DeviceStats") or []:
            for dev_id, inst in (dev.get("InstanceStats") or {}).items():
                attrs = ((inst or {}).get("Stats") or {}).get("Attributes") or {}
                util = (attrs.get("GPU utilization") or {}).get("IntNumeratorVal")
                mstate = attrs.get("Memory state") or (inst or {}).get("Summary") or {}
                gpus.append(
                    {
                        "id": dev_id,
                        "name": dev.get("Name"),
                        "utilization_percent": util,
                        "memory_used_mb": mstate.get("IntNumeratorVal"),
                        "memory_total_mb": mstate.get("IntDenominatorVal"),
                        "temperature_c": (attrs.get("Temperature") or {}).get("IntNumeratorVal"),
                    }
                )
        return {
            "cpu_percent": round(float(cpu.get("Percent") or 0.0), 2),
            "memory_bytes": memory,
            "memory_mb": round(memory / 1048576, 1),
            "memory_limit_mb": state.get("memory_mb"),
            "gpus": gpus,
            "source": "nomad allocation stats",
        }

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
        """Run ``argv`` inside the workspace's task through Nomad's exec WebSocket.

        The command sees the task's environment (the job's ``Env``: the package index variables)
        plus ``env``; ``stdin``, when given, is sent to the command and closed. With ``timeout``
        it runs under ``timeout`` inside the container (Nomad does not stop an exec'd process
        when the session closes) and the session waits ``_EXEC_GRACE`` s more; past it
        :class:`Timeout`. An allocation replaced by a newer one (rescheduled) is found again.
        Raises :class:`InvalidState` when the workspace is not running, :class:`NotFound` when
        Nomad has no allocation for it any more, :class:`BackendUnavailable` when Nomad cannot
        be reached (see :func:`~fetchml_agent.nomad.exec.alloc_exec`).
        """
        alloc_id = (state or {}).get("alloc_id")
        if not state or not alloc_id:
            raise InvalidState(f"workspace {spec.name} is not running", f"start it first: ml jupyter restart {spec.name}")
        command = list(argv)
        if env:
            command = ["env", *(f"{k}={v}" for k, v in sorted(env.items())), *command]
        if timeout is not None:
            command = ["timeout", "--kill-after=5", f"{max(timeout, 0.1):g}", *command]
        session_timeout = None if timeout is None else timeout + _EXEC_GRACE
        began = time.monotonic()
        try:
            outcome = await alloc_exec(
                self.settings, alloc_id, WORKSPACE_TASK, command, output=output, stdin=stdin, timeout=session_timeout
            )
        except (NotFound, InvalidState) as exc:
            # Nothing ran. The allocation may have been replaced: use the job's running one.
            current = await self._running_alloc(state["job_id"]) if state.get("job_id") else None
            if current is None or current == alloc_id:
                raise type(exc)(
                    f"workspace {spec.name}: {exc.message}",
                    f"ml jupyter status {spec.name} shows what Nomad reports; "
                    f"ml jupyter restart {spec.name} starts it again",
                ) from exc
            outcome = await alloc_exec(
                self.settings, current, WORKSPACE_TASK, command, output=output, stdin=stdin, timeout=session_timeout
            )
        if timeout is not None and outcome.exit_code in (124, 137) and time.monotonic() - began >= timeout:
            raise Timeout(
                f"`{shlex.join(argv)}` did not finish within {timeout:g} s in workspace {spec.name}"
            )
        return ExecResult(exit_code=outcome.exit_code, output=outcome.output)

    async def _running_alloc(self, job_id: str) -> str | None:
        """The ID of the job's running allocation, or ``None`` (no job, nothing running)."""
        allocs, _ = await self.client.job_allocations(job_id)  # [] for a job Nomad does not know
        alloc = _current_alloc(allocs)
        if alloc is None or alloc.get("ClientStatus") != "running" or alloc.get("DesiredStatus") != "run":
            return None
        return str(alloc["ID"])

    # -- experiment runs as batch jobs ------------------------------------------------------

    def run_job_id(self, run_id: str) -> str:
        """The Nomad job ID a run gets (known before it is submitted)."""
        return run_job_id(self.settings, run_id)

    def run_snapshot_location(self, experiments_root: Path) -> tuple[str, str, Path] | None:
        """Where runs read their snapshots: ``(volume, type, its root on the agent's host)`` from
        ``snapshot_volume`` and ``snapshot_dir`` (default: the agent's experiments directory);
        ``None`` when no snapshot volume is configured."""
        vol = self.settings.snapshot_volume
        if vol is None:
            return None
        return vol.source, vol.type, Path(self.settings.snapshot_dir or experiments_root)

    def files_root(self, spec: WorkspaceSpec, state: State | None) -> str:
        """The workspace's directory inside its container (Jupyter's root_dir)."""
        return self.settings.workdir

    async def submit_run(self, spec: RunSpec, progress: Progress | None = None) -> State:
        """Submit an experiment run as a batch job and return once Nomad has evaluated it.

        Contract: validates and renders the ``experiment-run`` job (the same refusals as
        workspaces), registers it, and waits for its evaluation only (not for the run). When
        every node that could run it is busy (Nomad's ``NodesExhausted``), the job stays and
        Nomad's blocked evaluation places it once capacity frees: the state then carries
        ``"waiting"`` (why). When no node could ever run it (no node with that many GPUs, a
        volume no node has) it raises :class:`InsufficientResources` and the job is purged, so
        nothing stays queued in Nomad. :class:`InvalidArgument`/:class:`PolicyDenied` for bad
        input. Returns the run state to persist: ``{"job_id", "eval_id", "run_id", "namespace",
        "submitted_at" (epoch s), "timeout" (s), "waiting"}``; pass it to :meth:`run_status`,
        :meth:`wait_run`, :meth:`fetch_run_outputs` and :meth:`cancel_run`.
        """
        progress = progress or _no_progress
        job = self.renderer.run(spec)
        job_id = job["Job"]["ID"]
        eval_id, eval_index = await self._register(job)
        try:
            await progress("placing")
            ev = await self._wait_evaluation(
                eval_id, time.monotonic() + self.settings.start_timeout, f"run {spec.run_id}", eval_index,
                blocked_ok=True,
            )
        except BaseException:
            await asyncio.shield(self._cleanup(job_id))
            raise
        waiting = placement_cause(ev["FailedTGAllocs"]) if ev.get("FailedTGAllocs") else ""
        if waiting:
            await progress(f"waiting for capacity: {waiting}")
        return {
            "job_id": job_id,
            "eval_id": eval_id,
            "run_id": spec.run_id,
            "namespace": self.settings.namespace,
            "submitted_at": time.time(),
            "timeout": float(spec.timeout),
            "waiting": waiting,
        }

    async def wait_run(self, state: State, index: int, wait: float) -> int:
        """Block until the run's allocations change (or ``wait`` seconds pass); return the index
        to pass next time (0 the first time: returns at once)."""
        _, new_index = await self.client.job_allocations(state["job_id"], index or None, wait if index else None)
        return int(new_index or 0)

    async def run_status(self, state: State) -> RunStatus:
        """Where a run stands (two Nomad reads).

        ``queued`` until its allocation runs, ``running``, then ``succeeded`` (papermill exited 0)
        or ``failed`` (with the task's last event, e.g. ``Exit Code: 1``). A run past its
        ``timeout`` is stopped here and reported ``timed_out``; a run stopped otherwise is
        ``cancelled``; a job Nomad no longer has (purged, garbage-collected) is ``missing``.
        """
        job_id = state["job_id"]
        job = await self.client.find_job(job_id)
        if job is None:
            return RunStatus("missing", f"Nomad has no job {job_id}")
        allocs, _ = await self.client.job_allocations(job_id)
        alloc = _current_alloc(allocs)
        overdue = time.time() - float(state.get("submitted_at") or 0) > float(state.get("timeout") or 1e12)
        if alloc is not None:
            client_status = alloc.get("ClientStatus")
            exit_code = self._exit_code(alloc)
            if client_status == "complete" and exit_code == 0:
                return RunStatus("succeeded", "papermill finished", alloc["ID"], 0)
            if client_status in ("failed", "lost"):
                return RunStatus("failed", _task_cause(alloc, RUN_TASK), alloc["ID"], exit_code)
        if job.get("Stop"):
            state_name: RunState = "timed_out" if overdue else "cancelled"
            return RunStatus(state_name, f"Nomad job {job_id} was stopped", (alloc or {}).get("ID"))
        if alloc is None or alloc.get("ClientStatus") == "pending":
            return RunStatus(
                "queued",
                _task_cause(alloc, RUN_TASK) if alloc else "waiting for placement",
                (alloc or {}).get("ID"),
            )
        if overdue:
            await self.client.deregister_job(job_id)
            return RunStatus(
                "timed_out", f"the run exceeded its timeout of {state.get('timeout'):g} s", alloc["ID"]
            )
        return RunStatus("running", "", alloc["ID"])

    @staticmethod
    def _exit_code(alloc: Mapping[str, Any]) -> int | None:
        events = ((alloc.get("TaskStates") or {}).get(RUN_TASK) or {}).get("Events") or []
        for event in reversed(events):
            if event.get("Type") == "Terminated":
                details = event.get("Details") or {}
                try:
                    return int(details.get("exit_code", event.get("ExitCode", 0)))
                except (TypeError, ValueError):
                    return int(event.get("ExitCode") or 0)
        return None

    async def fetch_run_outputs(self, state: State, dest: Path) -> list[str]:
        """Copy the run's ``alloc/data`` tree (``output.ipynb``, ``metrics.jsonl``, files the run
        wrote to ``work/outputs/``) into ``dest`` through the allocation filesystem API.

        Returns the relative paths written. Raises :class:`NotFound` when the run has no
        allocation (never placed, or garbage-collected by Nomad), :class:`BackendError` when the
        outputs exceed 1 GiB.
        """
        allocs, _ = await self.client.job_allocations(state["job_id"])
        alloc = _current_alloc(allocs)
        if alloc is None:
            raise NotFound(
                f"run {state.get('run_id')} has no allocation in Nomad (never placed or garbage-collected)"
            )
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        written: list[str] = []
        total = 0
        pending = [PurePosixPath("alloc/data")]
        while pending:
            directory = pending.pop()
            for entry in await self.client.list_files(alloc["ID"], str(directory)):
                name = str(entry.get("Name") or "")
                if not name or "/" in name or name in (".", ".."):
                    continue
                path = directory / name
                rel = path.relative_to("alloc/data")
                if entry.get("IsDir"):
                    pending.append(path)
                    continue
                total += int(entry.get("Size") or 0)
                if total > _MAX_OUTPUT_BYTES:
                    raise BackendError(
                        f"run outputs exceed {_MAX_OUTPUT_BYTES >> 20} MiB; fetch them with `nomad alloc fs`"
                    )
                data = await self.client.read_file(alloc["ID"], str(path))
                target = (root / rel).resolve()
                if root not in target.parents:
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                written.append(str(rel))
        return sorted(written)

    async def cancel_run(self, state: State, grace: float = 5.0) -> None:
        """Stop a run's job (its task's KillTimeout applies; its outputs stay readable until Nomad
        garbage-collects it)."""
        await self.client.deregister_job(state["job_id"])

    async def purge_run(self, state: State) -> None:
        """Forget a run's job in Nomad (after its outputs were fetched)."""
        await self.client.deregister_job(state["job_id"], purge=True)
