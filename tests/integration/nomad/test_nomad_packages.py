"""Package installs on the nomad runtime, end to end: the real `ml`, a real agent with
``runtime: nomad``, pip run inside the allocation through Nomad's exec WebSocket.

The Nomad is the API double by default, a real one with ``FETCHML_TEST_NOMAD_ADDR`` (see
tests/nomad_double/fixtures.py); then ``FETCHML_TEST_NOMAD_AGENT_HOST`` must be an address of
this host that the allocations reach (e.g. the gateway of Nomad's bridge network). The agent's
API stays on 127.0.0.1; allocations reach only its package index, on the index-only listener
``nomad.index`` at that address. The upstream index holds the tiny wheels of
tests/integration/packages/world.py (``netlib`` is blocked, ``webtool`` depends on it).
One agent and one workspace are shared by the module; the tests run in file order.

Covered: an install through the real ``ml`` (pip over exec, the index at ``nomad.index``,
importable in a new kernel afterwards); a blocked package refused in the agent and, for
``!pip install`` in a notebook, in the index; an allocation that replaced the one the agent knew
is found; the errors for a gone allocation and a stopped workspace. The double's workspace image
runs the host's Python, so it sets ``PIP_USER=1``: installs go to ``~/.local`` in the task's own
home, never into the host's site-packages.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

from fetchml_agent.runtimes.base import WorkspaceSpec
from fetchml_agent.runtimes.nomad import NomadRuntime
from tests.conftest import AgentProcess, free_port
from tests.integration.experiments.exp_helpers import wait_for
from tests.integration.jupyter import execute, put_contents
from tests.integration.packages.world import POLICY, ServerThread, agent_for, make_upstream, make_wheelhouse
from tests.nomad_double.fixtures import NomadTarget

WS = "pkgs"


class Env:
    agent: AgentProcess
    target: NomadTarget
    settings: dict[str, Any]
    job_id: str
    index_base: str


def _nomad(target: NomadTarget, method: str, path: str, **params: Any) -> requests.Response:
    headers = {"X-Nomad-Token": target.token} if target.token else {}
    return requests.request(method, target.address + path, params=params, headers=headers, timeout=10)


def _events(agent: AgentProcess, action: str) -> list[dict[str, Any]]:
    doc = agent.ml_json("jupyter", "audit", WS, "--action", action)
    return [e for e in doc["events"] if e["action"] == action]


def _wait_allocs(env: Env, done: Any) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 60
    while True:
        allocs: list[dict[str, Any]] = _nomad(env.target, "GET", f"/v1/job/{env.job_id}/allocations").json()
        if done(allocs) or time.monotonic() > deadline:
            return allocs
        time.sleep(0.2)


def _terminal(allocs: list[dict[str, Any]]) -> bool:
    return all(a["ClientStatus"] in ("complete", "failed", "lost") for a in allocs)


def _host_can_import(module: str) -> bool:
    """Whether this host's own Python sees ``module`` (the double's tasks run on it)."""
    return subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with make_upstream(make_wheelhouse(tmp_path_factory.mktemp("wheelhouse"))) as server:
        yield server


@pytest.fixture(scope="module")
def env(nomad_target: NomadTarget, upstream: ServerThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    e = Env()
    e.target = nomad_target
    host = "127.0.0.1"  # the double's tasks are processes of this host
    if nomad_target.double is None:
        host = os.environ.get("FETCHML_TEST_NOMAD_AGENT_HOST", "")
        if not host:
            pytest.skip("against a real Nomad, set FETCHML_TEST_NOMAD_AGENT_HOST to an address of this host "
                        "that allocations reach (they cannot reach its 127.0.0.1)")
    index_port = free_port()
    runs: dict[str, Any] = {}  # runs need a snapshot volume; the environment cache is optional
    if nomad_target.snapshot_volume and nomad_target.snapshot_dir:
        runs = {"snapshot_volume": {"type": "host", "source": nomad_target.snapshot_volume},
                "snapshot_dir": str(nomad_target.snapshot_dir)}
    if nomad_target.env_cache_volume:
        runs["env_cache_volume"] = {"type": "host", "source": nomad_target.env_cache_volume}
    settings = e.settings = nomad_target.settings(index=f"{host}:{index_port}", run_stats_interval=0.5, **runs)
    e.job_id = f"{settings['job_prefix']}ws-{WS}"
    e.index_base = f"http://{host}:{index_port}"
    # The double runs JupyterLab from this host's environment, which ships requests/urllib3: the
    # seed's case for turning the startup scan off.
    e.agent = agent_for(tmp_path_factory.mktemp("nomad-pkg-agent") / "agent", f"{upstream.url}/simple/",
                        {**POLICY, "startup_blocked_packages": "off"}, runtime="nomad", nomad=settings)
    try:
        e.agent.start()
        yield e
    finally:
        if e.agent.proc and e.agent.proc.poll() is None:
            e.agent.ml("jupyter", "delete", WS, "-y", check=False)
        e.agent.stop()


def test_workspaces_get_the_index_at_nomad_index_and_only_the_index_is_served_there(env: Env) -> None:
    cp = env.agent.ml("jupyter", "create", WS, "--cpu", "1", "--memory", "1g", user="bob")
    assert "ready" in cp.stderr, cp.stderr
    job = _nomad(env.target, "GET", f"/v1/job/{env.job_id}").json()
    task_env = job["TaskGroups"][0]["Tasks"][0]["Env"]
    index_url = task_env["PIP_INDEX_URL"]
    assert index_url.startswith(env.index_base + "/index/") and index_url.endswith("/simple/"), task_env
    assert task_env["UV_INDEX_URL"] == index_url
    # the index-only listener: the workspace's pages, never the agent's API
    assert httpx.get(index_url + "leftpad/", timeout=30).status_code == 200
    assert httpx.get(env.index_base + "/api/v1/health", timeout=5).status_code == 404
    assert httpx.get(env.agent.http_url + "/api/v1/health", timeout=5).status_code == 200
    assert "cannot reach the agent's package index" not in (env.agent.root / "agent.log").read_text()


def test_an_allowed_install_runs_pip_in_the_allocation(env: Env) -> None:
    started = time.monotonic()
    cp = env.agent.ml("jupyter", "install", WS, "beta", user="bob")
    elapsed = time.monotonic() - started
    assert "installed beta 1.0, alpha 2.0" in cp.stdout, cp.stdout + cp.stderr
    assert "Successfully installed alpha-2.0 beta-1.0" in cp.stderr  # pip's output, streamed from the exec
    assert "fetchml-pip-report" not in cp.stdout + cp.stderr
    print(f"ml jupyter install through nomad exec: {elapsed:.2f} s")
    rows = {p["normalized"]: p for p in env.agent.ml_json("jupyter", "packages", WS)["packages"]}
    assert rows["beta"]["installed_by"] == "bob" and rows["beta"]["requested"] and rows["beta"]["version"] == "1.0"
    assert rows["alpha"]["installed_by"] == "bob" and rows["alpha"]["requested"] is False
    assert rows["beta"]["location"] == "environment"
    # importable in the workspace: a new kernel of its JupyterLab
    url = env.agent.ml_json("jupyter", "info", WS)["url"]
    assert execute(url, "import beta_mod, alpha_mod; (beta_mod.VERSION, alpha_mod.VERSION)",
                   timeout=120).strip() == "('1.0', '2.0')"
    assert not _host_can_import("beta_mod")  # it went into the workspace, not into this host's Python
    decision = _events(env.agent, "package.decision")[0]
    assert decision["user"] == "bob" and decision["outcome"] == "allow" and decision["details"]["spec"] == "beta"
    install = _events(env.agent, "package.install")[0]
    assert install["outcome"] == "ok" and install["details"]["installed"] == ["beta==1.0", "alpha==2.0"]


def test_a_run_has_the_packages_of_its_workspace_and_the_next_run_installs_nothing(env: Env) -> None:
    """Issue #18: beta and alpha were installed into the workspace (above); a run, started from the
    image, installs them from the lock queued with its snapshot, through the agent's index; the
    second run with the same lock finds them in the environment cache."""
    if not env.settings.get("snapshot_volume"):
        pytest.skip("runs need a snapshot host volume (FETCHML_TEST_NOMAD_SNAPSHOT_VOLUME and _SNAPSHOT_DIR)")
    url = env.agent.ml_json("jupyter", "info", WS)["url"]
    put_contents(url, "uses_beta.py", {"type": "file", "format": "text",
                                       "content": "import alpha_mod, beta_mod\nprint('versions', beta_mod.VERSION, alpha_mod.VERSION)\n"})
    runs = []
    for _ in range(2):
        queued = env.agent.ml_json("jupyter", "queue", "--workspace", WS, "--experiment", "exp-env",
                                   "--script", "uses_beta.py", user="bob")
        assert queued["environment"]["packages"] == 2, queued["environment"]  # beta 1.0, alpha 2.0
        done = wait_for(env.agent, queued["id"], ("succeeded", "failed", "cancelled"), user="bob")
        assert done["status"] == "succeeded", (done["message"], done["error"], done["environment"])
        runs.append(done)
    lock = (Path(runs[0]["run_dir"]) / "work" / ".fetchml" / "environment.lock").read_text()
    assert "beta==1.0 --hash=sha256:" in lock and "alpha==2.0 --hash=sha256:" in lock, lock  # pip checks the files
    first, second = (r["environment"] for r in runs)
    assert first["lock"] == second["lock"] == runs[0]["environment"]["lock"]
    assert first["status"] == second["status"] == "ok" and first["packages"] == 2
    if env.settings.get("env_cache_volume"):
        assert first["cached"] is False and second["cached"] is True and first["cache"] == "shared"
    shown = env.agent.ml("status", runs[1]["id"], user="bob").stdout
    assert "environment:" in shown and "2 packages" in shown, shown
    # while a run runs, its environment step shows as soon as the step is done, not at the end
    put_contents(url, "slow.py", {"type": "file", "format": "text", "content": "import beta_mod, time\ntime.sleep(60)\n"})
    slow = env.agent.ml_json("jupyter", "queue", "--workspace", WS, "--experiment", "exp-env", "--script", "slow.py",
                             user="bob")
    try:
        deadline = time.monotonic() + 60
        seen = env.agent.ml_json("status", slow["id"], user="bob")
        while (seen["status"] != "running" or seen["environment"].get("status") != "ok") and time.monotonic() < deadline:
            time.sleep(0.3)
            seen = env.agent.ml_json("status", slow["id"], user="bob")
        assert seen["status"] == "running" and seen["environment"]["status"] == "ok", seen
        assert seen["environment"]["cached"] is bool(env.settings.get("env_cache_volume"))
    finally:
        env.agent.ml("cancel", slow["id"], user="bob", check=False)
    # what the index served the runs went through the policy, as the workspace's own installs did
    served = [e for e in _events(env.agent, "package.index") if e["details"].get("package") == "beta"]
    assert served and all(e["outcome"] == "allow" for e in served)


def test_a_blocked_install_is_refused_before_anything_runs(env: Env) -> None:
    installs_before = len(_events(env.agent, "package.install"))
    cp = env.agent.ml("jupyter", "install", WS, "NetLib>=1", user="bob", check=False)
    assert cp.returncode == 5, cp.stderr
    assert "netlib is blocked by the package policy (blocked_packages)" in cp.stderr
    assert "Traceback" not in cp.stderr
    event = _events(env.agent, "package.decision")[0]
    assert event["outcome"] == "deny" and event["details"]["package"] == "netlib"
    assert event["details"]["rule"] == "blocked_packages"
    # pip never ran: no install event, and the index was never asked for netlib
    assert len(_events(env.agent, "package.install")) == installs_before
    assert not [e for e in _events(env.agent, "package.index") if e["details"]["package"] == "netlib"]


def test_pip_run_directly_in_the_workspace_is_refused_by_the_index(env: Env) -> None:
    url = env.agent.ml_json("jupyter", "info", WS)["url"]
    out = execute(url, "!pip install netlib", timeout=240)
    assert 'fetchml-policy="netlib is blocked by the package policy' in out, out
    assert "No matching distribution found for netlib" in out
    out = execute(url, "!pip install webtool", timeout=240)
    assert "No matching distribution found for netlib" in out, out
    out = execute(url, "!pip install leftpad", timeout=240)
    assert "Successfully installed leftpad-1.0" in out, out
    assert execute(url, "import leftpad_mod; leftpad_mod.VERSION", timeout=120).strip() == "'1.0'"
    denied = [e for e in _events(env.agent, "package.index") if e["details"]["package"] == "netlib"]
    assert denied and denied[0]["outcome"] == "deny" and denied[0]["user"] == "index"
    assert execute(url, "import importlib.util as u; u.find_spec('netlib_mod') is None").strip() == "True"


def test_a_dependency_on_a_blocked_package_fails_the_install(env: Env) -> None:
    cp = env.agent.ml("jupyter", "install", WS, "webtool", user="bob", check=False)
    assert cp.returncode == 5, cp.stderr
    assert "pip could not install webtool" in cp.stderr and "netlib is blocked" in cp.stderr
    assert _events(env.agent, "package.install")[0]["outcome"] == "error"


def test_exec_finds_an_allocation_that_replaced_the_one_it_knew(env: Env) -> None:
    conn = sqlite3.connect(env.agent.data_dir / "agent.db")
    (raw,) = conn.execute("SELECT runtime_state FROM workspaces WHERE name=?", (WS,)).fetchone()
    conn.close()
    stale = json.loads(raw)
    # The job is stopped and submitted again behind the agent's back: a new allocation runs it.
    job = _nomad(env.target, "GET", f"/v1/job/{env.job_id}").json()
    assert _nomad(env.target, "DELETE", f"/v1/job/{env.job_id}").status_code == 200
    _wait_allocs(env, _terminal)
    headers = {"X-Nomad-Token": env.target.token} if env.target.token else {}
    job["Stop"] = False
    assert requests.post(f"{env.target.address}/v1/jobs", json={"Job": job}, headers=headers, timeout=10).ok
    allocs = _wait_allocs(env, lambda a: any(x["ClientStatus"] == "running" for x in a))
    fresh = next(a["ID"] for a in allocs if a["ClientStatus"] == "running")
    assert fresh != stale["alloc_id"]
    spec = WorkspaceSpec(id="unused", name=WS, owner="bob", path=Path("/unused"), token="unused")

    async def scenario() -> Any:
        rt = NomadRuntime(env.settings)
        try:
            return await rt.exec(spec, stale, ["sh", "-c", "echo $NOMAD_ALLOC_ID"], timeout=30)
        finally:
            await rt.close()

    result = asyncio.run(scenario())
    assert result.exit_code == 0 and result.output.decode().strip() == fresh


def test_install_when_the_allocation_is_gone_says_what_to_do(env: Env) -> None:
    # Nomad stops the job behind the agent's back: the agent still has an allocation's ID.
    assert _nomad(env.target, "DELETE", f"/v1/job/{env.job_id}").status_code == 200
    _wait_allocs(env, _terminal)
    started = time.monotonic()
    cp = env.agent.ml("jupyter", "install", WS, "leftpad", user="bob", check=False)
    assert time.monotonic() - started < 30
    assert cp.returncode == 4, cp.stderr  # InvalidState / NotFound
    assert f"workspace {WS}" in cp.stderr and f"ml jupyter restart {WS}" in cp.stderr, cp.stderr
    assert "Traceback" not in cp.stderr
    # restarted, the workspace installs again
    env.agent.ml("jupyter", "restart", WS, user="bob")
    assert "installed leftpad 1.0" in env.agent.ml("jupyter", "install", WS, "leftpad", user="bob").stdout


def test_install_into_a_stopped_workspace_is_refused(env: Env) -> None:
    env.agent.ml("jupyter", "stop", WS, user="bob")
    cp = env.agent.ml("jupyter", "install", WS, "alpha", user="bob", check=False)
    assert cp.returncode == 4, cp.stderr
    assert f"workspace {WS} is not running" in cp.stderr and f"ml jupyter restart {WS}" in cp.stderr
    assert "Traceback" not in cp.stderr
