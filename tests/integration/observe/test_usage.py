"""The usage history through the real ``ml`` against a real agent and a real JupyterLab: samples,
an OOM kill counted by the workspace's cgroup, restarts and limit changes as events, the
history's JSON, the text and HTML reports, and ``/metrics`` behind its key and on its own
listener."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from fetchml_agent.auth import api_key_verifier
from tests.conftest import KEYS, AgentProcess, free_port
from tests.integration.jupyter import _request, execute, split_url

SCRAPE_KEY = "scrape-key-0123456789abcdef"


def _get(url: str, key: str | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _value(text: str, series: str) -> float:
    """The value of one exact series line of the Prometheus text format (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _wait_history(agent: AgentProcess, name: str, ok: Any, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    doc: dict[str, Any] = {}
    while time.monotonic() < deadline:
        doc = agent.ml_json("jupyter", "stats", name, "--since", "1h")
        if ok(doc):
            return doc
        time.sleep(0.5)
    raise AssertionError(f"the history never showed what was expected: {json.dumps(doc)[:2000]}")


@pytest.mark.slow
def test_history_events_reports_and_metrics(tmp_path: Path) -> None:
    mport = free_port()
    agent = AgentProcess(tmp_path / "agent", free_port(), {
        "usage": {"interval": "1s", "disk_interval": "1s"},
        "metrics": {"scrape_key_verifier": api_key_verifier(SCRAPE_KEY), "listen": f"127.0.0.1:{mport}"},
    })
    with agent.running():
        ws = agent.ml_json("jupyter", "create", "hog", "--memory", "320m", "--cpu", "1")
        base, token = split_url(ws["url"])
        Path(ws["path"], "data.bin").write_bytes(b"\0" * (3 * 1024 * 1024))
        _request(base, token, "POST", "api/kernels", {"name": "python3"})  # one kernel left running
        doc = _wait_history(agent, "hog", lambda d: any(p["kernels"] for p in d["series"])
                            and any(p["disk_bytes"] and p["disk_bytes"] >= 3 * 2**20 for p in d["series"]))
        last = doc["series"][-1]
        assert last["memory_limit_bytes"] == 320 * 2**20 and last["cpu_limit_cores"] == 1
        assert last["memory_bytes"] > 10 * 2**20 and last["kernels"] >= 1
        assert doc["summary"]["memory_bytes"]["max"] >= last["memory_bytes"] * 0.5

        if ws["limits_enforced"]:
            # A kernel that allocates more than the limit: the cgroup's OOM killer ends it.
            with pytest.raises(Exception):  # noqa: B017 - the kernel dies under it, however the client sees that
                execute(ws["url"], "b = b'x' * (1024 * 1024 * 1024)\nprint(len(b))", timeout=40)
            doc = _wait_history(agent, "hog", lambda d: any(e["kind"] == "oom_kill" for e in d["events"]))
            oom = next(e for e in doc["events"] if e["kind"] == "oom_kill")
            assert oom["details"]["count"] >= 1 and oom["details"]["memory_limit_bytes"] == 320 * 2**20

        agent.ml("jupyter", "scale", "hog", "--memory", "400m")
        agent.ml("jupyter", "restart", "hog")
        doc = _wait_history(agent, "hog", lambda d: {"limit_change", "restart"} <= {e["kind"] for e in d["events"]})
        change = next(e for e in doc["events"] if e["kind"] == "limit_change")
        assert change["details"]["before"]["memory_mb"] == 320 and change["details"]["after"]["memory_mb"] == 400

        text = agent.ml("jupyter", "stats", "hog", "--since", "1h").stdout
        assert re.search(r"memory\s+[▁▂▃▄▅▆▇█ ]+\s+mean", text), text
        assert "limit_change" in text

        report = agent.ml("jupyter", "report", "hog", "--since", "2h").stdout
        assert "memory" in report and "advice:" in report and "limits changed" in report
        out = tmp_path / "report.html"
        agent.ml("jupyter", "report", "hog", "--format=html", "-o", str(out))
        page = out.read_text()
        assert "<script" not in page and "http://" not in page.split("<body>", 1)[1].replace("http://www.w3.org", "")
        assert 'id="memory"' in page and "<polyline" in page and 'class="event limit_change"' in page
        if ws["limits_enforced"]:
            assert 'class="event oom_kill"' in page and "OOM kill" in page
        as_json = agent.ml_json("jupyter", "report", "hog", "--format=json")
        assert as_json["workspace"]["name"] == "hog" and as_json["history"]["series"] and as_json["advice"]

        # /metrics: the scrape key or an admin's key on the main port; no key on metrics.listen.
        assert _get(agent.http_url + "/metrics")[0] == 401
        assert _get(agent.http_url + "/metrics", KEYS["bob"])[0] == 403
        assert _get(agent.http_url + "/metrics", KEYS["admin"])[0] == 200
        status, body = _get(agent.http_url + "/metrics", SCRAPE_KEY)
        assert status == 200
        status, own = _get(f"http://127.0.0.1:{mport}/metrics")
        assert status == 200 and "fetchml_workspaces" in own
        assert _get(f"http://127.0.0.1:{mport}/api/v1/status")[0] == 404
        assert _value(body, 'fetchml_workspaces{runtime="local",status="running"}') == 1
        assert _value(body, 'fetchml_workspace_start_duration_seconds_count{outcome="ok",runtime="local"}') >= 3
        assert _value(body, 'fetchml_workspace_events_total{kind="limit_change"}') >= 1
        assert _value(body, 'fetchml_request_duration_seconds_count{operation="workspace_history",outcome="ok",'
                            'transport="ws"}') >= 1
        assert _value(body, 'fetchml_audit_chain_verified') == 1
        assert "hog" not in body  # no workspace names as labels unless configured
        if ws["limits_enforced"]:
            assert _value(body, 'fetchml_workspace_events_total{kind="oom_kill"}') >= 1
        agent.ml("jupyter", "delete", "hog", "--yes")
        gone = agent.ml("jupyter", "stats", "hog", "--since", "1h", "--json", check=False)
        assert gone.returncode == 4
