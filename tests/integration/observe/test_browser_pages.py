"""The report file and the home page in a real browser: headless Chromium (Debian's ``chromium``,
installed by .ci/run) driven over its DevTools protocol with the access tests' helper.

The report's charts render (SVG with their data points) with no console error; on the home page a
person logs in with the same login as JupyterLab's, sees their workspace, stops and starts it and
opens its report; an admin approves a package request and verifies the audit chain. Every click
goes through the page's own forms. Screenshots go to the test's folder (the path is printed).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import KEYS, AgentProcess, free_port
from tests.integration.access.browser import Page, chromium_path, launch

pytestmark = pytest.mark.slow

CHROMIUM = chromium_path()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (Debian package 'chromium'; .ci/run installs it)")

CHART_POINTS = """(() => { const out = {};
  for (const svg of document.querySelectorAll('svg.chart')) {
    const lines = [...svg.querySelectorAll('polyline.series')];
    out[svg.id || svg.getAttribute('aria-label')] = {
      declared: Number(svg.dataset.points),
      drawn: lines.reduce((n, l) => n + l.points.numberOfItems, 0) + svg.querySelectorAll('circle.point').length,
      height: svg.getBoundingClientRect().height };
  }
  return JSON.stringify(out); })()"""


def _shot(page: Page, tmp_path: Path, name: str) -> None:
    path = page.screenshot(tmp_path / f"{name}.png")
    assert path.stat().st_size > 5000
    print(f"screenshot: {path}")


def _login(page: Page, base: str, user: str) -> None:
    page.goto(base + "/")
    page.wait_for("document.querySelector('#login') !== null", 30, "the login form")
    page.evaluate(f"""(() => {{ document.querySelector('#user').value = {json.dumps(user)};
        document.querySelector('#key').value = {json.dumps(KEYS[user])}; }})()""")
    page.click("#login")
    page.wait_for("document.querySelector('#workspaces, main p') !== null && location.pathname === '/'", 30,
                  f"the home page of {user}")


def _no_errors(page: Page, expected: str = "") -> None:
    """No console error, but for the refusal a test provoked on purpose (``expected``, a URL): a
    workspace the caller may not see is not found (404), one they see but may not act on is 403."""
    errors = page.errors(lambda text: bool(expected) and expected in text and ("403" in text or "404" in text))
    assert errors == [], errors


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> AgentProcess:
    a = AgentProcess(tmp_path_factory.mktemp("browser-agent"), free_port(), {
        "usage": {"interval": "1s"}, "package_management": {"approval_required": ["custom-package"]},
        "experiments": {"warm_runner_idle_s": 0}})  # each run its own interpreter: no warm runner left behind
    with a.running():
        ws = a.ml_json("jupyter", "create", "web1", "--memory", "1g", "--cpu", "1", "--experiment", "exp-web",
                       user="bob")
        # Two runs for the report's timeline: one succeeds, one fails.
        Path(ws["path"], "ok.py").write_text("import time\ntime.sleep(1)\nprint('fine')\n")
        Path(ws["path"], "bad.py").write_text("raise SystemExit(3)\n")
        for script, outcome in (("ok.py", "succeeded"), ("bad.py", "failed")):
            cp = a.ml("jupyter", "queue", "--workspace", "web1", "--script", script, "--wait", "--json", user="bob",
                      check=False)  # ml exits non-zero for a failed run
            assert json.loads(cp.stdout)["status"] == outcome, cp.stdout
        deadline = time.monotonic() + 30
        while len(a.ml_json("jupyter", "stats", "web1", "--since", "1h", user="bob")["series"]) < 3:
            assert time.monotonic() < deadline, "no samples"
            time.sleep(0.5)
        yield a
        a.ml("jupyter", "stop", "web1", user="bob")


@needs_chromium
def test_the_report_file_renders_its_charts(agent: AgentProcess, tmp_path: Path) -> None:
    assert CHROMIUM is not None
    out = tmp_path / "report.html"
    agent.ml("jupyter", "report", "web1", "--format=html", "-o", str(out), user="bob")
    with launch(CHROMIUM, tmp_path) as browser:
        page = browser.new_page()
        page.failure_shot = tmp_path / "failed.png"
        page.goto(out.as_uri())
        page.wait_for("document.querySelector('svg#memory') !== null", 30, "the memory chart")
        charts = json.loads(page.evaluate(CHART_POINTS))
        assert {"cpu", "memory"} <= set(charts), charts
        for name in ("cpu", "memory"):
            assert charts[name]["drawn"] == charts[name]["declared"] >= 2 and charts[name]["height"] > 50, charts
        assert page.evaluate("document.querySelector('svg#memory line.limit') !== null")
        # The runs on their timeline, coloured by outcome, each bar as wide as it lasted (> 0).
        bars = json.loads(page.evaluate("""JSON.stringify([...document.querySelectorAll('svg.timeline g.run')]
            .map(g => ({outcome: g.classList[1], width: g.querySelector('rect').getBoundingClientRect().width})))"""))
        assert sorted(b["outcome"] for b in bars) == ["failed", "succeeded"] and all(b["width"] > 0 for b in bars), bars
        assert "Workspace report: web1" in page.evaluate("document.title")
        browser.pump(0.5)
        _no_errors(page)
        _shot(page, tmp_path, "report")


@needs_chromium
def test_a_person_uses_the_home_page(agent: AgentProcess, tmp_path: Path) -> None:
    assert CHROMIUM is not None
    with launch(CHROMIUM, tmp_path) as browser:
        page = browser.new_page()
        page.failure_shot = tmp_path / "failed.png"
        _login(page, agent.http_url, "bob")
        assert page.evaluate("document.querySelector('#ws-web1').dataset.status") == "running"
        small = json.loads(page.evaluate("""JSON.stringify([...document.querySelectorAll('#ws-web1 svg.chart.small')]
            .map(svg => ({kind: svg.classList.contains('memory') ? 'memory' : 'cpu', declared: Number(svg.dataset.points),
                          drawn: svg.querySelector('polyline.series').points.numberOfItems,
                          height: svg.getBoundingClientRect().height})))"""))
        assert "memory" in {c["kind"] for c in small}, small  # the last samples, drawn on the home page
        assert all(c["drawn"] == c["declared"] >= 2 and c["height"] > 10 for c in small), small
        href = page.evaluate("document.querySelector('#ws-web1 a.open').href")
        assert "token=fmlp." in href  # bob's own URL, as ml jupyter info prints it
        _shot(page, tmp_path, "home-bob")

        page.click("#ws-web1 button.stop")
        page.wait_for("document.querySelector('#ws-web1') && document.querySelector('#ws-web1').dataset.status "
                      "=== 'stopped'", 60, "web1 stopped")
        assert "stopped workspace web1" in page.evaluate("document.querySelector('#notice').textContent")
        assert agent.ml_json("jupyter", "info", "web1", user="bob")["status"] == "stopped"
        page.click("#ws-web1 button.start")
        page.wait_for("document.querySelector('#ws-web1') && document.querySelector('#ws-web1').dataset.status "
                      "=== 'running'", 90, "web1 running again")
        page.click("#ws-web1 button.restart")
        page.wait_for("document.querySelector('#notice') && document.querySelector('#notice').textContent"
                      ".includes('web1') && document.querySelector('#ws-web1').dataset.status === 'running'", 90,
                      "web1 restarted")
        events = agent.ml_json("jupyter", "audit", "web1", user="bob")["events"]
        done = {(e["user"], e["action"]) for e in events}
        assert {("bob", "workspace.stop"), ("bob", "workspace.start"), ("bob", "workspace.restart")} <= done, done

        page.click("#ws-web1 a.report")
        page.wait_for("document.querySelector('svg#memory') !== null", 60, "the report page")
        charts = json.loads(page.evaluate(CHART_POINTS))
        assert charts["memory"]["drawn"] >= 2
        _shot(page, tmp_path, "report-page")
        browser.pump(0.5)
        _no_errors(page)


@needs_chromium
def test_an_admin_decides_a_request_and_verifies_the_audit(agent: AgentProcess, tmp_path: Path) -> None:
    assert CHROMIUM is not None
    first = agent.ml_json("jupyter", "request", "web1", "custom-package", "--reason", "parsing", user="bob")
    second = agent.ml_json("jupyter", "request", "web1", "custom-package<2", "--reason", "again", user="bob")
    with launch(CHROMIUM, tmp_path) as browser:
        page = browser.new_page()
        page.failure_shot = tmp_path / "failed.png"
        _login(page, agent.http_url, "carol")  # no role on web1, not an admin
        assert page.evaluate("document.querySelector('#ws-web1') === null && document.querySelector('#requests') "
                             "=== null")
        page.goto(agent.http_url + "/ui/workspaces/web1/report")  # nor may she read its report
        page.wait_for("document.querySelector('p.error') !== null", 30, "the refusal")
        assert "svg" not in page.evaluate("document.body.innerHTML")
        page.goto(agent.http_url + "/")
        page.wait_for("document.querySelector('#logout') !== null", 30, "the home page again")
        page.click("#logout")
        page.wait_for("document.querySelector('#login') !== null", 30, "the login form again")

        _login(page, agent.http_url, "admin")
        ok, no = first["request"]["id"], second["request"]["id"]
        assert page.evaluate(f"document.querySelector('#req-{ok}') !== null && document.querySelector('#req-{no}') "
                             "!== null")
        page.click(f"#req-{ok} button.approve")
        page.wait_for(f"document.querySelector('#notice') && document.querySelector('#req-{ok}') === null", 30,
                      "the approval")
        assert "approved" in page.evaluate("document.querySelector('#notice').textContent")
        page.evaluate(f"document.querySelector('#req-{no} input.reason').value = 'use the approved range'")
        page.click(f"#req-{no} button.deny")
        page.wait_for(f"document.querySelector('#req-{no}') === null", 30, "the denial")
        decided = {r["id"]: r for r in agent.ml_json("jupyter", "review", user="admin")["requests"]}
        assert decided[ok]["status"] == "approved" and decided[no]["status"] == "denied"
        assert decided[no]["decision_reason"] == "use the approved range" or "use the approved range" in json.dumps(
            decided[no])

        page.click("#verify")
        page.wait_for("document.querySelector('#chain .ok') !== null", 60, "the chain verified intact")
        actions = [e["action"] for e in agent.ml_json("jupyter", "audit", "--action", "audit.verify")["events"]]
        assert "audit.verify" in actions
        _shot(page, tmp_path, "home-admin")
        browser.pump(0.5)
        _no_errors(page, expected="/ui/workspaces/web1/report")
