"""The nomad runtime itself: connection, status, stop, adoption, stats, exec."""

from __future__ import annotations

import shlex
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ...errors import (
    FetchmlError,
    InvalidState,
    NotFound,
    Timeout,
)
from ...nomad.devices import free_gpus
from ...nomad.exec import alloc_exec
from ...nomad.render import (
    secret_variable_path,
    workspace_job_id,
)
from ...settings import AgentConfig
from ..base import (
    Capabilities,
    Deliver,
    DeviceInventory,
    ExecResult,
    Output,
    PackageIndexReach,
    RunBackend,
    Runtime,
    State,
    Status,
    StatusFeed,
    WorkspaceSpec,
)
from .common import (
    _EXEC_GRACE,
    _MAX_WAIT,
    _TERMINAL,
    WORKSPACE_TASK,
    _current_alloc,
    _is_loopback,
    _url_from_ports,
    log,
    workload_status,
)
from .follow import Follower
from .gpu import NomadGpuActivity
from .runs import RunsMixin
from .start import StartMixin

__all__ = ["NomadRuntime"]


class NomadRuntime(
    StartMixin, RunsMixin, NomadGpuActivity, Runtime, RunBackend, PackageIndexReach, DeviceInventory, StatusFeed
):
    """Workspaces as Nomad service jobs; see the package docstring for the contract."""

    name = "nomad"
    feed_name = "nomad:events"
    # Nomad places GPUs (device requests) and experiment runs (its scheduler) itself; the
    # workspace's files live in the allocation; the startup scan can only look inside it.
    capabilities = Capabilities(host_files=False, places_gpus=True, schedules_runs=True, package_scan="workload")

    @classmethod
    def from_config(cls, config: AgentConfig) -> NomadRuntime:
        """From agent.yaml: its ``nomad:`` section, and the listen address and ``public_url`` (to
        warn at :meth:`open` when workspaces would be given a loopback package index)."""
        return cls(config.section("nomad"), agent_config=config)

    # -- plumbing --------------------------------------------------------------------------

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

    async def follow_status(self, since: int, deliver: Deliver) -> None:
        """Follow Nomad's event stream (else blocking queries) from position ``since``, delivering
        workspace status changes (:class:`~fetchml_agent.runtimes.nomad.follow.Follower`). While it
        runs, runs are followed from the same feed (:meth:`wait_run`)."""
        follower = Follower(self)
        self._follower = follower
        try:
            await follower.run(since, deliver)
        finally:
            if self._follower is follower:
                self._follower = None

    def feed_info(self) -> dict[str, Any]:
        if self._follower is None:
            return {"mode": "not followed", "position": 0, "live": False}
        return self._follower.info()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def host_cpus(self) -> int | None:
        return None  # Nomad places the workspace on a node of its choosing (and refuses what none has)

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
            "feed": self.feed_info(),
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

    async def device_inventory(self) -> dict[str, Any]:
        """GPUs per node and type as Nomad's NVIDIA plugin fingerprints them (MIG devices as their
        own types), with how many are free: healthy and held by no live allocation. Reads the
        nodes (``node:read``) and every namespace's allocations (this namespace's alone when the
        token may read only that: ``note`` says so)."""
        nodes = await self._nodes()
        if nodes is None:
            return {"gpus": [], "note": "the agent's Nomad token may not read nodes (node:read)"}
        note = ""
        try:
            allocs, _ = await self.client.list_allocations(resources=True, task_states=False, namespace="*")
        except FetchmlError:
            allocs, _ = await self.client.list_allocations(resources=True, task_states=False)
            note = f"free counts see only namespace {self.settings.namespace}'s allocations"
        pool = [n for n in nodes if self.settings.node_pool == "all"
                or (n.get("NodePool") or "default") == self.settings.node_pool]
        return {"gpus": free_gpus(pool, allocs), "note": note}

    # -- status ----------------------------------------------------------------------------

    def _status_of(
        self,
        state: State,
        job: Mapping[str, Any] | None,
        allocs: list[dict[str, Any]],
        url: str | None = None,
    ) -> Status:
        return workload_status(state.get("job_id", "?"), job, allocs, url or state.get("url"))

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

    def files_root(self, spec: WorkspaceSpec, state: State | None) -> str:
        """The workspace's directory inside its container (Jupyter's root_dir)."""
        return self.settings.workdir

