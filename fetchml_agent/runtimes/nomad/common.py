"""What every part of the nomad runtime shares: how Nomad's allocations and evaluations are read
(the cause of a placement failure, the allocation that matters, its address), and the state of
one runtime (:class:`NomadBase`) with the job registration and cleanup that workspaces and runs
both use."""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import httpx

from ...errors import (
    BackendError,
    FetchmlError,
    InsufficientResources,
    InvalidArgument,
    Timeout,
)
from ...nomad.client import NomadClient
from ...nomad.devices import device_groups, explain_unplaceable
from ...nomad.render import (
    JobRenderer,
    secret_variable_path,
)
from ...nomad.schema import NomadSettings
from ...settings import AgentConfig
from ..base import Status

__all__ = ["NomadBase", "placement_cause", "workload_status"]

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


def workload_status(
    job_id: str, job: Mapping[str, Any] | None, allocs: list[dict[str, Any]], url: str | None = None
) -> Status:
    """A workspace's status from its job and allocations (``None``: Nomad has no such job):
    ``missing``, ``stopped`` (the job is stopped, or its allocation completed), ``starting`` (not
    placed yet, or pending: restarting, pulling), ``running`` (with ``url``) or ``failed``."""
    if job is None:
        return Status("missing", f"Nomad has no job {job_id}")
    if job.get("Stop"):
        return Status("stopped", f"Nomad job {job_id} is stopped")
    alloc = _current_alloc(allocs)
    if alloc is None:
        return Status("starting", f"Nomad job {job_id} waits for placement")
    client_status = alloc.get("ClientStatus")
    if client_status == "running":
        return Status("running", url=url)
    if client_status == "pending":
        return Status("starting", _task_cause(alloc, WORKSPACE_TASK))
    if client_status == "complete":
        return Status("stopped", _task_cause(alloc, WORKSPACE_TASK))
    return Status("failed", _task_cause(alloc, WORKSPACE_TASK))


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


class NomadBase:
    """The state of one nomad runtime: settings, renderer, clients; registering jobs, waiting
    for their evaluations, cleaning up."""

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
        self._nodes_cache: tuple[float, list[dict[str, Any]]] | None = None
        self._follower: Any = None  # the Follower while follow_status runs (runs wait on it)

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

    # -- nodes and their GPUs ---------------------------------------------------------------

    async def _nodes(self, max_age: float = 2.0) -> list[dict[str, Any]] | None:
        """Node stubs with their resources (fingerprinted GPUs), at most ``max_age`` s old;
        ``None`` when the token may not read nodes (``node:read``)."""
        now = time.monotonic()
        if self._nodes_cache is not None and now - self._nodes_cache[0] < max_age:
            return self._nodes_cache[1]
        try:
            nodes = await self.client.list_nodes()
        except FetchmlError as exc:
            log.info("cannot read Nomad's nodes (GPU types and free GPUs are not shown): %s", exc)
            return None
        self._nodes_cache = (now, nodes)
        return nodes

    async def _gpu_type_names(self) -> set[str] | None:
        """The GPU device groups Nomad's nodes fingerprint (models, MIG devices), by name."""
        nodes = await self._nodes()
        if nodes is None:
            return None
        return {str(g.get("Name")) for n in nodes for g in device_groups(n)}

    async def _live_allocations(self) -> list[dict[str, Any]]:
        """Every namespace's allocations with their resources (what holds GPUs), else this
        namespace's when the token may read only that."""
        try:
            allocs, _ = await self.client.list_allocations(resources=True, task_states=False, namespace="*")
        except FetchmlError:
            allocs, _ = await self.client.list_allocations(resources=True, task_states=False)
        return list(allocs)

    def _candidate(self, node: Mapping[str, Any]) -> bool:
        """Whether the scheduler considers the node for this runtime's jobs (pool, datacenters, ready)."""
        s = self.settings
        if node.get("Status") != "ready" or node.get("SchedulingEligibility", "eligible") != "eligible":
            return False
        if s.node_pool != "all" and (node.get("NodePool") or "default") != s.node_pool:
            return False
        return any(fnmatch.fnmatchcase(str(node.get("Datacenter") or ""), dc) for dc in s.datacenters)

    async def _device_explanation(self, job: Mapping[str, Any]) -> str | None:
        """Which part of the job's GPU request no node satisfies (:func:`explain_unplaceable`),
        read from the nodes' fingerprints; ``None`` without a GPU request or node access."""
        request = next((d for tg in job.get("TaskGroups") or [] for t in tg.get("Tasks") or []
                        for d in (t.get("Resources") or {}).get("Devices") or []), None)
        if request is None:
            return None
        nodes = await self._nodes(max_age=0.0)
        if nodes is None:
            return None
        try:
            allocs = await self._live_allocations()
        except FetchmlError:
            allocs = []
        return explain_unplaceable([n for n in nodes if self._candidate(n)], request, allocs)

    async def _wait_evaluation(
        self, eval_id: str, deadline: float, what: str, index: int = 0, blocked_ok: bool = False,
        job: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Block until the scheduler has processed ``eval_id`` (starting from its create index).

        Placement failures raise :class:`InsufficientResources`, except with ``blocked_ok`` when
        Nomad keeps a blocked evaluation and every failure is a node that is merely full
        (``NodesExhausted``): then the evaluation is returned and Nomad places it later. With
        ``job`` (its ``Job``), a failure about GPUs names the constraint of its device request no
        node satisfies (:meth:`_device_explanation`)."""
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
            cause = placement_cause(ev["FailedTGAllocs"])
            if job is not None and "GPU" in cause:
                explained = await self._device_explanation(job)
                cause += f": {explained}" if explained else ""
            raise InsufficientResources(f"Nomad cannot place {what}: {cause}", details=f"evaluation {eval_id}")
        return ev

