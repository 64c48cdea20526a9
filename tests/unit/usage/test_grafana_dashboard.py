"""The Grafana dashboard the Ansible suite ships (roles/fetchml_agent/files/grafana/) asks only for
what the agent exports: every query's metric names resolve to a family of
:data:`fetchml_agent.metrics.EXPORTED` (with the ``_bucket``/``_count``/``_sum`` series of a
histogram, the ``_total`` of a counter), every label a query groups by or matches on is one that
family has, and every function is PromQL's."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from fetchml_agent.agent import Agent
from fetchml_agent.config import parse_config
from fetchml_agent.metrics import EXPORTED

DASHBOARD = Path(__file__).resolve().parents[3] / "roles" / "fetchml_agent" / "files" / "grafana" / "fetchml-agent.json"

_FUNCTIONS = {"sum", "avg", "min", "max", "count", "rate", "increase", "irate", "histogram_quantile", "time",
              "label_values", "clamp_min", "clamp_max", "topk", "bottomk", "abs", "delta", "deriv"}
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
# Labels Prometheus adds to every series it scrapes, and the histogram's bucket label.
_SCRAPE_LABELS = {"instance", "job"}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


@pytest.fixture
def labels(tmp_path: Path) -> dict[str, set[str]]:
    """Each exported family's label names, read from a real agent's metrics registry."""
    agent = Agent(parse_config({"data_dir": str(tmp_path / "data")}, path=tmp_path / "agent.yaml"))
    out: dict[str, set[str]] = {}
    for collector in list(agent.services.metrics.registry._collector_to_names):  # the registry has no public walk
        families = collector.collect()
        for fam in families:
            names = set(getattr(collector, "_labelnames", ()) or getattr(fam, "_labelnames", ()))
            for sample in fam.samples:
                names |= set(sample.labels) - {"le"}
            out[fam.name] = out.get(fam.name, set()) | names
    return out


def _queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for p in panels:
            found.extend((p["title"], t["expr"]) for t in p.get("targets", []))
            walk(p.get("panels", []))

    walk(dashboard["panels"])
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            found.append((f"variable {var['name']}", var["query"]["query"]))
    return found


def _family(series: str) -> str | None:
    """The exported family a series name belongs to."""
    if series in EXPORTED:
        return series
    for suffix, kind in (("_bucket", "histogram"), ("_count", "histogram"), ("_sum", "histogram")):
        base = series.removesuffix(suffix)
        if series.endswith(suffix) and EXPORTED.get(base) == kind:
            return base
    return None


def _parse(expr: str) -> tuple[set[str], set[str], set[str], set[str]]:
    """Metric names, label names used, function names and anything else that is an identifier."""
    variable = re.fullmatch(r"\s*label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*", expr)
    if variable:  # Grafana's query of a variable's values
        return {variable.group(1)}, {variable.group(2)}, {"label_values"}, set()
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label values, $variables)
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    used_labels: set[str] = set()
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        used_labels |= set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", matchers))
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    for grouping in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        used_labels |= {g.strip() for g in grouping.split(",") if g.strip()}
    expr = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", " ", expr)
    functions = set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(", expr))
    idents = set(re.findall(r"\b([A-Za-z_:][A-Za-z0-9_:]*)\b", expr)) - functions - _KEYWORDS
    metrics = {i for i in idents if i.startswith("fetchml_")}
    return metrics, used_labels, functions, idents - metrics


def test_the_dashboard_is_grafana_json_with_the_instance_variable(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "fetchml-agent" and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) >= 20
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "instance"}


def test_every_query_names_an_exported_metric_with_its_labels(dashboard: dict[str, Any],
                                                              labels: dict[str, set[str]]) -> None:
    queries = _queries(dashboard)
    assert len(queries) >= 30
    shown: set[str] = set()
    for title, expr in queries:
        metrics, used, functions, other = _parse(expr)
        assert metrics, f"{title}: {expr} names no metric"
        assert functions <= _FUNCTIONS, f"{title}: unknown function {functions - _FUNCTIONS}"
        assert not other, f"{title}: {expr}: {other} is neither a metric of the agent nor PromQL"
        families = set()
        for m in metrics:
            fam = _family(m)
            assert fam is not None, f"{title}: {m} is not a metric the agent exports"
            families.add(fam)
        # A label grouped by or matched on must be one some family of the query has (or Prometheus adds).
        available = set().union(*(labels[f.removesuffix("_total") if EXPORTED[f] == "counter" else f]
                                  for f in families)) | _SCRAPE_LABELS | {"le"}
        assert used <= available, f"{title}: {expr}: no such label {used - available}"
        shown |= families
    # The list: starts, workspaces by status, kernels, GPUs, policy, index, runs, WebSockets,
    # request latency, the audit chain, culls: all on the dashboard.
    missing = {"fetchml_workspace_start_duration_seconds", "fetchml_workspaces", "fetchml_kernels", "fetchml_gpus",
               "fetchml_gpu_utilization_ratio", "fetchml_policy_decisions_total", "fetchml_index_requests_total",
               "fetchml_index_cache_lookups_total", "fetchml_run_duration_seconds", "fetchml_websocket_connections_open",
               "fetchml_request_duration_seconds", "fetchml_audit_chain_verified", "fetchml_culls_total"} - shown
    assert not missing, missing


def test_the_parser_catches_a_wrong_name_or_label() -> None:
    """The check above would see a typo (it is not vacuous)."""
    metrics, used, functions, other = _parse('sum by (stat) (rate(fetchml_workspace{instance=~"$i"}[5m])) + up')
    assert metrics == {"fetchml_workspace"} and _family("fetchml_workspace") is None
    assert used == {"stat", "instance"} and functions == {"sum", "rate"} and other == {"up"}
