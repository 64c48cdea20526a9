"""Shared fixtures: a real agent process and the real `ml` command against it."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from fetchml_agent.auth import api_key_verifier

pytest_plugins = ["tests.leaks", "tests.netfixtures"]

BIN = Path(sys.executable).parent
KEYS = {"admin": "key-admin-0123456789", "bob": "key-bob-0123456789", "carol": "key-carol-0123456789"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def command(name: str, module: str) -> list[str]:
    script = BIN / name
    return [str(script)] if script.exists() else [sys.executable, "-m", module]


ML = command("ml", "fetchml_agent.cli.main")
AGENT = command("fetchml-agent", "fetchml_agent.agent_main")


@dataclass
class AgentProcess:
    """A real ``fetchml-agent serve`` in a temporary directory."""

    root: Path
    port: int
    extra: dict[str, Any] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    #: argv put before the agent's (tests/agentuser.py: as another OS user, with given capabilities)
    wrapper: list[str] = field(default_factory=list)

    @property
    def config_path(self) -> Path:
        return self.root / "agent.yaml"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def write_config(self) -> None:
        doc: dict[str, Any] = {
            "listen": f"127.0.0.1:{self.port}",
            "data_dir": "./data",
            "runtime": "local",
            "users": [
                {"name": "admin", "role": "admin", "api_key_verifier": api_key_verifier(KEYS["admin"])},
                {"name": "bob", "role": "user", "api_key_verifier": api_key_verifier(KEYS["bob"])},
                {"name": "carol", "role": "user", "api_key_verifier": api_key_verifier(KEYS["carol"]),
                 "teams": ["data-science-team"]},
            ],
            "local": {"port_base": random.randint(20000, 40000), "isolation": "none"},  # several test users share
        }
        for key, value in self.extra.items():
            if isinstance(value, dict) and isinstance(doc.get(key), dict):
                doc[key] = {**doc[key], **value}
            else:
                doc[key] = value
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(doc))

    def start(self, env: dict[str, str] | None = None) -> None:
        if not self.config_path.exists():
            self.write_config()
        log = open(self.root / "agent.log", "ab")
        self.proc = subprocess.Popen(
            [*self.wrapper, *AGENT, "serve", "--config", str(self.config_path)],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, start_new_session=True,
        )
        try:
            self._wait_up()
        except BaseException:
            self.stop()  # an agent that did not come up is not left running
            raise

    def _wait_up(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("agent exited:\n" + (self.root / "agent.log").read_text()[-3000:])
            try:
                tls = self.extra.get("tls")
                if tls:
                    import ssl

                    ctx = ssl.create_default_context(cafile=tls["cert"])
                    urllib.request.urlopen(self.http_url.replace("http:", "https:") + "/api/v1/health", timeout=1, context=ctx).read()
                else:
                    urllib.request.urlopen(self.http_url + "/api/v1/health", timeout=1).read()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("agent did not come up:\n" + (self.root / "agent.log").read_text()[-3000:])

    @contextlib.contextmanager
    def running(self, env: dict[str, str] | None = None) -> Iterator[AgentProcess]:
        """Start the agent; on leaving, whatever happened, end its workspaces and stop it."""
        try:
            self.start(env)
            yield self
        finally:
            self.cleanup_workspaces()
            self.stop()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def ml(self, *args: str, user: str = "admin", check: bool = True, timeout: float = 180,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, "FETCHML_SERVER": self.ws_url, "FETCHML_API_KEY": KEYS[user],
                    "FETCHML_CONFIG": str(self.root / "no-ml-config.yaml"), **(env or {})}
        cp = subprocess.run([*ML, *args], capture_output=True, text=True, env=full_env, timeout=timeout)
        if check and cp.returncode != 0:
            raise AssertionError(f"ml {' '.join(args)} exited {cp.returncode}\nstdout: {cp.stdout}\nstderr: {cp.stderr}")
        return cp

    def ml_json(self, *args: str, user: str = "admin") -> Any:
        return json.loads(self.ml(*args, "--json", user=user).stdout)

    def workspace_secrets(self, name: str) -> dict[str, Any]:
        """The sealed columns of workspace ``name`` as the agent reads them (with its key file)."""
        import sqlite3

        from fetchml_agent.store.sealed import Sealer, key_path, load_or_create_key
        from fetchml_agent.store.workspaces import SEALED

        conn = sqlite3.connect(self.data_dir / "agent.db")
        try:
            row = conn.execute(f"SELECT id, {', '.join(SEALED)} FROM workspaces WHERE name = ?", (name,)).fetchone()
        finally:
            conn.close()
        sealer = Sealer(load_or_create_key(key_path(self.data_dir)))
        return {col: sealer.open(value, f"workspaces.{col}.{row[0]}") for col, value in zip(SEALED, row[1:], strict=True)}

    def cleanup_workspaces(self) -> None:
        """Stop every JupyterLab this agent started (by its data dir), even after a kill -9."""
        db = self.data_dir / "agent.db"
        if not db.exists():
            return
        import sqlite3

        conn = sqlite3.connect(db)
        for (state,) in conn.execute("SELECT runtime_state FROM workspaces WHERE runtime_state IS NOT NULL"):
            pid = json.loads(state).get("pid")
            if pid:
                try:
                    os.killpg(int(pid), signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        conn.close()
        for pid in self.servers():  # spawned but never recorded (an agent killed in between)
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def servers(self, prefix: str | None = None) -> list[int]:
        """The pids of every JupyterLab this agent's local runtime runs, recorded or not (their
        run directories under ``prefix``: by default the data_dir's)."""
        from fetchml_agent.procs import tree_roots_with_env
        from fetchml_agent.runtimes.local.runtime import SERVER_ENV

        return [pid for pid, _ in tree_roots_with_env(SERVER_ENV, prefix or str(self.data_dir / "run") + os.sep)]


@pytest.fixture(scope="session")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    a = AgentProcess(tmp_path_factory.mktemp("agent"), free_port(), {"templates_dir": str(Path(__file__).parent / "data" / "templates")})
    with a.running():
        yield a


@pytest.fixture
def fresh_agent(tmp_path: Path) -> Iterator[AgentProcess]:
    a = AgentProcess(tmp_path / "agent", free_port())
    try:
        yield a
    finally:
        a.cleanup_workspaces()
        a.stop()


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    base = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    return f"{base}-{random.randint(1000, 9999)}"


