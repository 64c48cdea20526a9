"""The local warm pool under ``local.isolation: users`` (issue #16, docs/warm-pool.md): zygotes.

A real agent as root with per-owner OS users, real JupyterLab, the real ``ml``. A member is a
pre-imported JupyterLab process holding no owner, secret or socket; bob's create claims it and
it serves as bob's OS user (uid read from /proc), with bob's HOME, a directory of bob's, the
profile's limits and the uid's firewall rules; a kernel runs as bob from the workspace's kernel
environment. Carol's claim gets another member with nothing of bob's. An agent killed with a
claimed workspace and a waiting member adopts the first and ends the second.
"""

from __future__ import annotations

import os
import pwd
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fetchml_agent import procs
from tests.conftest import AgentProcess, free_port
from tests.integration.jupyter import execute, put_contents
from tests.integration.pools import get, pool_status, token_of, wait_ready
from tests.integration.test_local_isolation import BASE_PYTHON, _probe, end_users_leftovers

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")

SERVER_ENV = "FETCHML_SERVER_RUN_DIR"


@pytest.fixture
def zygote_agent() -> Iterator[AgentProcess]:
    shared = Path(tempfile.mkdtemp(prefix=f"fmltest-{os.getpid()}-zyg-", dir="/tmp"))
    os.chmod(shared, 0o711)  # pytest's base directory is 0700: the OS users could reach nothing
    prefix = f"fz{os.getpid() % 100000}{random.randint(10, 99)}-"
    table = f"fmltest_{os.getpid()}_zyg"
    local = {"isolation": "users", "workspaces_dir": str(shared / "workspaces"), "python": BASE_PYTHON,
             "user_prefix": prefix, "uid_range": [63000, 63999], "firewall_table": table}
    a = AgentProcess(shared / "agent", free_port(), {
        "local": local,
        "package_management": {"startup_blocked_packages": "off"},
        "warm_pool": {"size": 1, "profiles": [{"name": "small", "size": 1, "cpu": 1, "memory": "512m"}]},
    })
    a.write_config()
    os.chmod(a.root, 0o700)
    os.chmod(a.config_path, 0o600)
    try:
        yield a
    finally:
        a.stop()
        end_users_leftovers(a, shared / "workspaces", prefix, table)
        shutil.rmtree(shared, ignore_errors=True)


def _server_pid(a: AgentProcess, workspace_id: str) -> int:
    run_dir = Path(a.extra["local"]["workspaces_dir"]) / "run" / workspace_id
    ((pid, _env),) = procs.tree_roots_with_env(SERVER_ENV, str(run_dir))
    return pid


def _uids(pid: int) -> list[int]:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("Uid:"))
    return [int(v) for v in line.split()[1:]]


def _nice(task: Path) -> int:
    stat = (task / "stat").read_text()
    return int(stat[stat.rfind(")") + 2:].split()[16])  # field 19 of proc(5)


def test_users_claims_serve_their_owner_as_their_uid(zygote_agent: AgentProcess) -> None:
    with zygote_agent.running() as a:
        try:
            wait_ready(a)
            one = a.ml_json("jupyter", "create", "zy-one", user="bob")
            assert one["start"]["kind"] == "claim" and one["start"]["pool"] == "default", one
            assert Path(one["path"]).name == f".pool-{one['id']}"
            assert get(one["url"], "api/status", token_of(one["url"]))[0] == 200  # the owner's token, at once
            bob = pwd.getpwnam(a.extra["local"]["user_prefix"] + "bob")
            pid = _server_pid(a, one["id"])
            assert _uids(pid) == [bob.pw_uid] * 4  # the server itself, not only its kernels
            # Its start-up ran boosted; once it answered, every thread is back at the agent's priority.
            assert a.proc is not None
            assert {_nice(t) for t in Path(f"/proc/{pid}/task").iterdir()} == {_nice(Path(f"/proc/{a.proc.pid}"))}
            assert os.stat(one["path"]).st_uid == bob.pw_uid and os.stat(one["path"]).st_mode & 0o077 == 0
            put_contents(one["url"], "secret.txt", {"type": "file", "format": "text", "content": "bob's"})
            assert os.stat(Path(one["path"]) / "secret.txt").st_uid == bob.pw_uid
            # A kernel: bob's uid and HOME, the workspace's directory and kernel environment.
            seen = _probe(one["url"], {})
            assert seen["uid"] == bob.pw_uid and seen["home"] == bob.pw_dir, seen
            prefix, cwd = execute(one["url"], "import os, sys; print(sys.prefix); print(os.getcwd())").split()
            assert prefix.endswith(f"/envs/{one['id']}") and cwd == one["path"]
            ruleset = subprocess.run(["nft", "list", "table", "inet", a.extra["local"]["firewall_table"]],
                                     capture_output=True, text=True, check=True).stdout
            assert f"skuid {bob.pw_uid}" in ruleset or f"skuid {bob.pw_name}" in ruleset, ruleset

            # Carol's claim: another member, another uid, nothing of bob's.
            wait_ready(a)
            two = a.ml_json("jupyter", "create", "zy-two", user="carol")
            assert two["start"]["kind"] == "claim" and two["id"] != one["id"] and two["path"] != one["path"]
            carol = pwd.getpwnam(a.extra["local"]["user_prefix"] + "carol")
            assert _uids(_server_pid(a, two["id"])) == [carol.pw_uid] * 4
            status, listing = get(two["url"], "api/contents", token_of(two["url"]))
            assert status == 200 and listing["content"] == []
            assert get(two["url"], "api/kernels", token_of(two["url"])) == (200, [])
            assert get(two["url"], "api/status", token_of(one["url"]))[0] in (401, 403)
            assert not _probe(two["url"], {"bob": str(Path(one["path"]) / "secret.txt")})["bob"].startswith("read:")

            # A profile's member: the profile's limits, as a cold start gets them.
            wait_ready(a, "small")
            small = a.ml_json("jupyter", "create", "zy-small", "--cpu", "1", "--memory", "512m", user="bob")
            assert small["start"]["kind"] == "claim" and small["start"]["pool"] == "small", small
            cold = a.ml_json("jupyter", "create", "zy-cold", "--cpu", "1", "--memory", "512m", "--password", "pw-zy",
                             user="bob")
            assert cold["start"]["kind"] == "cold"
            for what in ("cpu", "memory"):
                assert small["limits"]["per_resource"][what] == cold["limits"]["per_resource"][what]
            if small["limits"]["enforced"]:
                cgroup = Path(f"/proc/{_server_pid(a, small['id'])}/cgroup").read_text()
                assert small["id"] in cgroup, cgroup
            print("claim seconds:", [w["start"]["seconds"] for w in (one, two, small)])

            # An agent killed with a claimed workspace and a waiting member: the next one adopts
            # the first (same process) and ends the second.
            wait_ready(a)
            members = [d for d in (Path(a.extra["local"]["workspaces_dir"]) / "run").glob("*/pool-member.json")]
            waiting = [(_server_pid(a, m.parent.name), m.parent.name) for m in members]
            assert waiting
            for zygote, _member in waiting:  # root, no credential, listening on nothing
                assert _uids(zygote) == [0] * 4
                env = procs.environ(zygote)
                assert "JUPYTER_TOKEN" not in env and not any(k.startswith("FETCHML_") and k != SERVER_ENV for k in env)
                port = next(int(x.split("=")[1]) for x in Path(f"/proc/{zygote}/cmdline").read_text().split("\0")
                            if x.startswith("--port="))
                with pytest.raises(OSError):
                    socket.create_connection(("127.0.0.1", port), timeout=2).close()
            waiting_started = [(p, procs.start_time(p)) for p, _ in waiting]
            a.kill9()
            a.start()
            deadline = time.monotonic() + 60
            while any(procs.alive(p, s) for p, s in waiting_started) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not any(procs.alive(p, s) for p, s in waiting_started)
            after = a.ml_json("jupyter", "info", "zy-one", user="bob")
            assert after["status"] == "running" and _server_pid(a, one["id"]) == pid
            assert get(after["url"], "api/contents/secret.txt", token_of(after["url"]))[0] == 200
            wait_ready(a)
            assert pool_status(a)["ready"] >= 1
        except BaseException:
            for log in sorted((a.data_dir / "logs").glob("*.log")):
                print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")
            raise
        finally:
            for name, owner in (("zy-one", "bob"), ("zy-two", "carol"), ("zy-small", "bob"), ("zy-cold", "bob")):
                a.ml("jupyter", "delete", name, "--yes", user=owner, check=False)
