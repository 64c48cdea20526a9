"""``local.isolation: users``: each owner's workspaces run as an OS user of their own.

A privileged agent (root, as this test runs) on the local runtime; bob and carol each create a
workspace. Code in bob's real kernel tries to read the agent's database, secrets key and
agent.yaml, carol's files and carol's HOME: every attempt fails, while the same code in carol's
kernel reads carol's own files. The workspaces_dir (and the agent's root) lie in a
world-traversable directory of the test's own, since pytest's base directory is 0700 and would
hide everything by itself; the OS users the agent creates carry a prefix of this test's own and
are removed afterwards.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import pwd
import random
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.agentuser import FIREWALL, SWITCH_USERS, agent_os_user, hand_over, setpriv
from tests.conftest import AgentProcess, free_port
from tests.integration.jupyter import execute
from tests.netfixtures import Server

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")

BASE_PYTHON = "/usr/bin/python3.11"

NET_PROBE = """
import json, socket
out = {}
for label, (host, port) in json.loads(%r).items():
    try:
        socket.create_connection((host, port), timeout=5).close()
        out[label] = "connected"
    except OSError as exc:
        out[label] = type(exc).__name__
print(json.dumps(out))
"""

PROBE = """
import json, os, pwd
out = {"uid": os.getuid(), "user": pwd.getpwuid(os.getuid()).pw_name, "home": os.environ.get("HOME")}
out["caps"] = {l.split(":")[0]: int(l.split()[1], 16) for l in open("/proc/self/status") if l.startswith(("CapEff", "CapPrm", "CapAmb", "CapInh"))}
for label, path in json.loads(%r).items():
    try:
        if os.path.isdir(path):
            out[label] = "read:" + ",".join(sorted(os.listdir(path)))
        else:
            with open(path, "rb") as fh:
                out[label] = "read:" + fh.read(64).decode(errors="replace")
    except OSError as exc:
        out[label] = type(exc).__name__
print(json.dumps(out))
"""


def _net_probe(url: str, targets: dict[str, tuple[str, int]]) -> dict[str, str]:
    return json.loads(execute(url, NET_PROBE % json.dumps(targets)).strip().splitlines()[-1])  # type: ignore[no-any-return]


def _host_address() -> str:
    """An address of this host that is not loopback (stands for "the internet": the rule that
    refuses it is the one that refuses every destination not allowed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing address
        return str(s.getsockname()[0])


def _probe(url: str, targets: dict[str, str]) -> dict[str, str]:
    return json.loads(execute(url, PROBE % json.dumps(targets)).strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix=f"fmltest-{os.getpid()}-iso-", dir="/tmp"))
    os.chmod(d, 0o711)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _remove_users(prefix: str) -> None:
    for entry in pwd.getpwall():
        if entry.pw_name.startswith(prefix):
            subprocess.run(["userdel", entry.pw_name], capture_output=True, check=False)


def end_users_leftovers(a: AgentProcess, workspaces_dir: Path, prefix: str, table: str) -> None:
    """After a ``local.isolation: users`` agent stopped: its servers, the OS users it made (named
    with ``prefix``) and its nftables table go."""
    for pid in a.servers(prefix=str(workspaces_dir / "run") + os.sep):
        try:
            os.killpg(pid, 9)
        except (ProcessLookupError, PermissionError):
            pass
    _remove_users(prefix)
    subprocess.run(["nft", "delete", "table", "inet", table], capture_output=True, check=False)


@pytest.fixture(params=["root", "capabilities"])
def isolated_agent(request: pytest.FixtureRequest, shared_dir: Path) -> Iterator[AgentProcess]:
    """The agent as root, and as a user of its own holding only the capabilities the
    fetchml_agent role's unit grants (tests/agentuser.py), as the role runs it."""
    prefix = f"ft{os.getpid() % 100000}{random.randint(10, 99)}-"
    table = f"fmltest_{os.getpid()}_local"
    local = {"isolation": "users", "workspaces_dir": str(shared_dir / "workspaces"), "python": BASE_PYTHON,
             "user_prefix": prefix, "uid_range": [62000, 62999], "firewall_table": table}
    a = AgentProcess(shared_dir / "agent", free_port(), {"local": local})
    a.write_config()
    os.chmod(a.root, 0o700)  # as the role installs it: agent.yaml is the agent's alone
    os.chmod(a.config_path, 0o600)
    with contextlib.ExitStack() as stack:
        env = None
        if request.param == "capabilities":
            agent_user = stack.enter_context(agent_os_user())
            hand_over(a.root, agent_user)
            a.wrapper = setpriv(agent_user, SWITCH_USERS + FIREWALL)
            env = {"HOME": str(a.root)}
        try:
            with a.running(env):
                yield a
        finally:
            end_users_leftovers(a, shared_dir / "workspaces", prefix, table)


def test_each_owner_runs_as_a_user_of_their_own(isolated_agent: AgentProcess, internet: Server) -> None:
    a = isolated_agent
    bob = a.ml_json("jupyter", "create", "bob-ws", "--disk", "64m", "--experiment", "exp-iso", user="bob")
    carol = a.ml_json("jupyter", "create", "carol-ws", user="carol")
    try:
        # carol leaves a file in her workspace and one in her HOME
        carol_home = execute(carol["url"], "import os; print(os.environ['HOME'])").strip()
        wrote = execute(carol["url"], "import os\n"
                                      "open('notes.txt', 'w').write('carol-only')\n"
                                      "print(open(os.path.join(os.environ['HOME'], 'dot.txt'), 'w').write('carol-home'))")
        assert wrote.strip() == "10", wrote
        carol_files = carol["path"]
        targets = {
            "agent_db": str(a.data_dir / "agent.db"),
            "secrets_key": str(a.data_dir / "keys" / "secrets.key"),
            "agent_yaml": str(a.config_path),
            "agent_log": str(a.data_dir / "logs"),
            "carol_files": carol_files,
            "carol_notes": os.path.join(carol_files, "notes.txt"),
            "carol_home": carol_home,
            "carol_dot": os.path.join(carol_home, "dot.txt"),
        }
        targets_files = dict(targets)
        seen_by_bob = _probe(bob["url"], targets)
        assert seen_by_bob["uid"] not in (0, os.getuid()) and seen_by_bob["user"].endswith("-bob"), seen_by_bob
        assert not any(seen_by_bob["caps"].values()), seen_by_bob["caps"]  # nothing of the agent's privilege
        for label in targets:
            assert not seen_by_bob[label].startswith("read:"), (label, seen_by_bob[label])
        seen_by_carol = _probe(carol["url"], {k: targets[k] for k in ("carol_notes", "carol_dot", "agent_db")})
        assert seen_by_carol["user"].endswith("-carol") and seen_by_carol["uid"] != seen_by_bob["uid"]
        assert seen_by_carol["carol_notes"] == "read:carol-only"
        assert seen_by_carol["carol_dot"] == "read:carol-home", (carol_home, seen_by_carol)
        assert not seen_by_carol["agent_db"].startswith("read:")
        # what the agent says it enforces
        status = a.ml_json("status")
        assert status["runtime"]["isolation"]["mode"] == "users" and status["runtime"]["isolation"]["enforced"]
        # the network, keyed by uid: bob reaches his own JupyterLab and the index-only listener,
        # not carol's JupyterLab, not the agent's API, not another host address
        with socket.create_server(("0.0.0.0", 0)) as outside:
            port_of = {name: int(doc["url"].split(":")[2].split("/")[0]) for name, doc in (("bob", bob), ("carol", carol))}
            index_port = yaml.safe_load(a.config_path.read_text())["local"]["port_base"] - 1  # local.index_port's default
            targets = {"own_lab": ("127.0.0.1", port_of["bob"]), "carol_lab": ("127.0.0.1", port_of["carol"]),
                       "agent_api": ("127.0.0.1", a.port), "outside": (_host_address(), outside.getsockname()[1]),
                       "internet": (internet.host, internet.port)}
            targets["index"] = ("127.0.0.1", index_port)
            reached = _net_probe(bob["url"], targets)
        assert reached["own_lab"] == "connected", reached
        assert reached["index"] == "connected", reached
        socket.create_connection((internet.host, internet.port), timeout=5).close()  # it answers the test itself
        for label in ("carol_lab", "agent_api", "outside", "internet"):
            assert reached[label] in ("ConnectionRefusedError", "TimeoutError", "PermissionError"), (label, reached)
        iso = a.ml_json("jupyter", "info", "bob-ws", user="bob")["isolation"]  # ml jupyter info says it too
        assert "meta skuid" not in iso["network"] and "by uid" in iso["network"]
        ruleset = subprocess.run(["nft", "list", "table", "inet", a.extra["local"]["firewall_table"]],
                                 capture_output=True, text=True, check=True).stdout
        assert f"meta skuid {seen_by_bob['uid']}" in ruleset or f"skuid {seen_by_bob['user']}" in ruleset, ruleset
        # two kernels started at once get Unix sockets of their own (each answers with its own pid)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            pids = list(pool.map(lambda _: execute(bob["url"], "import os; print(os.getpid())").strip(), range(2)))
        assert len(set(pids)) == 2 and all(p.isdigit() for p in pids), pids
        # a queued script of bob's runs as bob, with bob's HOME, and reads neither the agent's files nor carol's
        run_targets = {k: targets_files[k] for k in ("agent_db", "secrets_key", "carol_notes", "carol_dot")}
        Path(bob["path"], "probe_run.py").write_text(
            PROBE % json.dumps(run_targets)
            + "os.makedirs('outputs', exist_ok=True)\njson.dump(out, open('outputs/probe.json', 'w'))\n")
        run = a.ml_json("jupyter", "queue", "--workspace", "bob-ws", "--script", "probe_run.py", "--wait", user="bob")
        assert run["status"] == "succeeded", run
        ran = json.loads(Path(run["run_dir"], "work", "outputs", "probe.json").read_text())
        assert ran["user"] == seen_by_bob["user"] and ran["home"] == seen_by_bob["home"], ran
        assert not any(ran[k].startswith("read:") for k in run_targets), ran
        # --disk: the agent's directory under workspaces_dir/files is its own to mount over (as root)
        per = a.ml_json("jupyter", "limits", "bob-ws", user="bob")["limits"]["per_resource"]
        if a.wrapper:  # the capable non-root agent: a loop mount needs root, and says so
            assert per["disk"].startswith("not enforced: a size limit needs the agent to run as root"), per
        else:
            assert per["disk"] == "enforced: 64 MiB, a loop-mounted ext4 filesystem", per
        # bob's packages go to his own venv, as bob
        installed = execute(bob["url"], "import sys, os; print(sys.prefix, os.access(sys.prefix, os.W_OK))").split()
        assert installed[1] == "True" and "/envs/" in installed[0]
    except BaseException:
        for log in sorted((a.data_dir / "logs").glob("*.log")):  # JupyterLab's own words, before delete removes them
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")
        raise
    finally:
        a.ml("jupyter", "delete", "bob-ws", "--yes", user="bob", check=False)
        a.ml("jupyter", "delete", "carol-ws", "--yes", user="carol", check=False)


def test_an_interpreter_users_cannot_run_is_refused_at_start(shared_dir: Path) -> None:
    local = {"isolation": "users", "workspaces_dir": str(shared_dir / "ws"), "python": str(shared_dir / "private" / "python")}
    (shared_dir / "private").mkdir(mode=0o700)
    shutil.copy(BASE_PYTHON, shared_dir / "private" / "python")
    a = AgentProcess(shared_dir / "agent2", free_port(), {"local": local})
    with pytest.raises(RuntimeError, match=r"local\.python"):
        a.start()


def test_the_default_follows_the_agents_privilege(shared_dir: Path) -> None:
    """``local.isolation`` unset: ``users`` on an agent that may switch users (root; a user holding
    the role's capabilities, without CAP_NET_ADMIN here, so its network is said not enforced),
    one person's unisolated workspaces on an agent without them; ``users`` set there is refused
    at start, naming the capabilities and the setting."""
    prefix = f"ft{os.getpid() % 100000}{random.randint(10, 99)}-"
    table = f"fmltest_{os.getpid()}_dflt"
    local = {"isolation": None, "workspaces_dir": str(shared_dir / "workspaces"), "python": BASE_PYTHON,
             "user_prefix": prefix, "uid_range": [62000, 62999], "firewall_table": table}

    def agent(name: str, user: str | None = None, caps: tuple[str, ...] = (), **more: object) -> AgentProcess:
        a = AgentProcess(shared_dir / name, free_port(), {"local": {**local, **more}})
        a.write_config()
        if user is not None:
            hand_over(a.root, user)
            a.wrapper = setpriv(user, caps)
        return a

    try:
        a = agent("as-root")
        with a.running():
            iso = a.ml_json("status")["runtime"]["isolation"]
            assert iso["mode"] == "users" and iso["enforced"] and "by uid" in iso["network"], iso
            assert "isolation: users:" in a.ml("status").stdout
        with agent_os_user() as user:
            home = {"HOME": str(shared_dir)}
            a = agent("with-caps", user, SWITCH_USERS)
            with a.running(home):
                iso = a.ml_json("status")["runtime"]["isolation"]
            assert iso["mode"] == "users" and any("CAP_NET_ADMIN" in n for n in iso["not_enforced"]), iso
            a = agent("plain", user)
            with a.running(home):
                iso = a.ml_json("status")["runtime"]["isolation"]
            assert iso["mode"] == "single" and iso["enforced"] is False, iso
            a = agent("asked", user, isolation="users")
            with pytest.raises(RuntimeError) as refused:
                a.start(home)
            assert "local.isolation: users needs an agent that may switch users" in str(refused.value)
            assert "CAP_SETUID" in str(refused.value) and "local.isolation: none" in str(refused.value)
            assert "Traceback" not in str(refused.value)
    finally:
        _remove_users(prefix)
        subprocess.run(["nft", "delete", "table", "inet", table], capture_output=True, check=False)
