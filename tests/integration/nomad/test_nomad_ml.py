"""The workspace lifecycle through the real ``ml`` against a real agent running ``runtime: nomad``.

Covered: create (progress on stderr), info/list/status, an unplaceable GPU request, --gpu-type and
the GPUs ``ml status`` lists per node and type, secrets
absent from the registered job, stop/restart, kill -9 of the agent and adoption without a
duplicate, a job purged behind the agent's back, delete (job and Variable gone).

The Nomad is the API double by default, a real one with ``FETCHML_TEST_NOMAD_ADDR`` (see
tests/nomad_double/fixtures.py). One agent and one workspace are shared by the module; the tests
run in file order (create first, delete last).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests

from fetchml_agent.nomad.render import secret_variable_path
from tests.conftest import KEYS, ML, AgentProcess, free_port
from tests.nomad_double.fixtures import NomadTarget


def _api(target: NomadTarget, path: str, **params: Any) -> requests.Response:
    headers = {"X-Nomad-Token": target.token} if target.token else {}
    return requests.get(target.address + path, params=params, headers=headers, timeout=10)


class Env:
    agent: AgentProcess
    target: NomadTarget
    prefix: str

    def job_id(self, name: str) -> str:
        return f"{self.prefix}ws-{name}"


@pytest.fixture(scope="module")
def env(nomad_target: NomadTarget, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    e = Env()
    e.target = nomad_target
    settings = nomad_target.settings()
    e.prefix = settings["job_prefix"]
    e.agent = AgentProcess(tmp_path_factory.mktemp("nomad-agent") / "agent", free_port(),
                           extra={"runtime": "nomad", "nomad": settings,
                                  # The double runs JupyterLab from this host's environment, which
                                  # ships requests/urllib3: the seed's case for turning the scan off.
                                  "package_management": {"startup_blocked_packages": "off"}})
    try:
        e.agent.start()
        yield e
    finally:
        if e.agent.proc and e.agent.proc.poll() is None:
            for ws in e.agent.ml_json("jupyter", "list").get("services", []):
                e.agent.ml("jupyter", "delete", ws["name"], "-y", check=False)
        e.agent.stop()


def test_create_streams_nomad_progress_and_jupyter_answers(env: Env) -> None:
    cp = env.agent.ml("jupyter", "create", "lab", "--cpu", "1", "--memory", "1g", "--password", "s3cret-pw")
    lines = cp.stderr.splitlines()
    for phase in ("placing", "starting", "ready"):
        assert any(phase in line for line in lines), cp.stderr
    if any("pulling image" in line for line in lines):
        first = {p: next(i for i, line in enumerate(lines) if p in line) for p in ("placing", "pulling image", "ready")}
        assert first["placing"] < first["pulling image"] < first["ready"]
    info = env.agent.ml_json("jupyter", "info", "lab")
    assert info["status"] == "running" and info["runtime"] == "nomad"
    # The caller's own URL (docs/access.md): their personal token, never the server's credential.
    assert "/lab?token=fmlp." in info["url"] and info["password_protected"]
    # the browser URL is the allocation's address, and Jupyter answers there
    assert httpx.get(info["url"].split("/lab", 1)[0] + "/api/status", timeout=5).status_code == 403
    names = [w["name"] for w in env.agent.ml_json("jupyter", "list")["services"]]
    assert "lab" in names
    status = env.agent.ml_json("jupyter", "status", "lab")
    assert status["status"] == "running" and "stats" in status
    job = _api(env.target, f"/v1/job/{env.job_id('lab')}")
    assert job.status_code == 200 and job.json()["Meta"]["fetchml_kind"] == "workspace"
    # no nomad.agent_url/index and a loopback listen address: one warning at start, naming the fix
    log = (env.agent.root / "agent.log").read_text()
    assert log.count("workspaces on other Nomad nodes cannot reach the agent's package index") == 1
    assert "nomad.agent_url" in log


def test_secrets_are_never_in_the_registered_job(env: Env) -> None:
    job_id = env.job_id("lab")
    text = _api(env.target, f"/v1/job/{job_id}").text
    assert "s3cret-pw" not in text
    url = env.agent.ml_json("jupyter", "info", "lab")["url"] or ""
    secrets = env.agent.workspace_secrets("lab")
    token, pw_hash = secrets["token"], secrets["password_hash"]
    assert token not in text and pw_hash not in text
    assert token not in url  # the URL carries the caller's personal token, not the server's credential
    var = _api(env.target, f"/v1/var/{secret_variable_path(job_id)}", namespace="default")
    assert var.status_code == 200 and pw_hash in var.text


def test_a_gpu_request_nomad_cannot_place_fails_cleanly(env: Env) -> None:
    cp = env.agent.ml("jupyter", "create", "toomany", "--cpu", "1", "--memory", "1g", "--gpu", "8", check=False)
    assert cp.returncode == 8, cp.stderr  # InsufficientResources
    assert "GPU" in cp.stderr and "Traceback" not in cp.stderr
    assert _api(env.target, f"/v1/job/{env.job_id('toomany')}").status_code == 404
    env.agent.ml("jupyter", "delete", "toomany", "-y", check=False)


def test_gpu_type_and_the_gpus_ml_status_shows(env: Env) -> None:
    # the module's cluster has one whole H100 (tests/nomad_double/fixtures.py): no MIG device
    cp = env.agent.ml("jupyter", "create", "mig", "--cpu", "1", "--memory", "1g", "--gpu-type", "3g.40gb",
                      check=False)
    assert cp.returncode == 8, cp.stderr
    assert "no GPU in the cluster has ${device.model}" in cp.stderr and "3g" in cp.stderr
    assert "Traceback" not in cp.stderr
    cp = env.agent.ml("jupyter", "create", "typo", "--gpu-type", "h100; rm", check=False)
    assert cp.returncode == 2 and "--gpu-type" in cp.stderr
    status = env.agent.ml_json("status")
    gpus = status["devices"]["gpus"]
    if env.target.double is not None:
        assert [(g["type"], g["healthy"]) for g in gpus] == [("NVIDIA H100 80GB HBM3", 1)]
        assert gpus[0]["free"] == 1  # the shared workspace asked for none
    text = env.agent.ml("status").stdout
    assert "GPUs:" in text and "free" in text


def test_stop_deregisters_and_restart_comes_back(env: Env) -> None:
    env.agent.ml("jupyter", "stop", "lab")
    assert env.agent.ml_json("jupyter", "info", "lab")["status"] == "stopped"
    job = _api(env.target, f"/v1/job/{env.job_id('lab')}")
    assert job.status_code == 404 or job.json().get("Stop") is True
    cp = env.agent.ml("jupyter", "restart", "lab")
    assert "ready" in cp.stderr
    assert env.agent.ml_json("jupyter", "info", "lab")["status"] == "running"


def test_kill9_then_restart_adopts_the_job_without_duplicating_it(env: Env) -> None:
    before = env.agent.ml_json("jupyter", "info", "lab")
    allocs_before = _api(env.target, f"/v1/job/{env.job_id('lab')}/allocations").json()
    env.agent.kill9()
    env.agent.start()
    after = env.agent.ml_json("jupyter", "info", "lab")
    assert after["status"] == "running" and after["url"] == before["url"]
    allocs_after = _api(env.target, f"/v1/job/{env.job_id('lab')}/allocations").json()
    assert [a["ID"] for a in allocs_after] == [a["ID"] for a in allocs_before]
    jobs = [j["ID"] for j in _api(env.target, "/v1/jobs", prefix=env.prefix).json()]
    assert jobs.count(env.job_id("lab")) == 1


def test_a_job_deleted_behind_the_agents_back_is_reported(env: Env) -> None:
    env.agent.ml("jupyter", "create", "gone", "--cpu", "1", "--memory", "1g")
    headers = {"X-Nomad-Token": env.target.token} if env.target.token else {}
    r = requests.delete(f"{env.target.address}/v1/job/{env.job_id('gone')}", params={"purge": "true"},
                        headers=headers, timeout=10)
    assert r.status_code == 200
    cp = env.agent.ml("jupyter", "status", "gone", check=False)
    assert cp.returncode != 0
    info = env.agent.ml_json("jupyter", "info", "gone")
    assert info["status"] == "failed" and info["message"], info
    env.agent.ml("jupyter", "delete", "gone", "-y")


def _counts(line: str) -> dict[str, int]:
    """``workspaces: 1 running, 2 stopped`` (``ml status``) as {status: count}."""
    body = line.split(":", 1)[1].strip()
    return {} if body == "none" else {s: int(n) for n, s in (part.split() for part in body.split(", "))}


def test_ml_status_watch_redraws_when_nomad_changes(env: Env) -> None:
    """``ml status --watch`` (the table, not --json) shows the status again when something changes:
    a workspace's job stopped in Nomad is in the next view, which the subscribe operation (0x2F)
    brought, not the refresh interval (an hour here)."""
    env.agent.ml("jupyter", "create", "redrawn", "--cpu", "1", "--memory", "1g")
    full_env = {**os.environ, "FETCHML_SERVER": env.agent.ws_url, "FETCHML_API_KEY": KEYS["admin"],
                "FETCHML_CONFIG": str(env.agent.root / "no-ml-config.yaml")}
    watcher = subprocess.Popen([*ML, "status", "--watch", "--interval", "3600", "--count", "20"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env)
    views: list[dict[str, int]] = []
    seen = threading.Event()

    def read() -> None:
        assert watcher.stdout is not None
        for line in watcher.stdout:
            if line.startswith("workspaces:"):
                views.append(_counts(line))
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert seen.wait(60), "ml status --watch printed no view"
        first = dict(views[0])
        headers = {"X-Nomad-Token": env.target.token} if env.target.token else {}
        r = requests.delete(f"{env.target.address}/v1/job/{env.job_id('redrawn')}", headers=headers, timeout=10)
        assert r.status_code == 200
        deadline = time.monotonic() + 60  # a bound for a hung test, not a latency asserted
        while time.monotonic() < deadline and not any(v.get("stopped", 0) > first.get("stopped", 0) for v in views):
            time.sleep(0.1)
    finally:
        watcher.kill()
        watcher.wait()
        reader.join(10)
    changed = [v for v in views if v.get("stopped", 0) > first.get("stopped", 0)]
    assert changed, views
    assert changed[0].get("running", 0) == first.get("running", 0) - 1, views
    env.agent.ml("jupyter", "delete", "redrawn", "-y")

def test_changes_in_nomad_reach_ml_status_watch_as_they_happen(env: Env) -> None:
    """The agent follows Nomad's event stream: a workspace stopped behind its back (in Nomad) is
    seen as it happens by a subscriber (``ml status --watch --json``, one JSON line per change),
    with no poll of its own."""
    env.agent.ml("jupyter", "create", "watched", "--cpu", "1", "--memory", "1g")
    status = env.agent.ml_json("status")
    assert status["runtime"]["feed"]["mode"].startswith("event stream"), status["runtime"]
    full_env = {**os.environ, "FETCHML_SERVER": env.agent.ws_url, "FETCHML_API_KEY": KEYS["admin"],
                "FETCHML_CONFIG": str(env.agent.root / "no-ml-config.yaml")}
    watcher = subprocess.Popen([*ML, "status", "--watch", "--json", "--workspace", "watched", "--count", "1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env)
    try:
        time.sleep(1.0)  # subscribed (an event before that is not this test's)
        headers = {"X-Nomad-Token": env.target.token} if env.target.token else {}
        r = requests.delete(f"{env.target.address}/v1/job/{env.job_id('watched')}", headers=headers, timeout=10)
        assert r.status_code == 200
        out, err = watcher.communicate(timeout=60)
    finally:
        watcher.kill()
    assert watcher.returncode == 0, err
    [change] = [json.loads(line) for line in out.splitlines()]
    assert change["type"] == "workspace" and change["name"] == "watched" and change["status"] == "stopped", change
    info = env.agent.ml_json("jupyter", "info", "watched")
    assert info["status"] == "stopped" and "stopped" in info["message"]
    env.agent.ml("jupyter", "delete", "watched", "-y")
    # the position in Nomad's stream is kept for the next start (at most a second behind)
    time.sleep(1.5)
    conn = sqlite3.connect(env.agent.data_dir / "agent.db")
    (position,) = conn.execute("SELECT position FROM runtime_cursors WHERE name = 'nomad:events'").fetchone()
    conn.close()
    assert position > 0


def test_runs_without_a_snapshot_volume_are_refused_with_the_setting_to_add(env: Env) -> None:
    cp = env.agent.ml("jupyter", "queue", "--workspace", "lab", "--experiment", "e1", "--notebook", "a.ipynb",
                      check=False)
    assert cp.returncode == 2 and "nomad.snapshot_volume" in cp.stderr and "Traceback" not in cp.stderr
    assert _api(env.target, "/v1/jobs", prefix=f"{env.prefix}run-").json() == []


def test_delete_purges_the_job(env: Env) -> None:
    env.agent.ml("jupyter", "delete", "lab", "-y")
    assert _api(env.target, f"/v1/job/{env.job_id('lab')}").status_code == 404
    assert _api(env.target, f"/v1/var/{secret_variable_path(env.job_id('lab'))}", namespace="default").status_code == 404
    names = [w["name"] for w in env.agent.ml_json("jupyter", "list")["services"]]
    assert "lab" not in names
