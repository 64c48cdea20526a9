"""Access to JupyterLab on the Nomad runtime, through the real ``ml`` against a real agent.

The workspace's JupyterLab (a real ``jupyter lab`` that the double runs from the workspace image,
with the fetchml_jupyter extension enabled as the image enables it) asks the agent about every
credential at ``FETCHML_ACCESS_URL``, which the agent points at the address allocations reach it
at: here the index-only listener (``nomad.index``), which serves ``/index`` and ``/access`` and
nothing else. Personal URLs that ``ml jupyter info`` prints work as printed; a viewer reads and is
refused what her role does not allow, with the role needed named.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fetchml_agent.access.ops import ACCESS_URL_ENV
from tests.conftest import AgentProcess, free_port
from tests.integration.access.conftest import users
from tests.nomad_double.fixtures import NomadTarget

pytestmark = pytest.mark.slow


class Env:
    agent: AgentProcess
    target: NomadTarget
    index_port: int
    job_prefix: str


@pytest.fixture(scope="module")
def env(nomad_target: NomadTarget, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    nomad_target.need_double("its workspace image enables fetchml_jupyter as images/workspace does")
    e = Env()
    e.target, e.index_port = nomad_target, free_port()
    settings = nomad_target.settings(index=f"127.0.0.1:{e.index_port}")
    e.job_prefix = settings["job_prefix"]
    e.agent = AgentProcess(tmp_path_factory.mktemp("nomad-access") / "agent", free_port(), extra={
        "users": users(), "runtime": "nomad", "nomad": settings,
        "package_management": {"startup_blocked_packages": "off"}})
    try:
        e.agent.start()
        e.agent.ml("jupyter", "create", "acc", "--cpu", "1", "--memory", "1g", user="bob")
        for who, role in (("carol", "viewer"), ("dave", "collaborator")):
            e.agent.ml("jupyter", "access", "acc", f"--user={who}", f"--role={role}", user="bob")
        yield e
    finally:
        if e.agent.proc and e.agent.proc.poll() is None:
            e.agent.ml("jupyter", "delete", "acc", "-y", user="bob", check=False)
        e.agent.stop()


def _url(e: Env, user: str) -> str:
    return str(e.agent.ml_json("jupyter", "info", "acc", user=user)["url"])


def _call(url: str, method: str, path: str, body: Any = None) -> httpx.Response:
    """A request as a script would make it with the URL ``ml`` printed (its token as printed)."""
    parts = urllib.parse.urlsplit(url)
    token = urllib.parse.parse_qs(parts.query)["token"][0]
    return httpx.request(method, f"{parts.scheme}://{parts.netloc}/{path}", json=body,
                         headers={"Authorization": f"token {token}"}, timeout=60)


def test_the_job_points_jupyterlab_at_the_index_only_listener(env: Env) -> None:
    headers = {"X-Nomad-Token": env.target.token} if env.target.token else {}
    job = httpx.get(f"{env.target.address}/v1/job/{env.job_prefix}ws-acc", headers=headers, timeout=10).json()
    task_env = job["TaskGroups"][0]["Tasks"][0]["Env"]
    assert task_env[ACCESS_URL_ENV] == f"http://127.0.0.1:{env.index_port}/access"
    # That listener answers the access endpoints (with a server credential only) and nothing of the API.
    base = f"http://127.0.0.1:{env.index_port}"
    assert httpx.post(f"{base}/access/v1/resolve", json={}, timeout=10).status_code == 401
    assert httpx.get(f"{base}/api/v1/jupyter/workspaces", timeout=10).status_code == 404


def test_each_person_opens_their_own_url(env: Env) -> None:
    urls = {who: _url(env, who) for who in ("bob", "carol", "dave")}
    assert len({urllib.parse.urlsplit(u).query for u in urls.values()}) == 3  # a token each, nobody's shared
    page = httpx.get(urls["carol"], timeout=60, follow_redirects=False)  # the URL as printed, in a browser
    assert page.status_code == 200 and any(c.startswith("fetchml-session-") for c in page.cookies)
    for who, role in (("bob", "owner"), ("carol", "viewer"), ("dave", "collaborator")):
        me = _call(urls[who], "GET", "api/me")
        assert me.status_code == 200 and (me.json()["identity"]["username"], me.json()["identity"]["role"]) == (who, role)


def test_a_viewer_reads_and_is_refused_the_rest(env: Env) -> None:
    bob, carol, dave = _url(env, "bob"), _url(env, "carol"), _url(env, "dave")
    notebook = {"type": "notebook", "format": "json", "content": {
        "cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}}
    assert _call(bob, "PUT", "api/contents/n.ipynb", notebook).status_code == 201
    assert _call(carol, "GET", "api/contents/n.ipynb").status_code == 200
    refused = _call(carol, "POST", "api/kernels", {"name": "python3"})
    assert refused.status_code == 403 and "collaborator role" in refused.json()["message"]
    assert _call(carol, "PUT", "api/contents/n.ipynb", notebook).status_code == 403
    started = _call(dave, "POST", "api/kernels", {"name": "python3"})
    assert started.status_code == 201
    assert _call(dave, "DELETE", f"api/kernels/{started.json()['id']}").status_code == 204


def test_revoke_cuts_the_printed_url(env: Env) -> None:
    carol = _url(env, "carol")
    env.agent.ml("jupyter", "revoke", "acc", "carol", user="bob")
    # JupyterLab caches the agent's answer for at most a second (fetchml_jupyter.agent.MAX_TTL)
    deadline = time.monotonic() + 5
    while (status := _call(carol, "GET", "api/contents").status_code) == 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status in (401, 403)
    assert env.agent.ml("jupyter", "info", "acc", user="carol", check=False).returncode == 4  # not found: no longer hers to see


def test_audit_from_the_allocation_reaches_the_agent(env: Env) -> None:

    deadline = time.monotonic() + 20
    while True:
        events = env.agent.ml_json("jupyter", "audit", "acc", user="bob")["events"]
        if any(e["action"] == "jupyter.denied" and e["user"] == "carol" for e in events):
            break
        assert time.monotonic() < deadline, "the workspace's audit events never reached the agent"
        time.sleep(0.5)


def test_under_tls_through_agent_url(nomad_target: NomadTarget, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The other way allocations reach the agent, ``nomad.agent_url`` (here the agent's own
    https listener): the job carries the URL and the agent's certificate (FETCHML_ACCESS_CA, a
    multi-line PEM) past the template's environment checks, the extension pins that certificate,
    and the URLs ``ml`` prints work."""
    from tests.integration.test_tls import _self_signed

    nomad_target.need_double("its workspace image enables fetchml_jupyter as images/workspace does")
    root = tmp_path_factory.mktemp("nomad-access-tls")
    cert, key = _self_signed(root)
    port = free_port()
    settings = nomad_target.settings(agent_url=f"https://127.0.0.1:{port}")
    agent = AgentProcess(root / "agent", port, extra={
        "users": users(), "runtime": "nomad", "nomad": settings, "tls": {"cert": str(cert), "key": str(key)},
        "package_management": {"startup_blocked_packages": "off"}})
    tls = {"FETCHML_SERVER": f"wss://127.0.0.1:{port}/ws", "FETCHML_CA": str(cert)}

    def ml_json(*args: str, user: str) -> Any:
        import json

        return json.loads(agent.ml(*args, "--json", user=user, env=tls).stdout)

    try:
        agent.start()
        agent.ml("jupyter", "create", "sec", "--cpu", "1", "--memory", "1g", user="bob", env=tls)
        agent.ml("jupyter", "access", "sec", "--user=carol", "--role=viewer", user="bob", env=tls)
        headers = {"X-Nomad-Token": nomad_target.token} if nomad_target.token else {}
        job = httpx.get(f"{nomad_target.address}/v1/job/{settings['job_prefix']}ws-sec", headers=headers,
                        timeout=10).json()
        task_env = job["TaskGroups"][0]["Tasks"][0]["Env"]
        assert task_env[ACCESS_URL_ENV] == f"https://127.0.0.1:{port}/access"
        assert task_env["FETCHML_ACCESS_CA"] == cert.read_text()
        carol = str(ml_json("jupyter", "info", "sec", user="carol")["url"])
        assert _call(carol, "GET", "api/contents").status_code == 200
        assert _call(carol, "POST", "api/kernels", {"name": "python3"}).status_code == 403
        assert _call(str(ml_json("jupyter", "info", "sec", user="bob")["url"]), "GET", "api/me").json()[
            "identity"]["role"] == "owner"
    finally:
        if agent.proc and agent.proc.poll() is None:
            agent.ml("jupyter", "delete", "sec", "-y", user="bob", check=False, env=tls)
        agent.stop()
