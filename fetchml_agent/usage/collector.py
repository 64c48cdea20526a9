"""The gauges of ``/metrics`` that describe state, computed when Prometheus scrapes.

Everything here is read from memory (the agent's workspace records, the runtime's GPU allocator,
the sampler's last sweep, the package index's counters): a scrape costs no store query and no
backend call. Per-workspace usage series carry a ``workspace`` label only with
``metrics.workspace_labels: true``; otherwise they are sums over the agent's running workspaces.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..service.context import AgentContext
from .service import Usage

__all__ = ["STATUSES", "collect"]

#: Every workspace status, so that a status with no workspace reads 0 instead of vanishing.
STATUSES = ("starting", "running", "stopping", "stopped", "failed", "missing")

_USAGE = (
    ("fetchml_workspace_cpu_usage_cores", "CPU in use (cores, averaged over the last sample's window)", "cpu_cores"),
    ("fetchml_workspace_memory_usage_bytes", "Memory in use", "memory_bytes"),
    ("fetchml_workspace_memory_limit_bytes", "Memory limit", "memory_limit_bytes"),
    ("fetchml_workspace_gpu_utilization_ratio", "Mean utilization of the workspace's GPUs (0-1)", "gpu_utilization"),
    ("fetchml_workspace_disk_usage_bytes", "Disk used by the workspace's files", "disk_bytes"),
)


def collect(agent: AgentContext, usage: Usage) -> Iterable[Metric]:
    """Yield every state gauge (see :data:`fetchml_agent.metrics.EXPORTED`)."""
    info = GaugeMetricFamily("fetchml_agent_info", "The agent's version and runtime", labels=["version", "runtime"])
    info.add_metric([agent.version, agent.runtime.name], 1)
    yield info

    counts: dict[tuple[str, str], int] = {(s, agent.runtime.name): 0 for s in STATUSES}
    for ws in agent.workspaces.values():
        counts[ws.status, ws.runtime] = counts.get((ws.status, ws.runtime), 0) + 1
    workspaces = GaugeMetricFamily("fetchml_workspaces", "Workspaces by status and runtime", labels=["status", "runtime"])
    for (status, runtime), n in sorted(counts.items()):
        workspaces.add_metric([status, runtime], n)
    yield workspaces

    latest = usage.all_latest()
    kernels: dict[str, int] = {"idle": 0, "busy": 0}
    for sample in latest.values():
        for state, n in (sample.get("kernel_states") or {}).items():
            kernels[state] = kernels.get(state, 0) + n
    k = GaugeMetricFamily("fetchml_kernels", "Kernels in the running workspaces, by execution state (running "
                          "kernels: the sum; busy: execution_state=\"busy\"), as of the last sample",
                          labels=["execution_state"])
    for state, n in sorted(kernels.items()):
        k.add_metric([state], n)
    yield k

    yield from _gpus(agent, usage)
    yield from _usage(agent, usage)

    index = agent.services.packages.index
    requests = CounterMetricFamily("fetchml_index_requests", "Requests to the filtering package index, by kind "
                                   "(root, project, file) and status class", labels=["kind", "status"])
    for (kind, status), n in sorted(index.requests.items()):
        requests.add_metric([kind, status], n)
    yield requests
    lookups = CounterMetricFamily("fetchml_index_cache_lookups", "Package index cache lookups, by cache (page, "
                                  "file) and result (hit, miss)", labels=["cache", "result"])
    for (cache, result), n in sorted(index.cache_lookups().items()):
        lookups.add_metric([cache, result], n)
    yield lookups

    runs = GaugeMetricFamily("fetchml_runs", "Experiment runs queued and running (as of the last sample)",
                             labels=["status"])
    for status in ("queued", "running"):
        runs.add_metric([status], usage.runs.get(status, 0))
    yield runs
    sessions = GaugeMetricFamily("fetchml_access_sessions_open", "Open browser sessions (JupyterLab and the home "
                                 "page), as of the last sample")
    sessions.add_metric([], usage.sessions_open)
    yield sessions


def _gpus(agent: AgentContext, usage: Usage) -> Iterable[Metric]:
    gpus = agent.runtime.gpus
    g = GaugeMetricFamily("fetchml_gpus", "GPUs the agent assigns on this host, by state (assigned, free); none "
                          "where the backend places GPUs itself", labels=["state"])
    if gpus is not None:
        free = len(gpus.free())
        g.add_metric(["assigned"], gpus.capacity - free)
        g.add_metric(["free"], free)
    yield g
    util = GaugeMetricFamily("fetchml_gpu_utilization_ratio", "Utilization of each host GPU (0-1), as of the last "
                             "sample of a workspace holding GPUs", labels=["gpu"])
    mem = GaugeMetricFamily("fetchml_gpu_memory_used_bytes", "Memory in use on each host GPU", labels=["gpu"])
    for index, d in sorted(usage.gpu_use.items()):
        if d.get("utilization_percent") is not None:
            util.add_metric([str(index)], d["utilization_percent"] / 100.0)
        if d.get("memory_used_mib") is not None:
            mem.add_metric([str(index)], d["memory_used_mib"] * 1024 * 1024)
    yield util
    yield mem


def _usage(agent: AgentContext, usage: Usage) -> Iterable[Metric]:
    latest = usage.all_latest()
    per_workspace = agent.services.metrics.workspace_labels
    names = {ws.id: ws.name for ws in agent.workspaces.values()} if per_workspace else {}
    for name, text, key in _USAGE:
        if per_workspace:
            fam = GaugeMetricFamily(name, text + ", per workspace", labels=["workspace"])
            for wid, sample in latest.items():
                if sample.get(key) is not None and wid in names:
                    fam.add_metric([names[wid]], sample[key])
        else:
            fam = GaugeMetricFamily(name, text + ", summed over the running workspaces")
            fam.add_metric([], sum(s[key] for s in latest.values() if s.get(key) is not None))
        yield fam
