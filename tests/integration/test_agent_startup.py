"""``fetchml-agent`` as an operator meets it: keys, config conversion, and start-up failures.

Every failure here is one message naming the setting, a non-zero exit and no traceback.
"""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from fetchml_agent.auth import api_key_verifier
from fetchml_agent.protocol import ListRequest, api_key_hash, parse_response
from tests.conftest import AGENT, KEYS, AgentProcess, free_port


def run_agent(*args: str, timeout: float = 60, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AGENT, *args], capture_output=True, text=True, timeout=timeout, input=input)


def write_config(path: Path, port: int, users: str, data_dir: str = "./data", extra: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"listen: 127.0.0.1:{port}\ndata_dir: {data_dir}\nruntime: local\n{extra}users:\n{users}")
    return path


def assert_clean_failure(cp: subprocess.CompletedProcess[str], *needles: str) -> None:
    out = cp.stdout + cp.stderr
    assert cp.returncode != 0, out
    assert "Traceback" not in out, out
    for needle in needles:
        assert needle in out, (needle, out)


def test_new_key_and_hash_key_print_a_verifier_not_a_credential() -> None:
    cp = run_agent("new-key")
    assert cp.returncode == 0, cp.stderr
    doc = yaml.safe_load(cp.stdout)
    key, verifier = doc["api_key"], doc["api_key_verifier"]
    assert key.startswith("fml_") and len(key) >= 40
    assert verifier == api_key_verifier(key)
    assert api_key_hash(key).hex() not in verifier  # the wire value is not in what the config stores
    assert run_agent("hash-key", key).stdout.strip() == verifier
    assert run_agent("hash-key", "-", input=key + "\n").stdout.strip() == verifier
    assert "api_key_sha256" not in cp.stdout


def test_legacy_api_key_sha256_is_refused_then_converted_in_place(tmp_path: Path) -> None:
    legacy = hashlib.sha256(KEYS["admin"].encode()).hexdigest()
    users = (
        "  # the first admin\n"
        f"  - name: admin\n    role: admin\n    api_key_sha256: \"{legacy}\"   # kept comment\n"
        f"  - {{name: bob, api_key_sha256: {hashlib.sha256(KEYS['bob'].encode()).hexdigest()}}}\n"
    )
    config = write_config(tmp_path / "agent.yaml", free_port(), users)
    config.chmod(0o640)
    for cp in (run_agent("check-config", "--config", str(config)), run_agent("serve", "--config", str(config))):
        assert_clean_failure(cp, "users[0] (admin), users[1] (bob)", "api_key_sha256", "could log in",
                             f"fetchml-agent convert-keys --config {config}")
    assert not (tmp_path / "data").exists()  # refused before anything was created

    cp = run_agent("convert-keys", "--config", str(config))
    assert cp.returncode == 0 and "2 user(s)" in cp.stdout, cp.stdout + cp.stderr
    text = config.read_text()
    assert "api_key_sha256" not in text and legacy not in text and legacy[:32] not in text
    assert "# the first admin" in text and "# kept comment" in text
    assert f'api_key_verifier: "{api_key_verifier(KEYS["admin"])}"' in text
    assert f"api_key_verifier: {api_key_verifier(KEYS['bob'])}" in text
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    assert run_agent("check-config", "--config", str(config)).returncode == 0
    assert "no api_key_sha256" in run_agent("convert-keys", "--config", str(config)).stdout


def test_converted_config_still_admits_the_same_keys(tmp_path: Path) -> None:
    agent = AgentProcess(tmp_path / "agent", free_port())
    agent.write_config()
    doc = yaml.safe_load(agent.config_path.read_text())
    for user in doc["users"]:  # as an older agent's config had them
        del user["api_key_verifier"]
        user["api_key_sha256"] = hashlib.sha256(KEYS[user["name"]].encode()).hexdigest()
    agent.config_path.write_text(yaml.safe_dump(doc))
    assert run_agent("convert-keys", "--config", str(agent.config_path)).returncode == 0
    try:
        agent.start()
        assert agent.ml_json("jupyter", "list", user="bob")["services"] == []
        # What the file stores now, replayed as the wire credential, does not log in.
        from websockets.sync.client import connect

        stored = yaml.safe_load(agent.config_path.read_text())["users"][0]["api_key_verifier"]
        with connect(agent.ws_url) as ws:
            for guess in (bytes.fromhex(stored)[:16], bytes.fromhex(stored)[16:]):
                ws.send(ListRequest(guess).serialize())
                pkt = parse_response(ws.recv(timeout=10))
                assert getattr(pkt, "code", None) == 0x02
    finally:
        agent.stop()


@pytest.fixture
def running(tmp_path: Path) -> Iterator[AgentProcess]:
    a = AgentProcess(tmp_path / "first", free_port())
    a.start()
    yield a
    a.stop()


def test_second_agent_on_a_busy_port_reports_the_bind_error_only(running: AgentProcess, tmp_path: Path) -> None:
    second = AgentProcess(tmp_path / "second", running.port)
    second.write_config()
    cp = run_agent("serve", "--config", str(second.config_path))
    assert_clean_failure(cp, f"cannot listen on 127.0.0.1:{running.port}", "listen in", "already in use")
    assert "serving" not in cp.stderr
    # It stopped before it opened a store or touched a workspace.
    assert not (second.data_dir / "agent.db").exists()


def test_bind_failure_of_an_address_this_host_lacks(tmp_path: Path) -> None:
    config = write_config(tmp_path / "agent.yaml", free_port(), "  []\n").read_text()
    (tmp_path / "agent.yaml").write_text(config.replace("127.0.0.1", "192.0.2.77"))
    cp = run_agent("serve", "--config", str(tmp_path / "agent.yaml"))
    assert_clean_failure(cp, "cannot listen on 192.0.2.77", "listen in")


@pytest.fixture
def mount_point(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small or read-only file system needs root")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _mount(mnt: Path, *options: str) -> None:
    cp = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(mnt)], capture_output=True, text=True)
    if cp.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {cp.stderr.strip()}")


def _both(config: Path) -> list[subprocess.CompletedProcess[str]]:
    return [run_agent("check-config", "--config", str(config)), run_agent("serve", "--config", str(config))]


USERS = f"  - {{name: admin, role: admin, api_key_verifier: {api_key_verifier('k')}}}\n"


def test_data_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("not a directory")
    config = write_config(tmp_path / "agent.yaml", free_port(), USERS)
    for cp in _both(config):
        assert_clean_failure(cp, f"data_dir {tmp_path / 'data'} is a file", "point data_dir")


def test_data_dir_on_a_read_only_file_system(tmp_path: Path, mount_point: Path) -> None:
    _mount(mount_point, "size=16m", "ro")
    for data_dir in (mount_point, mount_point / "nested" / "data"):
        config = write_config(tmp_path / "agent.yaml", free_port(), USERS, data_dir=str(data_dir))
        for cp in _both(config):
            assert_clean_failure(cp, f"data_dir {data_dir}", "read-only file system", "data_dir in agent.yaml")


def test_data_dir_without_space(tmp_path: Path, mount_point: Path) -> None:
    _mount(mount_point, "size=12m")
    config = write_config(tmp_path / "agent.yaml", free_port(), USERS, data_dir=str(mount_point))
    with open(mount_point / "filler", "wb") as f:  # leave less than the agent needs
        f.write(b"\0" * (11 * 1024 * 1024))
    for cp in _both(config):
        assert_clean_failure(cp, f"data_dir {mount_point}", "free", "another file system")
    try:
        with open(mount_point / "filler2", "wb") as f:  # and then nothing at all
            while True:
                f.write(b"\0" * 65536)
    except OSError:
        pass
    for cp in _both(config):
        assert_clean_failure(cp, f"data_dir {mount_point}", "no space left")


def test_data_dir_not_writable_by_the_agents_user(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere: covered by the read-only mount")
    (tmp_path / "data").mkdir(mode=0o500)
    config = write_config(tmp_path / "agent.yaml", free_port(), USERS)
    for cp in _both(config):
        assert_clean_failure(cp, "data_dir", "not writable")


def test_data_dir_and_database_files_are_private(fresh_agent: AgentProcess) -> None:
    fresh_agent.root.mkdir(parents=True)
    fresh_agent.data_dir.mkdir(mode=0o755)  # as an older agent left it
    os.chmod(fresh_agent.data_dir, 0o755)
    fresh_agent.start()
    fresh_agent.ml("jupyter", "list")  # something is written: the WAL exists
    deadline = time.monotonic() + 10
    while not (fresh_agent.data_dir / "agent.db-wal").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stat.S_IMODE(fresh_agent.data_dir.stat().st_mode) == 0o700
    for name in ("agent.db", "agent.db-wal", "agent.db-shm"):
        path = fresh_agent.data_dir / name
        assert path.exists(), name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, name


def test_fresh_data_dir_is_created_private(tmp_path: Path) -> None:
    agent = AgentProcess(tmp_path / "agent", free_port(), {"data_dir": "./nested/state"})
    try:
        agent.start()
        state = agent.root / "nested" / "state"
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        assert stat.S_IMODE((state / "agent.db").stat().st_mode) == 0o600
        with socket.create_connection(("127.0.0.1", agent.port), timeout=5):
            pass
    finally:
        agent.stop()
