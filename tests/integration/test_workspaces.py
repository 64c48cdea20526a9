"""The walking skeleton end to end: the real `ml`, a real agent, real JupyterLab."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import AgentProcess
from tests.integration.jupyter import api_status, execute, split_url


def test_create_run_code_stop_delete(agent: AgentProcess, unique_name: str) -> None:
    created = agent.ml_json("jupyter", "create", unique_name, "--cpu", "1", "--memory", "1g")
    assert created["status"] == "running" and created["name"] == unique_name
    assert created["url"].startswith("http://localhost:") and "token=" in created["url"]
    assert Path(created["path"]).is_dir()
    assert created["resources"]["cpu"] == 1.0 and created["resources"]["memory_mb"] == 1024
    assert "enforced" in created["limits"]
    limits = created["limits"]
    if limits["enforced"]:  # read the limits back from the kernel's own files
        group = limits["cgroup"]
        if limits["mechanism"] == "cgroup v1":
            mem = Path("/sys/fs/cgroup/memory", group)
            assert int((mem / "memory.limit_in_bytes").read_text()) == 1024**3
            assert (Path("/sys/fs/cgroup/cpu", group) / "cpu.cfs_quota_us").read_text().strip() == "100000"
        else:
            root = Path("/sys/fs/cgroup/unified") if Path("/sys/fs/cgroup/unified/cgroup.controllers").exists() else Path("/sys/fs/cgroup")
            mem = root / group
            assert int((mem / "memory.max").read_text()) == 1024**3
        assert (mem / "cgroup.procs").read_text().split()
    else:
        assert limits["reason"]

    assert "started" in api_status(created["url"])
    assert execute(created["url"], "1+1").strip() == "2"

    info = agent.ml_json("jupyter", "info", unique_name)
    for key in ("name", "status", "url", "path", "resources", "limits_enforced"):
        assert key in info
    listed = agent.ml_json("jupyter", "list")["services"]
    assert any(s["name"] == unique_name and s["status"] == "running" for s in listed)

    assert agent.ml("jupyter", "status", unique_name).returncode == 0
    stopped = agent.ml("jupyter", "stop", unique_name)
    assert "stopped" in stopped.stdout
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(split_url(created["url"])[0] + "api/status", timeout=2)
    assert agent.ml("jupyter", "status", unique_name, check=False).returncode == 4  # wrong state: not running

    agent.ml("jupyter", "delete", unique_name, "--yes")
    assert not Path(created["path"]).exists()
    gone = agent.ml("jupyter", "info", unique_name, check=False)
    assert gone.returncode == 4 and "no workspace" in gone.stderr


def test_packages_installed_in_one_workspace_are_invisible_in_another(agent: AgentProcess, unique_name: str) -> None:
    a, b = unique_name + "-a", unique_name + "-b"
    wa = agent.ml_json("jupyter", "create", a)
    wb = agent.ml_json("jupyter", "create", b)
    try:
        assert wa["url"] != wb["url"]
        # Make a tiny package inside workspace A's own environment, as `pip install` would.
        code = (
            "import site, sys, pathlib; p = pathlib.Path(sys.prefix, 'lib', f'python{sys.version_info[0]}.{sys.version_info[1]}', 'site-packages');"
            "(p / 'only_in_a.py').write_text('X = 42'); print(sys.prefix)"
        )
        prefix_a = execute(wa["url"], code).strip()
        assert execute(wa["url"], "import only_in_a; only_in_a.X").strip() == "42"
        assert "ModuleNotFoundError" in execute(wb["url"], "import only_in_a")
        prefix_b = execute(wb["url"], "import sys; print(sys.prefix)").strip()
        assert prefix_a != prefix_b
        # Both see the shared kernel base (the kernel, pip, the SDK), not the server's packages.
        assert execute(wb["url"], "import ipykernel, pip, fetchml; 'ok'").strip() == "'ok'"
        assert "ModuleNotFoundError" in execute(wb["url"], "import papermill")
    finally:
        agent.ml("jupyter", "delete", a, "--yes", check=False)
        agent.ml("jupyter", "delete", b, "--yes", check=False)


def test_seed_service_commands(agent: AgentProcess, tmp_path: Path, unique_name: str) -> None:
    folder = tmp_path / "my-notebooks"
    folder.mkdir()
    (folder / "hello.txt").write_text("hi")
    started = agent.ml_json("jupyter", "start", "--name", unique_name, "--workspace", str(folder), "--password", "mypass")
    assert started["path"] == str(folder.resolve())
    # The URL carries the caller's own token (docs/access.md); the password is the owner's browser login.
    assert started["password_protected"] and "token=fmlp." in started["url"]
    service_id = started["id"]
    # No credential, no access.
    base, _ = split_url(started["url"])
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(base + "api/contents", timeout=5)
    assert info.value.code == 403
    # The clear password is stored nowhere in the agent's state.
    db = (agent.data_dir / "agent.db").read_bytes()
    wal = agent.data_dir / "agent.db-wal"
    assert b"mypass" not in db and (not wal.exists() or b"mypass" not in wal.read_bytes())

    services = agent.ml_json("jupyter", "list")["services"]
    mine = [s for s in services if s["id"] == service_id]
    assert mine and mine[0]["workspace"] == str(folder.resolve()) and mine[0]["status"] == "running"

    again = agent.ml_json("jupyter", "start", "--name", unique_name, "--workspace", str(folder))
    assert again["id"] == service_id  # not started twice

    agent.ml("jupyter", "stop", service_id)
    assert agent.ml_json("jupyter", "info", unique_name)["status"] == "stopped"
    agent.ml("jupyter", "delete", unique_name, "--yes")
    assert (folder / "hello.txt").read_text() == "hi"  # a directory the agent did not create is kept


def test_restart_keeps_files_and_url(agent: AgentProcess, unique_name: str) -> None:
    ws = agent.ml_json("jupyter", "create", unique_name)
    try:
        Path(ws["path"], "notes.md").write_text("keep me")
        again = agent.ml_json("jupyter", "restart", unique_name)
        assert again["status"] == "running"
        assert again["url"] == ws["url"]
        assert Path(again["path"], "notes.md").read_text() == "keep me"
        assert execute(again["url"], "open('notes.md').read()").strip() == "'keep me'"
    finally:
        agent.ml("jupyter", "delete", unique_name, "--yes", check=False)


def test_template_and_config_file(agent: AgentProcess, tmp_path: Path, unique_name: str) -> None:
    config = tmp_path / "workspace-config.yaml"
    # packages: [] : the seed template's numpy and pandas would come from the network (installs at
    # create are tested against a local index in tests/integration/packages/test_install_edges.py).
    config.write_text("resources:\n  cpu: 2\n  memory: 2g\n  disk: 20g\nenvironment:\n  python_version: '3.11'\n"
                      "packages: []\n")
    ws = agent.ml_json("jupyter", "create", unique_name, "--template", "data-science-template", "--config", str(config))
    try:
        assert ws["resources"]["cpu"] == 2.0 and ws["resources"]["memory"] == "2g" and ws["resources"]["disk"] == "20g"
        assert execute(ws["url"], "import os; os.environ['JUPYTER_ENABLE_LAB']").strip() == "'yes'"
    finally:
        agent.ml("jupyter", "delete", unique_name, "--yes", check=False)
    bad = agent.ml("jupyter", "create", unique_name + "-x", "--template", "no-such-template", check=False)
    assert bad.returncode == 2 and "no template named" in bad.stderr
    # a kind of GPU needs a runtime that places GPUs by kind (nomad): refused before anything starts
    bad = agent.ml("jupyter", "create", unique_name + "-g", "--gpu-type", "H100", check=False)
    assert bad.returncode == 2 and "--gpu-type needs a runtime that places GPUs by kind" in bad.stderr


def test_ports_first_is_base_then_next_free(fresh_agent: AgentProcess) -> None:
    fresh_agent.start()
    base = fresh_agent.extra.get("local", {}).get("port_base")
    one = fresh_agent.ml_json("jupyter", "create", "first")
    two = fresh_agent.ml_json("jupyter", "create", "second")
    cfg_base = int(__import__("yaml").safe_load(fresh_agent.config_path.read_text())["local"]["port_base"])
    assert one["port"] == cfg_base and two["port"] == cfg_base + 1, (base, one["port"], two["port"])


def test_kill_9_agent_adopts_running_workspaces(fresh_agent: AgentProcess) -> None:
    fresh_agent.start()
    ws = fresh_agent.ml_json("jupyter", "create", "survivor")
    pid = json.loads(
        __import__("sqlite3").connect(fresh_agent.data_dir / "agent.db")
        .execute("SELECT runtime_state FROM workspaces WHERE name='survivor'").fetchone()[0]
    )["pid"]
    assert api_status(ws["url"])  # a person is working in it ...
    fresh_agent.kill9()
    assert api_status(ws["url"])  # ... and JupyterLab outlives the agent (their access was known: docs/access.md)
    fresh_agent.start()
    listed = fresh_agent.ml_json("jupyter", "list")["services"]
    assert [(s["name"], s["status"], s["url"]) for s in listed] == [("survivor", "running", ws["url"])]
    # Adopted, not started twice: the same process serves, and no second JupyterLab exists.
    state = json.loads(
        __import__("sqlite3").connect(fresh_agent.data_dir / "agent.db")
        .execute("SELECT runtime_state FROM workspaces WHERE name='survivor'").fetchone()[0]
    )
    assert state["pid"] == pid
    procs = [p for p in os.listdir("/proc") if p.isdigit()]
    servers = []
    for p in procs:
        try:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"jupyterlab" in cmd and any(str(fresh_agent.data_dir).encode() in c for c in cmd):
            servers.append(p)
    assert servers == [str(pid)]
    # The adopted workspace is still fully managed: stop works through the new agent.
    fresh_agent.ml("jupyter", "stop", "survivor")
    time.sleep(0.2)
    assert not Path(f"/proc/{pid}").exists() or b"Z" in Path(f"/proc/{pid}/stat").read_bytes().split(b")")[1][:3]


def test_workspace_that_died_while_agent_was_down_is_reported(fresh_agent: AgentProcess) -> None:
    fresh_agent.start()
    fresh_agent.ml_json("jupyter", "create", "casualty")
    fresh_agent.kill9()
    fresh_agent.cleanup_workspaces()  # its JupyterLab dies while no agent watches
    time.sleep(0.3)
    fresh_agent.start()
    info = fresh_agent.ml_json("jupyter", "info", "casualty")
    assert info["status"] == "failed" and info["message"]
    again = fresh_agent.ml_json("jupyter", "restart", "casualty")
    assert again["status"] == "running"


def test_stop_leaves_no_kernel_behind(agent: AgentProcess, unique_name: str) -> None:
    import sqlite3
    import urllib.request as ur

    from fetchml_agent import procs

    ws = agent.ml_json("jupyter", "create", unique_name)
    try:
        base, token = split_url(ws["url"])
        req = ur.Request(base + "api/kernels", data=b'{"name": "python3"}', method="POST",
                         headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
        ur.urlopen(req, timeout=30).read()
        state = json.loads(sqlite3.connect(agent.data_dir / "agent.db").execute(
            "SELECT runtime_state FROM workspaces WHERE name = ?", (unique_name,)).fetchone()[0])
        deadline = time.monotonic() + 30
        kernels: list[int] = []
        while time.monotonic() < deadline and not kernels:
            kernels = [p for p in procs.descendants(state["pid"])
                       if b"ipykernel" in Path(f"/proc/{p}/cmdline").read_bytes()]
            time.sleep(0.2)
        assert kernels, "the kernel did not start"
        started = {p: procs.start_time(p) for p in kernels}
        agent.ml("jupyter", "stop", unique_name)
        time.sleep(0.3)
        assert not [p for p, t in started.items() if procs.alive(p, t)]
    finally:
        agent.ml("jupyter", "delete", unique_name, "--yes", check=False)


def test_settings_the_local_runtime_cannot_honour_are_refused(agent: AgentProcess, tmp_path: Path, unique_name: str) -> None:
    """--image, and a Python or JupyterLab version other than the agent's, are refused at create
    with what this runtime runs instead, never silently ignored; nothing is left behind."""
    import platform

    cp = agent.ml("jupyter", "create", unique_name, "--image", "quay.io/jupyter/base-notebook:latest", check=False)
    assert cp.returncode == 2 and "the local runtime runs no images" in cp.stderr, cp.stderr
    for key, value, phrase in (("python_version", "2.7", f"the agent's Python {platform.python_version()}"),
                               ("jupyter_version", "1.0", "the agent's JupyterLab")):
        config = tmp_path / f"{key}.yaml"
        config.write_text(f"environment:\n  {key}: '{value}'\n")
        cp = agent.ml("jupyter", "create", unique_name, "--config", str(config), check=False)
        assert cp.returncode == 2 and f"environment.{key} {value}" in cp.stderr and phrase in cp.stderr, cp.stderr
    assert unique_name not in agent.ml("jupyter", "list").stdout


def test_limits_say_per_resource_what_is_enforced(agent: AgentProcess, unique_name: str) -> None:
    """``limits`` and ``info`` say for cpu, memory, gpu and disk whether each is enforced (the
    local runtime has no disk quota: it says so); CPUs beyond the host's are warned about at
    create and at scale, and said in ``limits``."""
    host = os.cpu_count() or 1
    cp = agent.ml("jupyter", "create", unique_name, "--cpu", str(host + 6))
    try:
        assert f"warning: {host + 6:g} CPUs asked, but this host has {host}" in cp.stderr, cp.stderr
        per = agent.ml_json("jupyter", "limits", unique_name)["limits"]["per_resource"]
        assert set(per) == {"cpu", "memory", "gpu", "disk"}
        assert per["disk"] == "no limit asked for" and per["gpu"] == "none asked for"
        assert per["memory"] == "no limit asked for" and f"this host has {host}" in per["cpu"]
        assert per["cpu"].startswith(("enforced (cgroup", "not enforced: "))
        table = agent.ml("jupyter", "limits", unique_name).stdout
        assert "disk" in table and "no limit asked for" in table and "enforced: True" not in table
        info = agent.ml("jupyter", "info", unique_name).stdout
        assert f"this host has {host}" in info and "limits enforced" not in info
        scaled = agent.ml("jupyter", "scale", unique_name, "--cpu", str(host + 1))
        assert f"warning: {host + 1:g} CPUs asked, but this host has {host}" in scaled.stderr
    finally:
        agent.ml("jupyter", "delete", unique_name, "--yes", check=False)


def test_no_secret_of_a_workspace_is_in_the_database_in_clear(fresh_agent: AgentProcess) -> None:
    """Jupyter's token, the index key and the password hash are sealed with a key outside agent.db;
    after a restart the agent opens them again (the server is adopted and still answers)."""
    with fresh_agent.running() as a:
        created = a.ml_json("jupyter", "create", "sealed", "--password", "pw-sealed-1")
        secrets = a.workspace_secrets("sealed")
        assert secrets["token"] and secrets["index_key"] and secrets["password_hash"]
        a.kill9()
        blob = b"".join(p.read_bytes() for p in a.data_dir.glob("agent.db*"))
        for value in secrets.values():
            assert value.encode() not in blob
        key = a.data_dir / "keys" / "secrets.key"
        assert key.stat().st_mode & 0o777 == 0o600
        a.start()
        assert a.ml_json("jupyter", "status", "sealed")["status"] == "running"
        assert "started" in api_status(created["url"])


def test_info_says_a_shared_user_workspace_is_not_isolated(agent: AgentProcess, unique_name: str) -> None:
    """local.isolation: none (the default): ml jupyter info and ml status say nothing keeps workspaces apart."""
    agent.ml_json("jupyter", "create", unique_name)
    try:
        iso = agent.ml_json("jupyter", "info", unique_name)["isolation"]
        assert iso["mode"] == "none" and iso["enforced"] is False and "agent's own OS user" in iso["reason"]
        assert "isolation: NONE" in agent.ml("status").stdout
    finally:
        agent.ml("jupyter", "delete", unique_name, "--yes", check=False)


def test_disk_size_is_enforced_where_the_host_can(agent: AgentProcess, unique_name: str) -> None:
    """--disk on the local runtime: as root, the workspace's directory is a filesystem of that
    size (writing past it fails), removed with the workspace; elsewhere limits say why not."""
    import errno

    ws = agent.ml_json("jupyter", "create", unique_name, "--disk", "64m")
    path = Path(ws["path"])
    image = agent.data_dir / "disks" / f"{ws['id']}.img"
    try:
        per = agent.ml_json("jupyter", "limits", unique_name)["limits"]["per_resource"]
        if os.geteuid() != 0:
            assert per["disk"].startswith("not enforced: a size limit needs the agent to run as root"), per
            return
        assert per["disk"] == "enforced: 64 MiB, a loop-mounted ext4 filesystem", per
        assert os.path.ismount(path) and image.is_file() and not (path / "lost+found").exists()
        with pytest.raises(OSError) as info:
            with open(path / "big.bin", "wb") as fh:
                for _ in range(80):
                    fh.write(b"\0" * 2**20)
                fh.flush()
                os.fsync(fh.fileno())
        assert info.value.errno == errno.ENOSPC
        (path / "big.bin").unlink()
        assert "loop-mounted ext4" in agent.ml("jupyter", "limits", unique_name).stdout
    finally:
        agent.ml("jupyter", "delete", unique_name, "--yes", check=False)
    assert not os.path.ismount(path) and not image.exists() and not path.exists()


def test_without_isolation_settings_the_local_runtime_serves_one_person(tmp_path: Path) -> None:
    """local.isolation unset: workspaces share the agent's OS user, so a second person's create is
    refused with a message naming the setting; the first person creates as many as they like."""
    from tests.conftest import free_port

    a = AgentProcess(tmp_path / "agent", free_port(), {"local": {"isolation": None}})
    with a.running():
        a.ml_json("jupyter", "create", "bobs", user="bob")
        refused = a.ml("jupyter", "create", "carols", user="carol", check=False)
        assert refused.returncode == 3, refused
        assert "local.isolation: users" in refused.stderr and "local.isolation: none" in refused.stderr
        a.ml_json("jupyter", "create", "bobs-too", user="bob")
        iso = a.ml_json("jupyter", "info", "bobs", user="bob")["isolation"]
        assert iso["mode"] == "single" and iso["enforced"] is False
        for name in ("bobs", "bobs-too"):
            a.ml("jupyter", "delete", name, "--yes", user="bob")
        a.ml_json("jupyter", "create", "carols", user="carol")  # nobody else's workspaces are left
        a.ml("jupyter", "delete", "carols", "--yes", user="carol")
