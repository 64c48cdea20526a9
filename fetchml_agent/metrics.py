"""The agent's Prometheus metrics: every name, help text and label set, declared once.

One :class:`Metrics` per agent (``agent.services.metrics``), with a registry of its own (several
agents may share a process in tests). Counters and histograms are updated where things happen
(the transports, the workspace start, the runs' finished hook, the audit listener); gauges of
state are read when ``/metrics`` is scraped, by collectors that the layers above add with
:meth:`Metrics.add_collector` (they see the agent; this module sees nothing of it).

Names follow Prometheus' conventions: the ``fetchml_`` prefix, base units (``_seconds``,
``_bytes``, ``_ratio``), ``_total`` on counters. Label sets stay bounded: runtimes, outcomes,
operation names, policy rules, workspace statuses; never workspace names, unless
``metrics.workspace_labels: true`` adds them to the per-workspace usage gauges.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "EXPORTED", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# No ``_created`` series beside each counter and histogram: Prometheus does not use them, and they
# double the size of a scrape.
disable_created_metrics()

_START_BUCKETS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0)
_REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0)
_RUN_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0)

#: Every metric family the agent exports (its name as ``# HELP`` shows it), with its type: the
#: Grafana dashboard's test checks each query against this table.
EXPORTED: dict[str, str] = {
    # events counted where they happen
    "fetchml_workspace_start_duration_seconds": "histogram",
    "fetchml_workspace_create_duration_seconds": "histogram",
    "fetchml_request_duration_seconds": "histogram",
    "fetchml_websocket_connections_total": "counter",
    "fetchml_websocket_connections_open": "gauge",
    "fetchml_policy_decisions_total": "counter",
    "fetchml_run_duration_seconds": "histogram",
    "fetchml_culls_total": "counter",
    "fetchml_workspace_events_total": "counter",
    "fetchml_audit_events_total": "counter",
    "fetchml_audit_last_event_id": "gauge",
    "fetchml_usage_sweep_duration_seconds": "histogram",
    "fetchml_usage_samples_total": "counter",
    # state, read at scrape time (fetchml_agent/usage/collector.py)
    "fetchml_agent_info": "gauge",
    "fetchml_workspaces": "gauge",
    "fetchml_kernels": "gauge",
    "fetchml_gpus": "gauge",
    "fetchml_gpu_utilization_ratio": "gauge",
    "fetchml_gpu_memory_used_bytes": "gauge",
    "fetchml_workspace_cpu_usage_cores": "gauge",
    "fetchml_workspace_memory_usage_bytes": "gauge",
    "fetchml_workspace_memory_limit_bytes": "gauge",
    "fetchml_workspace_gpu_utilization_ratio": "gauge",
    "fetchml_workspace_disk_usage_bytes": "gauge",
    "fetchml_index_requests_total": "counter",
    "fetchml_index_cache_lookups_total": "counter",
    "fetchml_runs": "gauge",
    "fetchml_access_sessions_open": "gauge",
    # the audit chain's verification (fetchml_agent/governance/service.py)
    "fetchml_audit_chain_verified": "gauge",
    "fetchml_audit_chain_last_verification_timestamp_seconds": "gauge",
}


class _Hook(Collector):
    """A collector that yields what a function of the layers above returns at scrape time."""

    def __init__(self, fn: Callable[[], Iterable[Metric]]) -> None:
        self.fn = fn

    def collect(self) -> Iterable[Metric]:
        return self.fn()

    def describe(self) -> Iterable[Metric]:
        return []


class Metrics:
    """The agent's metrics; see the module docstring."""

    def __init__(self, *, workspace_labels: bool = False) -> None:
        self.workspace_labels = workspace_labels
        r = self.registry = CollectorRegistry(auto_describe=False)
        self.workspace_start = Histogram(
            "fetchml_workspace_start_duration_seconds",
            "Time from asking the runtime to start a workspace until JupyterLab answers (every start: "
            "create, start, restart, reset, scale; a warm-pool claim is one too)",
            ["runtime", "outcome"], buckets=_START_BUCKETS, registry=r)
        self.workspace_create = Histogram(
            "fetchml_workspace_create_duration_seconds",
            "Time of a whole ml jupyter create (record, policy checks, start), by outcome",
            ["runtime", "outcome"], buckets=_START_BUCKETS, registry=r)
        self.requests = Histogram(
            "fetchml_request_duration_seconds",
            "Time to answer one operation of the agent's API, by operation, transport (ws, http, web) and "
            "outcome (ok or the error's name)",
            ["operation", "transport", "outcome"], buckets=_REQUEST_BUCKETS, registry=r)
        self.ws_connections = Counter(
            "fetchml_websocket_connections", "WebSocket connections accepted on /ws", registry=r)
        self.ws_open = Gauge("fetchml_websocket_connections_open", "WebSocket connections open on /ws now", registry=r)
        self.policy_decisions = Counter(
            "fetchml_policy_decisions", "Package policy decisions, by decision, the rule that decided, and where "
            "(install, check, request, index)", ["decision", "rule", "via"], registry=r)
        self.run_duration = Histogram(
            "fetchml_run_duration_seconds", "Duration of finished experiment runs, by outcome (the _count is the "
            "number of runs per outcome)", ["outcome"], buckets=_RUN_BUCKETS, registry=r)
        self.culls = Counter("fetchml_culls", "Idle things shut down by the agent (kernels by ml jupyter optimize "
                             "--apply)", ["what"], registry=r)
        self.workspace_events = Counter(
            "fetchml_workspace_events", "Workspace events recorded in the usage history: oom_kill, restart, "
            "crash, cull, limit_change, start, stop", ["kind"], registry=r)
        self.audit_events = Counter("fetchml_audit_events", "Audit events written, by outcome", ["outcome"],
                                    registry=r)
        self.audit_last_id = Gauge("fetchml_audit_last_event_id", "Id of the newest audit event", registry=r)
        self.sweep = Histogram(
            "fetchml_usage_sweep_duration_seconds", "Time of one usage sampling sweep over the running workspaces",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0), registry=r)
        self.samples = Counter("fetchml_usage_samples", "Usage samples stored, by outcome (ok, error)", ["outcome"],
                               registry=r)

    def add_collector(self, fn: Callable[[], Iterable[Metric]]) -> None:
        """Add a function called at every scrape; it yields metric families of state."""
        self.registry.register(_Hook(fn))

    def render(self) -> bytes:
        """The text exposition format of every metric."""
        return generate_latest(self.registry)

    def observe_request(self, operation: str, transport: str, outcome: str, seconds: float) -> None:
        self.requests.labels(operation, transport, outcome).observe(seconds)

    def describe(self) -> dict[str, Any]:
        """For ``ml status``: whether per-workspace labels are on."""
        return {"workspace_labels": self.workspace_labels}
