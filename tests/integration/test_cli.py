"""The real `ml` against a real agent: exit codes per command, a closed pipe, what it imports,
monitor's CPU figure, what access and share say."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import KEYS, ML, AgentProcess, free_port
from tests.integration.jupyter import execute

WS, STOPPED = "cli-ws", "cli-stopped"


@pytest.fixture(scope="module")
def cli_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    """An agent with a package policy that has a blocked and an approval-required package, one
    running workspace (``cli-ws``) and one stopped (``cli-stopped``, which bob may view), both admin's."""
    policy = {"blocked_packages": ["requests", "urllib3"], "approval_required": ["tensorflow"]}
    a = AgentProcess(tmp_path_factory.mktemp("cli-agent"), free_port(), {"package_management": policy})
    a.start()
    try:
        a.ml("jupyter", "create", WS, "--cpu", "1", "--memory", "1g")
        a.ml("jupyter", "create", STOPPED)
        a.ml("jupyter", "stop", STOPPED)
        a.ml("jupyter", "access", STOPPED, "--user=bob", "--role=viewer")
        yield a
    finally:
        a.cleanup_workspaces()
        a.stop()


# (arguments, user, exit code, a phrase of the message). One row per error case a user meets;
# the codes are the README's table.
EXIT_CASES: list[tuple[list[str], str, int, str]] = [
    (["jupyter", "list"], "admin", 0, ""),
    (["jupyter", "info", WS], "admin", 0, ""),
    (["jupyter", "status", WS], "admin", 0, ""),
    (["jupyter", "check-package", "numpy"], "admin", 0, "allowed"),
    (["status"], "admin", 0, ""),
    # 1: the agent or its backend failed the operation
    (["jupyter", "git", WS, "log"], "admin", 1, "git log failed"),
    # 2: usage or invalid input (argparse, the agent's validation, ml's own checks)
    (["jupyter", "create"], "admin", 2, "the following arguments are required: name"),
    (["jupyter", "frobnicate"], "admin", 2, "invalid choice"),
    (["jupyter", "create", "Bad_Name"], "admin", 2, "invalid workspace name"),
    (["jupyter", "scale", WS, "--memory", "lots"], "admin", 2, "--memory"),
    (["jupyter", "check-package"], "admin", 2, "name a package"),
    (["jupyter", "queue", "--workspace", WS, "--notebook", "a.ipynb", "-p", "no-equals"], "admin", 2, "key=value"),
    (["jupyter", "git", WS, "push"], "admin", 2, "git push is not available"),
    (["jupyter", "export", WS, "--output", "/proc/no/such/file.json"], "admin", 2, "cannot write"),
    (["jupyter", "access", WS, "--user", "bob", "--team", "data-science-team"], "admin", 2, "not both"),
    (["jupyter", "list", "--server", "wss://127.0.0.1:9/ws", "--ca", "/no/such/ca.pem"], "admin", 2,
     "cannot load it as a CA bundle"),
    # ... including what this agent's runtime does not offer (0x15)
    (["jupyter", "build", "img", "--base", "fetchml/workspace", "--packages", "numpy"], "admin", 2,
     "cannot build images"),
    (["jupyter", "install", WS, "matplotlib", "--conda"], "admin", 2, "conda is not available"),
    # 3: authentication or permission
    (["jupyter", "list", "--api-key", "not-a-key"], "admin", 3, "authentication failed"),
    (["jupyter", "delete", STOPPED, "--yes"], "bob", 3, "permission denied"),
    (["jupyter", "install", STOPPED, "numpy"], "bob", 3, "permission denied"),
    # 4: not found, conflict, wrong state
    (["jupyter", "info", "no-such-ws"], "admin", 4, "no workspace"),
    (["jupyter", "info", WS], "bob", 4, "no workspace"),  # one bob may not see: as if there were none
    (["jupyter", "create", WS], "admin", 4, "already exists"),
    (["jupyter", "revoke", WS, "nobody"], "admin", 4, "has no access grant"),
    (["jupyter", "access", WS, "--user", "nobody"], "admin", 4, "no user named 'nobody'"),
    (["jupyter", "share", WS, "--team", "no-such-team"], "admin", 4, "no user belongs to team 'no-such-team'"),
    (["jupyter", "access", WS, "--team", "no-such-team"], "admin", 4, "teams with members: data-science-team"),
    (["jupyter", "approve", "req-none"], "admin", 4, "no package request"),
    (["cancel", "run-none"], "admin", 4, "no run"),
    (["status", "run-none"], "admin", 4, "no run"),
    (["jupyter", "status", STOPPED], "admin", 4, ""),
    (["jupyter", "logs", "no-such-ws"], "admin", 4, "no workspace"),
    # 5: policy denied
    (["jupyter", "check-package", "requests"], "admin", 5, "DENIED"),
    (["jupyter", "install", WS, "requests"], "admin", 5, "blocked"),
    # 6: approval required
    (["jupyter", "check-package", "tensorflow"], "admin", 6, "needs approval"),
    (["jupyter", "install", WS, "tensorflow"], "admin", 6, "approv"),
    # 8: not enough resources
    (["jupyter", "create", "cli-gpus", "--gpu", "64"], "admin", 8, "GPU"),
]


@pytest.mark.parametrize(("args", "user", "code", "phrase"), EXIT_CASES,
                         ids=[f"{c}-{' '.join(a)}" for a, _, c, _ in EXIT_CASES])
def test_exit_codes(cli_agent: AgentProcess, args: list[str], user: str, code: int, phrase: str) -> None:
    cp = cli_agent.ml(*args, user=user, check=False)
    assert cp.returncode == code, f"ml {' '.join(args)} exited {cp.returncode}\n{cp.stdout}\n{cp.stderr}"
    assert phrase in cp.stdout + cp.stderr
    assert "Traceback" not in cp.stderr


def test_exit_code_7_when_nothing_answers(cli_agent: AgentProcess) -> None:
    cp = cli_agent.ml("jupyter", "list", "--server", f"ws://127.0.0.1:{free_port()}/ws", check=False)
    assert cp.returncode == 7 and "make dev-up" in cp.stderr


def test_sync_of_an_unlinked_workspace_is_a_wrong_state(cli_agent: AgentProcess) -> None:
    cp = cli_agent.ml("jupyter", "sync", WS, "--to-experiment", check=False)
    assert cp.returncode == 4, cp.stderr
    assert "linked to no experiment" in cp.stderr and f"ml jupyter link {WS}" in cp.stderr


# -- a reader that went away ------------------------------------------------------------------


@pytest.mark.parametrize("buffering", ["buffered", "unbuffered"])
@pytest.mark.parametrize("args", [["--help"], ["jupyter", "--help"], ["jupyter", "list"], ["status"],
                                  ["jupyter", "audit", "--export", "csv"], ["jupyter", "info", WS, "--json"]])
def test_a_closed_pipe_ends_ml_quietly(cli_agent: AgentProcess, args: list[str], buffering: str) -> None:
    """`ml ... | head`: once the reader is gone, ml stops without a traceback, with the status a
    Unix tool killed by SIGPIPE has (141), whether the write fails at once or at the last flush."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before ml writes anything
    env = {**os.environ, "FETCHML_SERVER": cli_agent.ws_url, "FETCHML_API_KEY": KEYS["admin"],
           "FETCHML_CONFIG": str(cli_agent.root / "none.yaml")}
    env.pop("PYTHONUNBUFFERED", None)
    if buffering == "unbuffered":
        env["PYTHONUNBUFFERED"] = "1"
    try:
        cp = subprocess.run([*ML, *args], stdout=write_end, stderr=subprocess.PIPE, env=env, timeout=60)
    finally:
        os.close(write_end)
    assert cp.stderr == b"", cp.stderr.decode()
    assert cp.returncode == 141


def test_ml_piped_into_head(cli_agent: AgentProcess) -> None:
    env = {**os.environ, "FETCHML_SERVER": cli_agent.ws_url, "FETCHML_API_KEY": KEYS["admin"]}
    ml = " ".join(ML)
    cp = subprocess.run(["bash", "-c", f"for i in 1 2 3; do {ml} jupyter audit --export csv; done | head -1"],
                        capture_output=True, text=True, env=env, timeout=120)
    assert cp.stdout.startswith("id,time,ts,user,action") and cp.stderr == ""


# -- what ml imports --------------------------------------------------------------------------


def test_a_command_imports_the_codec_and_a_websocket_client_only(cli_agent: AgentProcess) -> None:
    env = {**os.environ, "FETCHML_SERVER": cli_agent.ws_url, "FETCHML_API_KEY": KEYS["admin"],
           "FETCHML_CONFIG": str(cli_agent.root / "none.yaml")}
    cp = subprocess.run([sys.executable, "-X", "importtime", "-c",
                         "import sys; from fetchml_agent.cli.main import main; sys.exit(main())", "jupyter", "list"],
                        capture_output=True, text=True, env=env, timeout=60)
    assert cp.returncode == 0, cp.stderr
    imported = {line.rsplit("|", 1)[1].strip() for line in cp.stderr.splitlines() if line.startswith("import time:")}
    ours = {m for m in imported if m.startswith("fetchml_agent")}
    allowed = {"fetchml_agent", "fetchml_agent.errors", "fetchml_agent.client", "fetchml_agent.wsclient"}
    assert {m for m in ours if m not in allowed and not m.startswith(("fetchml_agent.cli", "fetchml_agent.protocol"))} == set()
    heavy = {"websockets", "yaml", "ssl", "asyncio", "urllib.parse", "pathlib", "shutil", "html", "http.client",
             "email", "importlib.metadata", "subprocess", "sqlite3", "logging", "threading", "encodings.idna"}
    assert imported & heavy == set()


# -- monitor ----------------------------------------------------------------------------------


def test_monitor_shows_cpu_as_a_share_of_the_limit(cli_agent: AgentProcess) -> None:
    text = cli_agent.ml("jupyter", "monitor", WS, "--interval", "0.3", "--count", "2").stdout.splitlines()
    assert len(text) == 2
    for line in text:
        assert re.search(r"cpu +\d+\.\d% of 1 core  memory \d+ MiB of 1024 MiB \(\d+%\)", line), line
    samples = cli_agent.ml_json("jupyter", "monitor", WS, "--interval", "0.3", "--count", "3")["samples"]
    assert len(samples) == 3
    for s in samples:  # a rate over the sampling interval, as a share of --cpu 1
        assert 0 <= s["cpu_percent_of_limit"] <= 200 and s["memory_bytes"] > 0

    # A kernel spinning on one core shows up as a large share of the one-core limit.
    ws = cli_agent.ml_json("jupyter", "info", WS)
    stop = Path(ws["path"], "stop-spinning")
    spinner = threading.Thread(target=execute, args=(ws["url"], "import os\nwhile not os.path.exists('stop-spinning'):\n"
                                                                 "    pass\n'done'", 300), daemon=True)
    spinner.start()
    try:
        busiest = 0.0
        for _ in range(40):
            samples = cli_agent.ml_json("jupyter", "monitor", WS, "--interval", "0.5", "--count", "2")["samples"]
            busiest = max(busiest, *(s["cpu_percent_of_limit"] for s in samples))
            if busiest > 20:
                break
        assert busiest > 20
    finally:
        stop.touch()
        spinner.join(60)


# -- access and share say what changed ----------------------------------------------------------


def test_access_and_share_say_what_changed(cli_agent: AgentProcess) -> None:
    def grant(*args: str) -> str:
        return cli_agent.ml("jupyter", *args).stdout.strip()

    assert grant("access", WS, "--user", "bob", "--role", "viewer") == \
        f"user bob now has the viewer role on workspace {WS} (new grant)"
    assert grant("access", WS, "--user", "bob", "--role", "editor") == f"user bob: viewer -> editor on workspace {WS}"
    assert grant("access", WS, "--user", "bob", "--role", "editor") == \
        f"user bob already had the editor role on workspace {WS} (unchanged)"
    assert grant("share", WS, "--team", "data-science-team") == \
        f"team data-science-team now has the collaborator role on workspace {WS} (new grant)"
    doc: dict[str, Any] = cli_agent.ml_json("jupyter", "share", WS, "--team", "data-science-team", "--role", "viewer")
    assert doc == {"workspace": WS, "team": "data-science-team", "role": "viewer", "previous_role": "collaborator"}
    assert "revoked" in grant("revoke", WS, "bob")
    assert "revoked" in grant("revoke", WS, "team:data-science-team")


def test_a_grant_answers_the_role_it_replaced(cli_agent: AgentProcess) -> None:
    """The agent's answer carries ``previous_role``, so a client says what changed in one round trip."""
    def grant(role: str) -> dict[str, Any]:
        req = urllib.request.Request(
            f"{cli_agent.http_url}/api/v1/jupyter/workspaces/{WS}/access", method="POST",
            data=json.dumps({"user": "carol", "role": role}).encode(),
            headers={"Authorization": f"Bearer {KEYS['admin']}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return dict(json.loads(resp.read()))

    try:
        assert grant("viewer") == {"workspace": WS, "user": "carol", "role": "viewer", "previous_role": None}
        assert grant("editor")["previous_role"] == "viewer"
    finally:
        cli_agent.ml("jupyter", "revoke", WS, "carol")
