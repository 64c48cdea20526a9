"""The state and behaviour behind the Nomad HTTP API double: jobs, evaluations, a scheduler,
client nodes that run allocations, Variables, the Raft-like index that blocking queries watch,
and the event stream's buffer.

Everything here runs on the double's own event loop (see ``server.py``). Paths below are files of
the hashicorp/nomad repository that each behaviour follows.

* **Indexes and events** (:meth:`Cluster.commit`): every change is one Raft apply with a new index.
  As ``nomad/state/events.go`` does, the apply publishes one frame ``{"Index", "Events"}`` with an
  event per changed job, evaluation, allocation or node, all carrying the apply's type
  (``JobRegistered``, ``PlanResult``, ``EvaluationUpdated``, ``AllocationUpdated``, ...), the
  object as payload (an allocation without its job) and, for allocations and evaluations, the job
  and deployment ids as filter keys. The last :data:`EVENT_BUFFER` frames are kept. The double has
  no deployments, Variables events or other topics.
* **Job status** follows ``nomad/state/state_store.go`` (``getJobStatus``): running while an
  allocation is not terminal, pending while an evaluation is not, dead after that; it changes in
  the same apply as the allocation or evaluation that changes it.
* **Scheduling** (``scheduler/``): each evaluation places the missing allocations of each task
  group on the first feasible node with room, applies them as one ``PlanResult``, then completes
  the evaluation (``EvaluationUpdated``), with a blocked evaluation and ``FailedTGAllocs`` metrics
  when something could not be placed; blocked evaluations retry when resources free up.
  Feasibility checks run in Nomad's order (``scheduler/feasible/stack.go``): job constraints,
  drivers, group and task constraints, devices (``devices.py``), then host volumes.

How the double's "docker driver" runs a task (its limits, stated once):

* An image is known to the double through :class:`DoubleImage`. An unknown image fails to pull
  exactly as Nomad reports it (``Driver Failure``: ``Failed to pull `x`: ...``).
* ``kind="exec"`` images run the task's ``command``/``args`` as a real host process (so a real
  ``jupyter lab`` or ``papermill`` runs); ``kind="idle"`` images run nothing and stay running
  until stopped (for bulk tests and benchmarks).
* There is no container: container paths (``/alloc``, ``/local``, ``/secrets``, volume mount
  destinations and the image's own ``paths``) are rewritten to the task's host directories in
  the command, args and environment, after Nomad's ``${...}`` interpolation.
* There is no network namespace: ``NOMAD_PORT_<label>`` is the allocated host port (Nomad
  gives the ``To`` port inside the alloc's netns and maps it), and a ``0.0.0.0`` bind address in
  args becomes ``127.0.0.1``, the node's address, so nothing listens beyond loopback.
* Rescheduling of failed allocations is not simulated; restarts within an allocation are.
"""

from __future__ import annotations

import asyncio
import copy
import fnmatch
import json
import os
import re
import shutil
import signal
import socket
import sys
import sysconfig
import time
import uuid
import venv
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from . import devices, gotmpl
from .contract import zero
from .devices import DoubleGPU
from .jobspec import canonicalize_job

__all__ = ["EVENT_BUFFER", "Cluster", "DoubleImage", "DoubleNode", "StreamEvent", "TABLES"]

TABLES = ("jobs", "evals", "allocs", "vars", "nodes")
_TOPICS = {"jobs": "Job", "evals": "Evaluation", "allocs": "Allocation", "nodes": "Node"}
EVENT_BUFFER = 100  # the server's event_buffer_size default (nomad/stream/event_broker.go)
NS = 1_000_000_000
_TERMINAL = {"complete", "failed", "lost"}


def _now_ns() -> int:
    return time.time_ns()


def _rfc3339(ns: int | None) -> str:
    if not ns:
        return "0001-01-01T00:00:00Z"
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns / NS)) + f".{ns % NS:09d}Z"


def _python_env(env_dir: Path) -> None:
    """A venv at ``env_dir`` whose own site-packages come before the test environment's (a
    ``.pth`` line), shipping the test environment's programs (jupyter, jupyter-lab, pip,
    papermill, ...) as scripts of its own Python."""
    if (env_dir / "bin" / "python").exists():
        return
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env_dir)
    own = sysconfig.get_path("purelib", vars={"base": str(env_dir), "platbase": str(env_dir)})
    shared = sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")})
    Path(own, "_double_image.pth").write_text("".join(f"import site; site.addsitedir({p!r})\n" for p in shared))
    python = env_dir / "bin" / "python"
    source_bin = Path(sys.executable).parent
    for script in source_bin.iterdir():
        target = env_dir / "bin" / script.name
        if target.exists() or not script.is_file():
            continue
        try:
            text = script.read_text()
        except (OSError, UnicodeDecodeError):
            continue
        first, _, rest = text.partition("\n")
        if first.startswith("#!") and "python" in first:
            target.write_text(f"#!{python}\n{rest}")
            target.chmod(0o755)


# Docker's default PATH for a container whose image sets none.
CONTAINER_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class DoubleImage:
    """An image the double's docker driver can "pull" (see the module docstring)."""

    name: str
    kind: str = "exec"
    env: dict[str, str] = field(default_factory=dict)
    paths: tuple[str, ...] = ()
    files: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    entrypoint: tuple[str, ...] = ()
    pull_seconds: float = 0.0
    # Where the image keeps its Python environment (e.g. /opt/fetchml/venv). Each task gets its
    # own: a venv over the test environment's packages, so what a task installs stays in that
    # task, as a container's writes stay in its own layer.
    python_env: str | None = None


@dataclass
class DoubleNode:
    """A client node: its resources, host volumes and GPUs: ``gpus`` is a number of
    :data:`devices.H100` or the GPUs themselves (:class:`devices.DoubleGPU`, MIG or not)."""

    name: str
    datacenter: str = "dc1"
    node_pool: str = "default"
    cores: int = 8
    mhz_per_core: int = 2000
    memory_mb: int = 32768
    disk_mb: int = 200_000
    gpus: int | Sequence[DoubleGPU] = 0
    nvidia_runtime: bool = True
    host_volumes: dict[str, str] = field(default_factory=dict)
    node_class: str = ""


class StreamEvent(NamedTuple):
    """One event of the stream: what subscriptions filter on, and its JSON (a snapshot)."""

    topic: str
    key: str
    namespace: str
    filter_keys: tuple[str, ...]
    json: str


class _Task:
    """Client-side state of one task of one allocation."""

    def __init__(self, name: str, spec: dict[str, Any]) -> None:
        self.name = name
        self.spec = spec
        self.state: dict[str, Any] = {
            "State": "pending",
            "Failed": False,
            "Restarts": 0,
            "LastRestart": _rfc3339(None),
            "StartedAt": _rfc3339(None),
            "FinishedAt": _rfc3339(None),
            "Events": [],
        }
        self.proc: asyncio.subprocess.Process | None = None
        self.runner: asyncio.Task[None] | None = None
        self.restart_requested = False
        self.env: dict[str, str] = {}
        self.paths: dict[str, str] = {}
        self.cwd = ""
        self.cpu_sample: tuple[float, float] | None = None
        self.wake = asyncio.Event()  # set when the task must stop or restart


class Cluster:
    """All of the double's state. Public methods are called from the HTTP handlers."""

    def __init__(
        self,
        root: Path,
        nodes: list[DoubleNode],
        images: list[DoubleImage],
        region: str = "global",
        version: str = "1.10.0",
    ) -> None:
        self.root = root
        self.region = region
        self.version = version
        self.index = 10
        self.table_index = {t: self.index for t in TABLES}
        self.changed = asyncio.Condition()
        self.releasing = False
        self.events: deque[tuple[int, list[StreamEvent]]] = deque(maxlen=EVENT_BUFFER)
        # open event streams; None ends one (the server going down)
        self.subscribers: set[asyncio.Queue[tuple[int, list[StreamEvent]] | None]] = set()
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.evals: dict[str, dict[str, Any]] = {}
        self.allocs: dict[str, dict[str, Any]] = {}
        self.allocs_by_job: dict[tuple[str, str], list[str]] = {}
        self.tasks: dict[str, dict[str, _Task]] = {}
        self.variables: dict[tuple[str, str], dict[str, Any]] = {}
        self.images = {img.name: img for img in images}
        self.nodes: dict[str, dict[str, Any]] = {}
        self.node_specs: dict[str, DoubleNode] = {}
        self.pulled: set[tuple[str, str]] = set()
        self.used_ports: set[int] = set()
        self.placement_delay = 0.01
        self.client_delay = 0.01
        self.restart_delay_scale = 0.01  # RestartPolicy.Delay is scaled down so tests stay fast
        self.max_kill_wait = 5.0
        self.memory_oversubscription = False
        self._background: set[asyncio.Task[Any]] = set()
        for spec in nodes:
            self.add_node(spec)

    # -- indexes, blocking queries, events ----------------------------------------------------

    async def commit(self, kind: str, *changed: tuple[str, dict[str, Any]]) -> int:
        """Apply one change: a new index for the ``(table, object)`` pairs ``changed`` (their
        ``ModifyIndex``, the tables' blocking queries) and its event frame of type ``kind``.
        Table ``"jobs-"`` is a purged job (a ``Deleted`` job event); ``"vars"`` has no events."""
        self.index += 1
        index = self.index
        items = list(changed)
        for table, obj in changed:  # the status of their jobs changes in the same apply
            job = self.jobs.get((obj["Namespace"], obj["JobID"])) if table in ("allocs", "evals") else None
            if job is not None and (status := self.job_status(job)) != job["Status"]:
                job["Status"] = status
                items.append(("jobs", job))
        events = []
        for table, obj in items:
            self.table_index[table.rstrip("-")] = index
            if table in _TOPICS:
                obj["ModifyIndex"] = index
            if table.rstrip("-") in _TOPICS:
                events.append(self._stream_event(kind, table, obj, index))
        if events:
            self.events.append((index, events))
            for queue in self.subscribers:
                queue.put_nowait((index, events))
        async with self.changed:
            self.changed.notify_all()
        return index

    def _stream_event(self, kind: str, table: str, obj: dict[str, Any], index: int) -> StreamEvent:
        topic = _TOPICS[table.rstrip("-")]
        payload: dict[str, Any] = {topic: {**obj, "Job": None} if topic == "Allocation" else obj}
        if table == "jobs-":
            payload["Deleted"] = True
        keys = (obj["JobID"], obj["DeploymentID"] or "") if topic in ("Allocation", "Evaluation") else ()
        namespace = "" if topic == "Node" else obj["Namespace"]
        event = {
            "Topic": topic,
            "Type": kind,
            "Key": obj["ID"],
            "Namespace": namespace,
            "FilterKeys": list(keys) or None,
            "Index": index,
            "Payload": payload,
        }
        return StreamEvent(topic, obj["ID"], namespace, keys, json.dumps(event))

    async def release_waiters(self) -> None:
        """Answer every parked blocking query now, and the next ones at once (the server is going
        away: a real one would drop them) until ``releasing`` is reset."""
        self.releasing = True
        async with self.changed:
            self.changed.notify_all()

    async def wait(self, tables: tuple[str, ...], index: int, wait: float, http: bool = False) -> int:
        """Block until one of ``tables`` moves past ``index`` or ``wait`` seconds pass (``http``: a
        client's blocking query, answered at once while ``releasing``)."""
        deadline = time.monotonic() + wait
        while max(self.table_index[t] for t in tables) <= index and not (http and self.releasing):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            async with self.changed:
                try:
                    await asyncio.wait_for(self.changed.wait(), remaining)
                except TimeoutError:
                    break
        return max(self.table_index[t] for t in tables)

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # -- nodes -----------------------------------------------------------------------------

    def add_node(self, spec: DoubleNode) -> dict[str, Any]:
        """Register a client node (its ``NodeRegistration`` is the caller's to commit)."""
        node_id = str(uuid.uuid4())
        gpus = [devices.H100] * spec.gpus if isinstance(spec.gpus, int) else list(spec.gpus)
        runtimes = "io.containerd.runc.v2,runc" + (",nvidia" if spec.nvidia_runtime else "")
        attrs = {
            "kernel.name": "linux",
            "os.name": "debian",
            "cpu.numcores": str(spec.cores),
            "cpu.frequency": str(spec.mhz_per_core),
            "unique.hostname": spec.name,
            "unique.network.ip-address": "127.0.0.1",
            "driver.docker": "1",
            "driver.docker.runtimes": runtimes,
            "driver.docker.os_type": "linux",
            "nomad.version": self.version,
        }
        driver = {"Attributes": {"driver.docker": "true"}, "Detected": True, "Healthy": True}
        node = self.nodes[node_id] = {
            "ID": node_id,
            "Name": spec.name,
            "Datacenter": spec.datacenter,
            "NodePool": spec.node_pool,
            "NodeClass": spec.node_class,
            "HTTPAddr": "127.0.0.1:4646",
            "Status": "ready",
            "StatusDescription": "",
            "SchedulingEligibility": "eligible",
            "Drain": False,
            "Attributes": attrs,
            "Meta": {},
            "Drivers": {
                "docker": {**driver, "HealthDescription": "Healthy", "UpdateTime": _rfc3339(_now_ns())}
            },
            "NodeResources": {
                "Cpu": {
                    "CpuShares": spec.cores * spec.mhz_per_core,
                    "TotalCpuCores": spec.cores,
                    "ReservableCpuCores": list(range(spec.cores)),
                },
                "Memory": {"MemoryMB": spec.memory_mb},
                "Disk": {"DiskMB": spec.disk_mb},
                "Networks": None,
                "Devices": devices.fingerprint(gpus),
                "MinDynamicPort": 20000,
                "MaxDynamicPort": 32000,
            },
            "ReservedResources": {"Cpu": {"CpuShares": 0}, "Memory": {"MemoryMB": 0}, "Disk": {"DiskMB": 0}},
            "HostVolumes": {
                n: {"Name": n, "Path": p, "ReadOnly": False} for n, p in spec.host_volumes.items()
            },
            "CreateIndex": self.index,
            "ModifyIndex": self.index,
        }
        self.node_specs[node_id] = spec
        return node

    def node_stub(self, node: dict[str, Any], resources: bool) -> dict[str, Any]:
        """``Node.Stub`` (nomad/structs/structs.go): Address is the host of HTTPAddr."""
        keys = "ID Datacenter Name NodeClass NodePool Drain SchedulingEligibility Status StatusDescription"
        stub = {k: node[k] for k in f"{keys} Drivers CreateIndex ModifyIndex".split()}
        stub.update(Address=node["HTTPAddr"].rsplit(":", 1)[0], Version=node["Attributes"]["nomad.version"])
        stub["LastDrain"] = None
        if resources:
            stub.update(NodeResources=node["NodeResources"], ReservedResources=node["ReservedResources"])
        return stub

    # -- jobs and evaluations --------------------------------------------------------------

    def job_allocs(self, namespace: str, job_id: str) -> list[dict[str, Any]]:
        """A job's allocations, oldest first."""
        return [self.allocs[i] for i in self.allocs_by_job.get((namespace, job_id), [])]

    def job_status(self, job: dict[str, Any]) -> str:
        """``getJobStatus`` (nomad/state/state_store.go)."""
        if job["Type"] == "system" or job.get("Periodic") or job.get("ParameterizedJob"):
            return "dead" if job.get("Stop") else "running"
        if any(
            a["DesiredStatus"] == "run" and a["ClientStatus"] not in _TERMINAL
            for a in self.job_allocs(job["Namespace"], job["ID"])
        ):
            return "running"
        evals = [
            e for e in self.evals.values() if e["JobID"] == job["ID"] and e["Namespace"] == job["Namespace"]
        ]
        if any(e["Status"] not in ("complete", "failed", "canceled") for e in evals):
            return "pending"
        return "dead" if evals or job.get("Stop") else "pending"

    async def register(self, job: dict[str, Any], namespace: str) -> tuple[str, int, str]:
        job = canonicalize_job(job, namespace, self.region)
        key = (job["Namespace"], job["ID"])
        old = self.jobs.get(key)
        index = self.index + 1
        job.update(
            Stop=False,
            Version=(old["Version"] + 1) if old else 0,
            SubmitTime=_now_ns(),
            CreateIndex=old["CreateIndex"] if old else index,
            JobModifyIndex=index,
            Stable=False,
            Status="pending",
            StatusDescription="",
        )
        self.jobs[key] = job
        ev = self._new_eval(job, "job-register")
        await self.commit("JobRegistered", ("jobs", job), ("evals", ev))
        warnings = ""
        if not self.memory_oversubscription:
            names = [
                t["Name"]
                for tg in job["TaskGroups"]
                for t in tg["Tasks"]
                if t["Resources"].get("MemoryMaxMB")
            ]
            if names:
                warnings = "1 warning:\n\n* " + "; ".join(
                    f'Memory oversubscription is not enabled; Task "{n}" memory_max value will be ignored'
                    for n in names
                )
        self.spawn(self._process_eval_later(ev["ID"]))
        return ev["ID"], index, warnings

    async def deregister(self, namespace: str, job_id: str, purge: bool) -> tuple[str, int]:
        job = self.jobs.get((namespace, job_id))
        if job is None:
            return "", 0
        index = self.index + 1
        job.update(Stop=True, JobModifyIndex=index)
        ev = self._new_eval(job, "job-deregister")
        if purge:
            del self.jobs[(namespace, job_id)]
        await self.commit("JobDeregistered", ("jobs-" if purge else "jobs", job), ("evals", ev))
        self.spawn(self._process_eval_later(ev["ID"], job=job))
        return ev["ID"], index

    def _new_eval(self, job: dict[str, Any], trigger: str, status: str = "pending") -> dict[str, Any]:
        now = _now_ns()
        ev = zero(
            "Evaluation",
            ID=str(uuid.uuid4()),
            Namespace=job["Namespace"],
            Priority=job["Priority"],
            Type=job["Type"],
            TriggeredBy=trigger,
            JobID=job["ID"],
            JobModifyIndex=job["JobModifyIndex"],
            Status=status,
            CreateIndex=self.index + 1,
            CreateTime=now,
            ModifyTime=now,
        )
        self.evals[ev["ID"]] = ev
        return ev

    async def _process_eval_later(self, eval_id: str, job: dict[str, Any] | None = None) -> None:
        await asyncio.sleep(self.placement_delay)
        await self.process_eval(eval_id, job)

    async def process_eval(self, eval_id: str, job: dict[str, Any] | None = None) -> None:
        """Schedule: stop what the job no longer wants, place what it lacks (one ``PlanResult``),
        then complete the evaluation (``EvaluationUpdated``), blocked where placement failed."""
        ev = self.evals[eval_id]
        job = job or self.jobs.get((ev["Namespace"], ev["JobID"]))
        stopping = job is None or job.get("Stop")
        plan: list[tuple[str, dict[str, Any]]] = []
        for alloc in self.job_allocs(ev["Namespace"], ev["JobID"]):
            live = alloc["DesiredStatus"] == "run" and alloc["ClientStatus"] not in _TERMINAL
            if live and (stopping or alloc["Job"]["Version"] != job["Version"]):  # type: ignore[index]
                why = "alloc not needed due to job stop" if stopping else "alloc not needed due to job update"
                plan.append(("allocs", self._desire_stop(alloc, why)))
        failed: dict[str, Any] = {}
        queued: dict[str, int] = {}
        for tg in job["TaskGroups"] if job is not None and not stopping else []:
            placed, queued[tg["Name"]], metric = self._place_group(job, tg, eval_id)  # type: ignore[arg-type]
            plan.extend(("allocs", a) for a in placed)
            if metric is not None:
                failed[tg["Name"]] = metric
        if plan:
            await self.commit("PlanResult", *plan)
        for _, alloc in plan:
            if alloc["ID"] not in self.tasks:
                self._start_alloc(alloc)
        ev.update(Status="complete", QueuedAllocations=queued or None, ModifyTime=_now_ns())
        updated = [("evals", ev)]
        if failed:
            ev["FailedTGAllocs"] = failed
            if ev["TriggeredBy"] != "queued-allocs" and job is not None:
                blocked = self._new_eval(job, "queued-allocs", status="blocked")
                blocked["PreviousEval"] = eval_id
                ev["BlockedEval"] = blocked["ID"]
                updated.append(("evals", blocked))
            elif job is not None:
                ev["Status"] = "blocked"
        await self.commit("EvaluationUpdated", *updated)

    def _place_group(
        self, job: dict[str, Any], tg: dict[str, Any], eval_id: str
    ) -> tuple[list[dict[str, Any]], int, dict[str, Any] | None]:
        """New allocations for what the group lacks, how many stay queued, the failure metrics."""
        have = [
            a
            for a in self.job_allocs(job["Namespace"], job["ID"])
            if a["TaskGroup"] == tg["Name"]
            and a["DesiredStatus"] == "run"
            and a["Job"]["Version"] == job["Version"]
            and (a["ClientStatus"] not in _TERMINAL or job["Type"] == "batch")
        ]
        missing = int(tg["Count"]) - len(have)
        placed: list[dict[str, Any]] = []
        for i in range(max(0, missing)):
            metric, placement = self._place(job, tg)
            if placement is None:
                return placed, missing - i, {**metric, "CoalescedFailures": max(0, missing - i - 1)}
            placed.append(self._create_alloc(job, tg, eval_id, len(have) + i, placement, metric))
        return placed, 0, None

    async def _retry_blocked(self) -> None:
        for ev in list(self.evals.values()):
            if ev["Status"] == "blocked":
                await self.process_eval(ev["ID"])

    # -- placement -------------------------------------------------------------------------

    def _live_allocs(self, node_id: str) -> list[dict[str, Any]]:
        return [
            a
            for a in self.allocs.values()
            if a["NodeID"] == node_id and a["ClientStatus"] not in _TERMINAL and a["DesiredStatus"] == "run"
        ]

    def _place(self, job: dict[str, Any], tg: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The first node the group fits on (``None`` if none), and the evaluation's metrics."""
        metric = zero("AllocationMetric", NodesAvailable={}, AllocationTime=120000)

        def count(key: str, reason: str) -> None:
            metric[key] = metric[key] or {}
            metric[key][reason] = metric[key].get(reason, 0) + 1

        for node in self.nodes.values():
            if node["NodePool"] != job["NodePool"] and job["NodePool"] != "all":
                continue
            metric["NodesInPool"] += 1
            if not any(fnmatch.fnmatchcase(node["Datacenter"], dc) for dc in job["Datacenters"]):
                continue
            dcs = metric["NodesAvailable"]
            dcs[node["Datacenter"]] = dcs.get(node["Datacenter"], 0) + 1
            if node["Status"] != "ready" or node["SchedulingEligibility"] != "eligible":
                continue
            metric["NodesEvaluated"] += 1
            reason = self._infeasible(job, tg, node)
            if reason:
                metric["NodesFiltered"] += 1
                count("ConstraintFiltered", reason)
                continue
            placement = self._fit(tg, node)
            if isinstance(placement, str):
                metric["NodesExhausted"] += 1
                count("DimensionExhausted", placement)
                continue
            return metric, placement
        return metric, None

    def _fit(self, tg: dict[str, Any], node: dict[str, Any]) -> dict[str, Any] | str:
        """The devices and free cores for the group on the node, or the exhausted dimension
        (devices are assigned before the node's cpu, memory and disk are added up, as in
        ``scheduler/feasible/rank.go``)."""
        spec = self.node_specs[node["ID"]]
        live = self._live_allocs(node["ID"])
        used = [t for a in live for t in a["AllocatedResources"]["Tasks"].values()]
        taken = {i for t in used for d in t["Devices"] or [] for i in d["DeviceIDs"]}
        grants: dict[str, list[dict[str, Any]]] = {}
        for task in tg["Tasks"]:
            for req in task["Resources"].get("Devices") or []:
                grant = devices.assign(node["NodeResources"]["Devices"], req, taken)
                if isinstance(grant, str):
                    return f"devices: {grant}"
                taken.update(grant["DeviceIDs"])
                grants.setdefault(task["Name"], []).append(grant)
        res = [t["Resources"] for t in tg["Tasks"]]
        reserved = {c for t in used for c in t["Cpu"]["ReservedCores"] or []}
        need_cores = sum(int(r.get("Cores") or 0) for r in res)
        mhz = sum(t["Cpu"]["CpuShares"] for t in used) + need_cores * spec.mhz_per_core
        mhz += sum(int(r.get("CPU") or 0) for r in res if not r.get("Cores"))
        if len(reserved) + need_cores > spec.cores:
            return "cores"
        if mhz > spec.cores * spec.mhz_per_core:
            return "cpu"
        if sum(t["Memory"]["MemoryMB"] for t in used) + sum(int(r["MemoryMB"]) for r in res) > spec.memory_mb:
            return "memory"
        disk = sum(a["AllocatedResources"]["Shared"]["DiskMB"] for a in live)
        if disk + int(tg["EphemeralDisk"]["SizeMB"]) > spec.disk_mb:
            return "disk"
        cores_free = [c for c in range(spec.cores) if c not in reserved]
        return {"node": node, "devices": grants, "cores_free": cores_free}

    def _infeasible(self, job: dict[str, Any], tg: dict[str, Any], node: dict[str, Any]) -> str | None:
        """Why the node cannot run the group at all (Nomad's ConstraintFiltered reason), or None."""
        for c in job.get("Constraints") or []:
            if not _node_constraint(node, c):
                return _constraint_text(c)
        for t in tg["Tasks"]:
            if t["Driver"] not in node["Drivers"] or not node["Drivers"][t["Driver"]]["Detected"]:
                return "missing drivers"
        for c in [
            *(tg.get("Constraints") or []),
            *(c for t in tg["Tasks"] for c in t.get("Constraints") or []),
        ]:
            if not _node_constraint(node, c):
                return _constraint_text(c)
        wanted = [d for t in tg["Tasks"] for d in t["Resources"].get("Devices") or []]
        if not devices.has_devices(node["NodeResources"]["Devices"], wanted):
            return "missing devices"
        for vol in (tg.get("Volumes") or {}).values():
            if vol["Type"] == "host" and vol["Source"] not in node["HostVolumes"]:
                return "missing compatible host volumes"
            if vol["Type"] == "csi":
                return f"missing CSI Volume {vol['Source']}"
        return None

    def _free_port(self) -> int:
        while True:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            if port not in self.used_ports:
                self.used_ports.add(port)
                return int(port)

    def _create_alloc(
        self,
        job: dict[str, Any],
        tg: dict[str, Any],
        eval_id: str,
        index: int,
        placement: dict[str, Any],
        metric: dict[str, Any],
    ) -> dict[str, Any]:
        node = placement["node"]
        spec = self.node_specs[node["ID"]]
        ports, networks = [], []
        for net in tg.get("Networks") or []:
            mapped: dict[str, list[dict[str, Any]]] = {"DynamicPorts": [], "ReservedPorts": []}
            for kind, group in mapped.items():
                for p in net.get(kind) or []:
                    value = self._free_port() if kind == "DynamicPorts" else p["Value"]
                    group.append(
                        {
                            "Label": p["Label"],
                            "Value": value,
                            "To": p.get("To") or 0,
                            "HostNetwork": "default",
                        }
                    )
                    ports.append(
                        {"Label": p["Label"], "Value": value, "To": p.get("To") or 0, "HostIP": "127.0.0.1"}
                    )
            networks.append(
                {
                    "Mode": net.get("Mode") or "host",
                    "IP": "127.0.0.1",
                    **{k: v or None for k, v in mapped.items()},
                }
            )
        cores_free = list(placement["cores_free"])
        tasks_res = {}
        for t in tg["Tasks"]:
            r = t["Resources"]
            cores = [cores_free.pop(0) for _ in range(int(r.get("Cores") or 0))]
            tasks_res[t["Name"]] = {
                "Cpu": {
                    "CpuShares": len(cores) * spec.mhz_per_core if cores else int(r.get("CPU") or 0),
                    "ReservedCores": cores or None,
                },
                "Memory": {
                    "MemoryMB": int(r["MemoryMB"]),
                    "MemoryMaxMB": int(r.get("MemoryMaxMB") or 0) if self.memory_oversubscription else 0,
                },
                "Networks": None,
                "Devices": placement["devices"].get(t["Name"]) or None,
            }
        now = _now_ns()
        alloc = {
            "ID": str(uuid.uuid4()),
            "EvalID": eval_id,
            "Name": f"{job['ID']}.{tg['Name']}[{index}]",
            "Namespace": job["Namespace"],
            "NodeID": node["ID"],
            "NodeName": node["Name"],
            "JobID": job["ID"],
            "Job": copy.deepcopy(job),
            "TaskGroup": tg["Name"],
            "AllocatedResources": {
                "Tasks": tasks_res,
                "TaskLifecycles": {t["Name"]: None for t in tg["Tasks"]},
                "Shared": {
                    "DiskMB": int(tg["EphemeralDisk"]["SizeMB"]),
                    "Networks": networks or None,
                    "Ports": ports or None,
                },
            },
            "Metrics": metric,
            "DesiredStatus": "run",
            "DesiredDescription": "",
            "DesiredTransition": {},
            "ClientStatus": "pending",
            "ClientDescription": "",
            "TaskStates": None,
            "DeploymentID": "",
            "DeploymentStatus": None,
            "FollowupEvalID": "",
            "RescheduleTracker": None,
            "PreemptedAllocations": None,
            "PreemptedByAllocation": "",
            "NextAllocation": "",
            "PreviousAllocation": "",
            "NetworkStatus": {"InterfaceName": "eth0", "Address": "127.0.0.1", "DNS": None},
            "CreateIndex": self.index + 1,
            "AllocModifyIndex": self.index + 1,
            "CreateTime": now,
            "ModifyTime": now,
        }
        self.allocs[alloc["ID"]] = alloc
        self.allocs_by_job.setdefault((job["Namespace"], job["ID"]), []).append(alloc["ID"])
        return alloc

    def _start_alloc(self, alloc: dict[str, Any]) -> None:
        """Hand a placed allocation to its node's client."""
        tasks = alloc["Job"]["TaskGroups"]
        tg = next(g for g in tasks if g["Name"] == alloc["TaskGroup"])
        self.tasks[alloc["ID"]] = {t["Name"]: _Task(t["Name"], t) for t in tg["Tasks"]}
        alloc["TaskStates"] = {name: t.state for name, t in self.tasks[alloc["ID"]].items()}
        self.spawn(self._run_alloc(alloc["ID"]))

    def alloc_stub(
        self, alloc: dict[str, Any], resources: bool = False, task_states: bool = True
    ) -> dict[str, Any]:
        """``AllocListStub`` (nomad/structs/alloc.go): AllocatedResources only when asked."""
        keys = """ID EvalID Name Namespace NodeID NodeName JobID TaskGroup DesiredStatus DesiredDescription
            ClientStatus ClientDescription DeploymentStatus FollowupEvalID NextAllocation RescheduleTracker
            PreemptedAllocations PreemptedByAllocation CreateIndex ModifyIndex CreateTime ModifyTime"""
        stub = {k: alloc[k] for k in keys.split()}
        stub.update(JobType=alloc["Job"]["Type"], JobVersion=alloc["Job"]["Version"])
        stub["TaskStates"] = copy.deepcopy(alloc["TaskStates"]) if task_states else None
        if resources:
            stub["AllocatedResources"] = copy.deepcopy(alloc["AllocatedResources"])
        return stub

    # -- the client side: running allocations ----------------------------------------------

    async def _touch(self, alloc: dict[str, Any]) -> None:
        """The client reports the allocation's task states (an ``AllocationUpdated`` apply)."""
        alloc["ModifyTime"] = _now_ns()
        statuses = [t.state for t in self.tasks[alloc["ID"]].values()]
        if alloc["ClientStatus"] not in _TERMINAL:
            if all(s["State"] == "dead" for s in statuses):
                failed = any(s["Failed"] for s in statuses)
                alloc["ClientStatus"] = "failed" if failed else "complete"
                alloc["ClientDescription"] = "Failed tasks" if failed else "All tasks have completed"
            elif all(s["State"] == "running" for s in statuses):
                alloc.update(ClientStatus="running", ClientDescription="Tasks are running")
        await self.commit("AllocationUpdated", ("allocs", alloc))
        if alloc["ClientStatus"] in _TERMINAL:
            for port in alloc["AllocatedResources"]["Shared"]["Ports"] or []:
                self.used_ports.discard(port["Value"])
            await self._retry_blocked()

    def _event(
        self, task: _Task, kind: str, display: str, details: dict[str, Any] | None = None, **extra: Any
    ) -> None:
        """Append a TaskEvent (``extra``: its other fields, e.g. ``FailsTask=True``)."""
        details = {k: str(v) for k, v in (details or {}).items()}
        event = zero(
            "TaskEvent", Type=kind, Time=_now_ns(), DisplayMessage=display, Details=details or None, **extra
        )
        task.state["Events"].append(event)
        if len(task.state["Events"]) > 10:  # Nomad keeps the last 10
            del task.state["Events"][0]

    def alloc_dir(self, alloc_id: str) -> Path:
        return self.root / "allocs" / alloc_id

    async def _run_alloc(self, alloc_id: str) -> None:
        await asyncio.sleep(self.client_delay)
        alloc = self.allocs[alloc_id]
        shared = self.alloc_dir(alloc_id) / "alloc"
        for sub in ("data", "logs", "tmp"):
            (shared / sub).mkdir(parents=True, exist_ok=True)
        for task in self.tasks[alloc_id].values():
            task.runner = self.spawn(self._run_task(alloc, task))

    async def _run_task(self, alloc: dict[str, Any], task: _Task) -> None:
        try:
            await self._task_lifecycle(alloc, task)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a double bug shows as a failed task with the reason
            self._event(task, "Setup Failure", f"double: {type(exc).__name__}: {exc}", FailsTask=True)
            task.state.update(State="dead", Failed=True, FinishedAt=_rfc3339(_now_ns()))
            await self._touch(alloc)

    def _stopping(self, alloc: dict[str, Any]) -> bool:
        return alloc["DesiredStatus"] != "run"

    async def _task_lifecycle(self, alloc: dict[str, Any], task: _Task) -> None:
        spec = task.spec
        node = self.nodes[alloc["NodeID"]]
        nspec = self.node_specs[alloc["NodeID"]]
        self._event(task, "Received", "Task received by client")
        await self._touch(alloc)
        task_dir = self.alloc_dir(alloc["ID"]) / task.name
        for sub in ("local", "secrets", "tmp", "rootfs"):
            (task_dir / sub).mkdir(parents=True, exist_ok=True)
        self._event(task, "Task Setup", "Building Task Directory", Message="Building Task Directory")
        await self._touch(alloc)
        image_name = (spec.get("Config") or {}).get("image", "")
        image = self.images.get(image_name)
        env = self._task_env(alloc, task, node, image)
        task.paths = self._path_map(alloc, task, task_dir, image)
        # Templates block until their Variables exist, as in Nomad.
        missing_reported: set[str] = set()
        while True:
            if self._stopping(alloc):
                return await self._finish_killed(alloc, task)
            try:
                env.update(self._render_templates(alloc, task, task_dir, env))
                break
            except gotmpl.MissingVariable as miss:
                if miss.path not in missing_reported:
                    missing_reported.add(miss.path)
                    self._event(
                        task,
                        "Template",
                        f"Missing: nomad.var.block({miss.path}@{alloc['Namespace']}.{self.region})",
                    )
                    await self._touch(alloc)
                await self.wait(("vars", "allocs"), self.index, 1.0)
            except gotmpl.TemplateError as exc:
                return await self._fail(alloc, task, "Killing", f"Template failed: {exc}")
        res = alloc["AllocatedResources"]["Tasks"][task.name]
        if res["Devices"] and not nspec.nvidia_runtime:
            return await self._fail(
                alloc,
                task,
                "Driver Failure",
                'failed to create container configuration for image: requested docker runtime "nvidia" was not found',
            )
        if (alloc["NodeID"], image_name) not in self.pulled:
            self._event(
                task,
                "Driver",
                "Downloading image",
                details={"image": image_name},
                DriverMessage="Downloading image",
            )
            await self._touch(alloc)
            await asyncio.sleep(image.pull_seconds if image else 0.05)
            if image is None:
                msg = (
                    f"Failed to pull `{image_name}`: API error (404): manifest for {image_name} not found: "
                    "manifest unknown: manifest unknown"
                )
                return await self._fail(alloc, task, "Driver Failure", msg, unrecoverable=True)
            self.pulled.add((alloc["NodeID"], image_name))
        policy = spec.get("RestartPolicy") or {}
        while True:
            if self._stopping(alloc):
                return await self._finish_killed(alloc, task)
            code = await self._start_and_wait(alloc, task, image, env, task_dir)
            if code is None:  # killed on request
                if task.restart_requested:
                    task.restart_requested = False
                    task.state["Restarts"] += 1
                    task.state["LastRestart"] = _rfc3339(_now_ns())
                    continue
                return await self._finish_killed(alloc, task)
            self._event(
                task,
                "Terminated",
                f"Exit Code: {code}",
                ExitCode=code,
                details={"exit_code": code, "signal": 0, "oom_killed": "false"},
            )
            if code == 0 and alloc["Job"]["Type"] in ("batch", "sysbatch"):
                task.state.update(State="dead", Failed=False, FinishedAt=_rfc3339(_now_ns()))
                return await self._touch(alloc)
            if task.state["Restarts"] < int(policy.get("Attempts") or 0):
                delay = (policy.get("Delay") or 0) / NS
                self._event(
                    task,
                    "Restarting",
                    f"Task restarting in {delay:g}s",
                    details={"restart_reason": "Restart within policy"},
                )
                task.state["State"] = "pending"
                await self._touch(alloc)
                await asyncio.sleep(delay * self.restart_delay_scale)
                task.state["Restarts"] += 1
                task.state["LastRestart"] = _rfc3339(_now_ns())
                continue
            attempts = int(policy.get("Attempts") or 0)
            return await self._fail(
                alloc,
                task,
                "Not Restarting",
                f'Exceeded allowed attempts {attempts} in interval {(policy.get("Interval") or 0) // NS}s and mode is "fail"',
            )

    async def _fail(
        self, alloc: dict[str, Any], task: _Task, kind: str, msg: str, unrecoverable: bool = False
    ) -> None:
        self._event(task, kind, msg, FailsTask=True, DriverError=msg if kind == "Driver Failure" else "")
        if unrecoverable:
            self._event(task, "Not Restarting", "Error was unrecoverable", FailsTask=True)
        task.state.update(State="dead", Failed=True, FinishedAt=_rfc3339(_now_ns()))
        await self._touch(alloc)

    async def _finish_killed(self, alloc: dict[str, Any], task: _Task) -> None:
        if task.state["State"] != "dead":
            self._event(task, "Killed", "Task successfully killed")
            task.state.update(State="dead", FinishedAt=_rfc3339(_now_ns()))
        await self._touch(alloc)

    async def _start_and_wait(
        self,
        alloc: dict[str, Any],
        task: _Task,
        image: DoubleImage | None,
        env: dict[str, str],
        task_dir: Path,
    ) -> int | None:
        assert image is not None
        cfg = task.spec.get("Config") or {}
        argv = list(image.entrypoint) + ([cfg["command"]] if cfg.get("command") else [])
        argv += [str(a) for a in cfg.get("args") or []]
        argv = [self._host_view(_interpolate(a, env), task.paths) for a in argv]
        host_env = {k: self._host_view(v, task.paths) for k, v in env.items()}
        # A container does not inherit the host's PATH: the image says where its programs are,
        # else Docker's default applies (never the test runner's PATH).
        host_env.setdefault("PATH", CONTAINER_DEFAULT_PATH)
        task.env = host_env
        task.cwd = self._host_view(image.workdir, task.paths) if image.workdir else str(task_dir / "local")
        logs = self.alloc_dir(alloc["ID"]) / "alloc" / "logs"
        if image.kind == "exec":
            if not argv:
                return await self._exit_with(
                    alloc, task, "Driver Failure", "no command to run: the image has no CMD"
                )
            with (
                open(logs / f"{task.name}.stdout.0", "ab") as out,
                open(logs / f"{task.name}.stderr.0", "ab") as err,
            ):
                try:
                    task.proc = await asyncio.create_subprocess_exec(
                        *argv,
                        env=host_env,
                        cwd=task.cwd,
                        stdout=out,
                        stderr=err,
                        stdin=asyncio.subprocess.DEVNULL,
                        start_new_session=True,
                    )
                except OSError as exc:
                    return await self._exit_with(
                        alloc,
                        task,
                        "Driver Failure",
                        f"failed to create container: exec: {argv[0]!r}: {exc.strerror}",
                    )
        self._event(task, "Started", "Task started by client")
        task.state.update(State="running", StartedAt=_rfc3339(_now_ns()))
        await self._touch(alloc)
        if task.proc is None:  # an idle image: runs until stopped or restarted
            while not self._stopping(alloc) and not task.restart_requested:
                await task.wake.wait()
                task.wake.clear()
            return None
        proc = task.proc
        waiter = asyncio.ensure_future(proc.wait())
        while not waiter.done():
            if self._stopping(alloc) or task.restart_requested:
                await self._kill(alloc, task)
                await waiter
                task.proc = None
                return None
            change = asyncio.ensure_future(task.wake.wait())
            await asyncio.wait([waiter, change], return_when=asyncio.FIRST_COMPLETED)
            change.cancel()
            task.wake.clear()
        task.proc = None
        return waiter.result()

    async def _exit_with(self, alloc: dict[str, Any], task: _Task, kind: str, msg: str) -> int:
        self._event(task, kind, msg, FailsTask=True, DriverError=msg)
        await self._touch(alloc)
        return 1

    async def _kill(self, alloc: dict[str, Any], task: _Task) -> None:
        proc = task.proc
        timeout = (task.spec.get("KillTimeout") or 5 * NS) / NS
        sig = getattr(signal, task.spec.get("KillSignal") or "SIGTERM", signal.SIGTERM)
        if task.restart_requested:
            self._event(task, "Restart Signaled", "User requested running tasks to restart")
        self._event(
            task,
            "Killing",
            f"Sent interrupt. Waiting {timeout:g}s before force killing",
            KillTimeout=int(timeout * NS),
        )
        await self._touch(alloc)
        if proc is None or proc.returncode is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            await asyncio.wait_for(proc.wait(), min(timeout, self.max_kill_wait))
        except TimeoutError:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await proc.wait()

    def _desire_stop(self, alloc: dict[str, Any], why: str) -> dict[str, Any]:
        alloc.update(DesiredStatus="stop", DesiredDescription=why, AllocModifyIndex=self.index + 1)
        for task in self.tasks.get(alloc["ID"], {}).values():
            task.wake.set()
        return alloc

    async def stop_alloc(self, alloc_id: str, why: str) -> None:
        await self.commit(
            "AllocationUpdateDesiredStatus", ("allocs", self._desire_stop(self.allocs[alloc_id], why))
        )

    async def restart_alloc(self, alloc_id: str) -> None:
        for task in self.tasks[alloc_id].values():
            if task.state["State"] == "running":
                task.restart_requested = True
                task.wake.set()

    async def shutdown(self) -> None:
        for alloc in self.allocs.values():
            alloc["DesiredStatus"] = "stop"
            for task in self.tasks.get(alloc["ID"], {}).values():
                task.wake.set()
        for tasks in self.tasks.values():
            for task in tasks.values():
                if task.proc is not None and task.proc.returncode is None:
                    try:
                        os.killpg(task.proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        for t in list(self._background):
            t.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    # -- task environment, templates, paths -------------------------------------------------

    def _task_env(
        self, alloc: dict[str, Any], task: _Task, node: dict[str, Any], image: DoubleImage | None
    ) -> dict[str, str]:
        job = alloc["Job"]
        res = alloc["AllocatedResources"]["Tasks"][task.name]
        env: dict[str, str] = dict(image.env) if image else {}
        env.update(
            {
                "NOMAD_ALLOC_DIR": "/alloc",
                "NOMAD_TASK_DIR": "/local",
                "NOMAD_SECRETS_DIR": "/secrets",
                "NOMAD_ALLOC_ID": alloc["ID"],
                "NOMAD_SHORT_ALLOC_ID": alloc["ID"][:8],
                "NOMAD_ALLOC_NAME": alloc["Name"],
                "NOMAD_ALLOC_INDEX": alloc["Name"].rsplit("[", 1)[1].rstrip("]"),
                "NOMAD_GROUP_NAME": alloc["TaskGroup"],
                "NOMAD_TASK_NAME": task.name,
                "NOMAD_JOB_ID": job["ID"],
                "NOMAD_JOB_NAME": job["Name"],
                "NOMAD_NAMESPACE": alloc["Namespace"],
                "NOMAD_REGION": self.region,
                "NOMAD_DC": node["Datacenter"],
                "NOMAD_CPU_LIMIT": str(res["Cpu"]["CpuShares"]),
                "NOMAD_MEMORY_LIMIT": str(res["Memory"]["MemoryMB"]),
            }
        )
        for port in alloc["AllocatedResources"]["Shared"]["Ports"] or []:
            label, value = port["Label"], str(port["Value"])
            env.update(
                {
                    f"NOMAD_PORT_{label}": value,
                    f"NOMAD_HOST_PORT_{label}": value,
                    f"NOMAD_IP_{label}": "127.0.0.1",
                    f"NOMAD_ADDR_{label}": f"127.0.0.1:{value}",
                }
            )
        meta = {**(job.get("Meta") or {})}
        for tg in job["TaskGroups"]:
            if tg["Name"] == alloc["TaskGroup"]:
                meta.update(tg.get("Meta") or {})
        meta.update(task.spec.get("Meta") or {})
        for k, v in meta.items():
            env[f"NOMAD_META_{k}"] = v
            env[f"NOMAD_META_{k.upper()}"] = v
        ids = [i for d in res["Devices"] or [] for i in d["DeviceIDs"]]
        if ids:
            env["NVIDIA_VISIBLE_DEVICES"] = ",".join(ids)
        attrs = {f"attr.{k}": v for k, v in node["Attributes"].items()}
        attrs.update(
            {
                "node.unique.id": node["ID"],
                "node.datacenter": node["Datacenter"],
                "node.unique.name": node["Name"],
                "node.class": node["NodeClass"],
            }
        )
        for k, v in (task.spec.get("Env") or {}).items():
            env[k] = _interpolate(v, {**attrs, **env})
        return env

    def _path_map(
        self, alloc: dict[str, Any], task: _Task, task_dir: Path, image: DoubleImage | None
    ) -> dict[str, str]:
        paths = {
            "/alloc": str(self.alloc_dir(alloc["ID"]) / "alloc"),
            "/local": str(task_dir / "local"),
            "/secrets": str(task_dir / "secrets"),
        }
        if image:
            for p in image.paths:
                host = task_dir / "rootfs" / p.lstrip("/")
                host.mkdir(parents=True, exist_ok=True)
                paths[p] = str(host)
            if image.python_env:
                host = task_dir / "rootfs" / image.python_env.lstrip("/")
                _python_env(host)
                paths[image.python_env] = str(host)
            for p, content in image.files.items():
                host = task_dir / "rootfs" / p.lstrip("/")
                host.parent.mkdir(parents=True, exist_ok=True)
                host.write_text(content)
                paths.setdefault(str(Path(p).parent), str(host.parent))
        tg = next(g for g in alloc["Job"]["TaskGroups"] if g["Name"] == alloc["TaskGroup"])
        node = self.nodes[alloc["NodeID"]]
        for mount in task.spec.get("VolumeMounts") or []:
            vol = (tg.get("Volumes") or {}).get(mount["Volume"])
            if vol and vol["Type"] == "host":
                paths[mount["Destination"].rstrip("/")] = node["HostVolumes"][vol["Source"]]["Path"]
        return paths

    @staticmethod
    def _host_view(value: str, paths: dict[str, str]) -> str:
        for prefix in sorted(paths, key=len, reverse=True):
            value = re.sub(
                r"(?<![\w./-])" + re.escape(prefix) + r"(?=/|$|[^\w.-])", lambda _m, p=prefix: paths[p], value
            )
        return value.replace("0.0.0.0", "127.0.0.1")

    def _render_templates(
        self, alloc: dict[str, Any], task: _Task, task_dir: Path, env: dict[str, str]
    ) -> dict[str, str]:
        template_env: dict[str, str] = {}
        ns = alloc["Namespace"]

        def variable(path: str) -> dict[str, str] | None:
            if "@" in path:
                path, other = path.split("@", 1)
                ns_ = other.split(".", 1)[0]
            else:
                ns_ = ns
            var = self.variables.get((ns_, path))
            if var is None:
                return None
            allowed = _workload_may_read(alloc, task.name, path) and ns_ == ns
            if not allowed:
                raise gotmpl.TemplateError(f"nomadVar {path}: Permission denied")
            return dict(var["Items"])

        for tmpl in task.spec.get("Templates") or []:
            text = gotmpl.render(
                tmpl.get("EmbeddedTmpl") or "",
                tmpl.get("LeftDelim") or "{{",
                tmpl.get("RightDelim") or "}}",
                variable,
                env,
            )
            dest = Path(tmpl["DestPath"])
            target = (
                task_dir / dest if not dest.is_absolute() else Path(self._host_view(str(dest), task.paths))
            )
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            os.chmod(target, int(tmpl.get("Perms") or "0644", 8))
            if tmpl.get("Envvars"):
                for line in text.splitlines():
                    if "=" in line and not line.lstrip().startswith("#"):
                        k, v = line.split("=", 1)
                        template_env[k.strip()] = v.strip()
        return template_env

    # -- stats and files --------------------------------------------------------------------

    def alloc_stats(self, alloc_id: str) -> dict[str, Any]:
        alloc = self.allocs[alloc_id]
        tasks_out = {}
        total_rss, total_pct, total_ticks = 0, 0.0, 0.0
        for task in self.tasks[alloc_id].values():
            rss, ticks = (0, 0.0)
            if task.proc is not None and task.proc.returncode is None:
                rss, ticks = _proc_tree_usage(task.proc.pid)
            now = time.monotonic()
            pct = 0.0
            if task.cpu_sample is not None and now > task.cpu_sample[0]:
                pct = max(0.0, (ticks - task.cpu_sample[1]) / (now - task.cpu_sample[0]) * 100)
            task.cpu_sample = (now, ticks)
            usage = _resource_usage(rss, pct, ticks)
            total_rss += rss
            total_pct += pct
            total_ticks += ticks
            tasks_out[task.name] = {"ResourceUsage": usage, "Timestamp": _now_ns(), "Pids": None}
        usage = _resource_usage(total_rss, total_pct, total_ticks)
        # nomad-device-nvidia's stats.go names; it reports none for MIG devices.
        groups = {g["Name"]: g for g in self.nodes[alloc["NodeID"]]["NodeResources"]["Devices"] or []}
        stats = []
        for dev in [d for t in alloc["AllocatedResources"]["Tasks"].values() for d in t["Devices"] or []]:
            total = groups[dev["Name"]]["Attributes"]["memory"]["Int"]
            memory = {
                "Unit": "MiB",
                "Desc": "UsedMemory / TotalMemory",
                "IntNumeratorVal": 1024,
                "IntDenominatorVal": total,
            }
            attrs = {
                "GPU utilization": {"Unit": "%", "IntNumeratorVal": 7},
                "Memory state": memory,
                "Temperature": {"Unit": "C", "IntNumeratorVal": 41},
            }
            instances = {
                i: {
                    "Summary": memory,
                    "Stats": {"Attributes": attrs, "Nested": None},
                    "Timestamp": _rfc3339(_now_ns()),
                }
                for i in dev["DeviceIDs"]
                if not i.startswith("MIG-")
            }
            if instances:
                stats.append({**{k: dev[k] for k in ("Vendor", "Type", "Name")}, "InstanceStats": instances})
        usage["DeviceStats"] = stats or None
        return {"ResourceUsage": usage, "Tasks": tasks_out, "Timestamp": _now_ns()}

    def fs_path(self, alloc_id: str, path: str) -> Path:
        base = self.alloc_dir(alloc_id).resolve()
        target = (base / path.lstrip("/")).resolve()
        if target != base and base not in target.parents:
            raise PermissionError(f"Path is outside of the allocation directory: {path}")
        rel = target.relative_to(base).parts
        if len(rel) >= 2 and rel[1] == "secrets":
            raise PermissionError(f"Reading secret file prohibited: {path}")
        return target

    def remove_alloc_dirs(self) -> None:
        shutil.rmtree(self.root / "allocs", ignore_errors=True)


def _resource_usage(rss: int, pct: float, ticks: float) -> dict[str, Any]:
    return {
        "MemoryStats": {
            "RSS": rss,
            "Cache": 0,
            "Swap": 0,
            "MappedFile": 0,
            "Usage": rss,
            "MaxUsage": 0,
            "KernelUsage": 0,
            "KernelMaxUsage": 0,
            "Measured": ["RSS", "Cache", "Swap", "Usage"],
        },
        "CpuStats": {
            "SystemMode": 0.0,
            "UserMode": 0.0,
            "TotalTicks": ticks,
            "ThrottledPeriods": 0,
            "ThrottledTime": 0,
            "Percent": pct,
            "Measured": ["Throttled Periods", "Throttled Time", "Percent"],
        },
        "DeviceStats": None,
    }


def _proc_tree_usage(root_pid: int) -> tuple[int, float]:
    """RSS bytes and CPU seconds of a process and its descendants, from /proc."""
    parents: dict[int, int] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry)
        parents[pid] = int(fields[1])
        stats[pid] = fields
    tree = {root_pid}
    changed = True
    while changed:
        changed = False
        for pid, ppid in parents.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                changed = True
    page = os.sysconf("SC_PAGE_SIZE")
    hz = os.sysconf("SC_CLK_TCK")
    rss, ticks = 0, 0.0
    for pid in tree:
        fields = stats.get(pid)
        if fields:
            ticks += (int(fields[11]) + int(fields[12])) / hz
            rss += int(fields[21]) * page
    return rss, ticks


def _workload_may_read(alloc: dict[str, Any], task: str, path: str) -> bool:
    job = alloc["JobID"]
    group = alloc["TaskGroup"]
    return path in (
        "nomad/jobs",
        f"nomad/jobs/{job}",
        f"nomad/jobs/{job}/{group}",
        f"nomad/jobs/{job}/{group}/{task}",
    )


def _interpolate(value: str, env: dict[str, str]) -> str:
    """Nomad's ``${...}`` interpolation: known names are replaced, unknown ones kept verbatim."""
    return re.sub(r"\$\{([^}]+)\}", lambda m: env.get(m.group(1), m.group(0)), value)


def _node_value(node: dict[str, Any], target: str) -> str | None:
    m = re.fullmatch(r"\$\{(.+)\}", target or "")
    if not m:
        return target
    key = m.group(1)
    if key.startswith("attr."):
        return node["Attributes"].get(key[5:])
    if key.startswith("meta."):
        return (node.get("Meta") or {}).get(key[5:])
    return {
        "node.unique.id": node["ID"],
        "node.datacenter": node["Datacenter"],
        "node.unique.name": node["Name"],
        "node.class": node["NodeClass"],
        "node.pool": node["NodePool"],
    }.get(key)


def _compare(left: str | float | None, op: str, right: str) -> bool:
    if op in ("is_set",):
        return left is not None
    if op in ("is_not_set",):
        return left is None
    if left is None:
        return False
    if op in ("=", "==", "is"):
        return str(left) == right
    if op in ("!=", "not"):
        return str(left) != right
    if op == "regexp":
        return re.search(right, str(left)) is not None
    if op.startswith("set_contains"):
        have = {s.strip() for s in str(left).split(",")}
        want = {s.strip() for s in right.split(",")}
        return bool(have & want) if op == "set_contains_any" else want <= have
    if op in ("<", "<=", ">", ">="):
        try:
            lv, rv = float(left), float(right)
        except ValueError:
            lv, rv = str(left), right  # type: ignore[assignment]
        return {"<": lv < rv, "<=": lv <= rv, ">": lv > rv, ">=": lv >= rv}[op]  # type: ignore[operator]
    return True  # version/semver/distinct_*: not modelled; treated as satisfied


def _node_constraint(node: dict[str, Any], c: dict[str, Any]) -> bool:
    op = c.get("Operand") or "="
    if op in ("distinct_hosts", "distinct_property"):
        return True
    return _compare(
        _node_value(node, c.get("LTarget") or ""), op, _node_value(node, c.get("RTarget") or "") or ""
    )


def _constraint_text(c: dict[str, Any]) -> str:
    """``Constraint.String()``: how ConstraintFiltered names a failed constraint."""
    return f"{c.get('LTarget', '')} {c.get('Operand', '=')} {c.get('RTarget', '')}".strip()


def dump(obj: Any) -> bytes:
    return json.dumps(obj).encode()
