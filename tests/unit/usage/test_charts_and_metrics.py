"""Charts (SVG that carries its data, escaped text; sparklines), the metrics table against what
the agent exports, and how the sampler reads each runtime's stats."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fetchml_agent.agent import Agent
from fetchml_agent.config import parse_config
from fetchml_agent.metrics import EXPORTED
from fetchml_agent.store.workspaces import Workspace
from fetchml_agent.units import format_bytes, sparkline
from fetchml_agent.usage.charts import line_chart, small_chart, timeline
from fetchml_agent.usage.service import _Prev


def test_line_chart_draws_its_points_the_limit_and_the_events() -> None:
    pts = [(100.0 + i, float(i)) for i in range(10)] + [(111.0, None), (112.0, 3.0), (113.0, 4.0)]
    svg = line_chart("Memory <b>", pts, 100.0, 120.0, fmt=str, limit=8.0,
                     events=[{"ts": 105.0, "kind": "oom_kill", "details": {"count": 3}}], css_id="memory")
    assert 'data-points="12"' in svg and "<b>" not in svg and "Memory &lt;b&gt;" in svg
    lines = re.findall(r'<polyline class="series"[^>]*points="([^"]+)"', svg)
    assert [len(p.split()) for p in lines] == [10, 2]  # the gap splits the line
    assert 'class="limit"' in svg and 'class="event oom_kill"' in svg and "OOM kill ×3" in svg
    empty = line_chart("CPU", [], 0.0, 10.0, fmt=str)
    assert 'data-points="0"' in empty and "no samples" in empty


def test_small_chart_draws_every_value_and_a_near_limit() -> None:
    svg = small_chart("web1: memory <b>", [(0.0, 10.0), (1.0, None), (2.0, 30.0), (3.0, 20.0)], limit=40.0)
    assert 'data-points="3"' in svg and svg.count(",") == 3 and 'class="limit"' in svg
    assert "<b>" not in svg and "&lt;b&gt;" in svg  # the title is escaped
    assert small_chart("one value", [(0.0, 1.0)]) == ""  # nothing to draw: no chart
    far = small_chart("far below", [(0.0, 1.0), (1.0, 2.0)], limit=1000.0, height=30)
    assert 'class="limit"' in far and "1.0,29.0" in far  # drawn against the limit: near the bottom
    assert 'class="limit"' not in small_chart("no limit", [(0.0, 1.0), (1.0, 2.0)])


def test_timeline_colours_runs_by_outcome() -> None:
    runs = [{"id": "run-1", "target": "a.ipynb", "status": "succeeded", "queued_at": 10.0, "started_at": 11.0,
             "finished_at": 20.0, "duration_s": 9.0},
            {"id": "run-2", "target": "<x>", "status": "failed", "queued_at": 30.0, "started_at": 31.0,
             "finished_at": 35.0, "duration_s": 4.0}]
    svg = timeline(runs, 0.0, 40.0)
    assert 'data-points="2"' in svg and 'class="run succeeded"' in svg and 'class="run failed"' in svg
    assert "&lt;x&gt;" in svg and "9.0 s" in svg


def test_sparkline_and_sizes() -> None:
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7], 8) == "▁▂▃▄▅▆▇█"
    assert sparkline([1.0, None, 1.0], 3, top=2.0) == "▄ ▄"
    assert len(sparkline(list(range(1000)), 40)) == 40 and sparkline([], 10) == ""
    assert format_bytes(1.5 * 2**30) == "1.5 GiB" and format_bytes(None) == "–"


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    return Agent(parse_config({"data_dir": str(tmp_path / "data")}, path=tmp_path / "agent.yaml"))


def test_every_exported_family_is_declared_once(agent: Agent) -> None:
    """EXPORTED (what the dashboard test checks queries against) is exactly what /metrics has."""
    text = agent.services.metrics.render().decode()
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    declared = {(n.removesuffix("_total") if t == "counter" else n): t for n, t in EXPORTED.items()}
    assert families == declared


def _ws(**kw: object) -> Workspace:
    return Workspace(id="ws-1", name="one", owner="bob", path="/tmp", runtime="local", token="t", index_key="k",
                     created_at=0, updated_at=0, status="running", resources={"cpu": 2.0, "memory_mb": 1024},
                     runtime_state={"pid": 1}, **kw)  # type: ignore[arg-type]


def test_the_sampler_reads_each_runtime_s_keys(agent: Agent) -> None:
    usage = agent.services.usage
    from fetchml_agent.usage.service import Usage

    assert isinstance(usage, Usage)
    ws, prev = _ws(), _Prev("w1")
    # local: cumulative CPU seconds (a rate from two samples), bytes, an OOM counter
    s, ev = usage._normalize(ws, {"cpu_seconds": 10.0, "memory_bytes": 500, "oom_kills": 0}, prev, 100.0, None, None)
    prev.t = 100.0
    assert s.cpu_cores is None and s.memory_bytes == 500 and s.memory_limit_bytes == 1024 * 2**20 and not ev
    s, ev = usage._normalize(ws, {"cpu_seconds": 13.0, "memory_bytes": 600, "oom_kills": 2}, prev, 102.0,
                             {"idle": 1, "busy": 2}, 4096.0)
    assert s.cpu_cores == pytest.approx(1.5) and s.kernels == 3 and s.busy_kernels == 2 and s.disk_bytes == 4096
    assert [(e[3], e[4]["count"], e[4]["total"]) for e in ev] == [("oom_kill", 2, 2)]
    # docker: percent of one core, MiB, the engine's restart count (the first one only sets the base)
    prev = _Prev("w2")
    s, ev = usage._normalize(ws, {"cpu_percent": 250.0, "memory_mb": 10.0, "restarts": 1}, prev, 1.0, None, None)
    assert s.cpu_cores == 2.5 and s.memory_bytes == 10 * 2**20 and not ev
    s, ev = usage._normalize(ws, {"cpu_percent": 1.0, "memory_mb": 10.0, "restarts": 2, "oom_killed": True},
                             prev, 2.0, None, None)
    assert [e[3] for e in ev] == ["restart", "oom_kill"]
    # nomad: the allocation's device stats
    s, _ = usage._normalize(ws, {"cpu_percent": 0.0, "memory_bytes": 1, "gpus": [
        {"utilization_percent": 40, "memory_used_mb": 100}, {"utilization_percent": 60, "memory_used_mb": 300}]},
        _Prev("w3"), 1.0, None, None)
    assert s.gpu_utilization == pytest.approx(0.5) and s.gpu_memory_bytes == 400 * 2**20


def test_a_sweep_without_workspaces_stores_nothing_and_says_so(agent: Agent) -> None:
    async def main() -> None:
        await asyncio.get_running_loop().run_in_executor(None, agent.store.open)
        try:
            from fetchml_agent.usage.ops import usage_of

            assert await usage_of(agent).sweep() == []
            assert usage_of(agent).last_sweep["workspaces"] == 0
        finally:
            await asyncio.get_running_loop().run_in_executor(None, agent.store.close)

    asyncio.run(main())


def test_the_home_page_draws_a_workspace_s_charts_again_only_after_a_new_sample() -> None:
    from fetchml_agent.web.app import _charts

    ws = _ws()
    recent = [(100.0, 0.5, 1e8), (160.0, 0.7, 2e8)]
    cpu, memory = _charts(ws, recent, 2.0, 1024 * 2**20)
    assert 'data-points="2"' in cpu and "memory" in memory
    again = _charts(ws, list(recent), 2.0, 1024 * 2**20)
    assert again[0] is cpu and again[1] is memory  # the same strings: not drawn again
    newer = _charts(ws, [*recent, (220.0, 0.9, 3e8)], 2.0, 1024 * 2**20)
    assert 'data-points="3"' in newer[0]
    assert 'data-points="3"' in _charts(ws, [*recent, (220.0, 0.9, 3e8)], 4.0, 1024 * 2**20)[0]  # new limit
    assert _charts(ws, [], 2.0, None) == ("", "")
