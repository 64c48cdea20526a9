"""The docker runtime against the real engine and the real host firewall.

From inside real workspace containers: another workspace, a host service and a destination
beyond the host are refused by the network; the agent's index is reachable and installs work
through it; limits read back from the container's cgroup; adoption after the runtime object is
lost; delete leaves nothing behind; custom images are built only from allowed bases and packages.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from fetchml_agent.errors import InsufficientResources, InvalidState, PolicyDenied
from fetchml_agent.runtimes.base import Resources, WorkspaceSpec
from fetchml_agent.runtimes.docker import DockerRuntime

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PREFIX = f"fmltest-{os.getpid()}"  # as conftest.py names what it cleans up
TABLE = f"fmltest_{os.getpid()}"
WHEEL_NAME = "fmltest-hello"  # the one package the stand-in index serves
Server = Any

PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=4).close()
    print("open")
except ConnectionRefusedError:
    print("refused")
except socket.timeout:
    print("timeout")
except OSError as exc:
    print("error", exc)
"""


def spec(name: str, **kw: Any) -> WorkspaceSpec:
    return WorkspaceSpec(
        id=f"id-{name}",
        name=name,
        owner="tester",
        path=Path("/nonexistent"),
        token=f"token-{name}",
        **kw,
    )


async def _quiet(line: str) -> None:
    return None


@pytest.fixture(scope="module")
def two(runtime: DockerRuntime, run: Any, index: Server) -> dict[str, Any]:
    """Workspaces ``a`` (0.5 CPU, 256 MiB, index URL injected as the agent would) and ``b``."""
    a = spec(
        "a",
        resources=Resources(cpu=0.5, memory_mb=256),
        env={"PIP_INDEX_URL": f"http://127.0.0.1:{index.port}/simple/"},
    )
    b = spec("b")
    return {
        "a": (a, run(runtime.start(a, _quiet))),
        "b": (b, run(runtime.start(b, _quiet))),
    }


def sh(runtime: DockerRuntime, run: Any, ws: tuple[WorkspaceSpec, Any], script: str) -> tuple[int, str]:
    res = run(runtime.exec(ws[0], ws[1].state, ["sh", "-c", script], timeout=120))
    return res.exit_code, res.output.decode(errors="replace")


def probe(runtime: DockerRuntime, run: Any, ws: Any, host: str, port: int) -> str:
    res = run(runtime.exec(ws[0], ws[1].state, ["python", "-c", PROBE, host, str(port)]))
    return res.output.decode().strip()


def container_ip(client: Any, name: str) -> str:
    nets = client.containers.get(name).attrs["NetworkSettings"]["Networks"]
    return next(iter(nets.values()))["IPAddress"]


def gateway_of(client: Any, name: str) -> str:
    nets = client.containers.get(name).attrs["NetworkSettings"]["Networks"]
    return next(iter(nets.values()))["Gateway"]


def test_jupyter_answers_on_loopback_url(two: dict[str, Any]) -> None:
    for _name, (ws, started) in two.items():
        assert started.url.startswith("http://127.0.0.1:")
        req = urllib.request.Request(
            started.url + "api/status", headers={"Authorization": f"token {ws.token}"}
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 200 and "started" in json.loads(r.read())


def test_limits_user_and_privileges_read_back_inside(
    runtime: DockerRuntime, run: Any, two: dict[str, Any]
) -> None:
    code, out = sh(
        runtime,
        run,
        two["a"],
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"
        " /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us 2>/dev/null;"
        " id -u; grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status",
    )
    assert code == 0, out
    lines = out.split()
    assert lines[0] == str(256 * 2**20)  # memory.limit_in_bytes
    assert str(50000) in lines and str(100000) in lines  # 0.5 CPU: quota 50 ms per 100 ms
    assert "1000" in lines  # non-root
    assert "CapEff:" in out and out.split("CapEff:")[1].split()[0] == "0000000000000000"
    assert out.split("CapBnd:")[1].split()[0] == "0000000000000000"
    assert out.split("NoNewPrivs:")[1].split()[0] == "1"
    assert two["a"][1].limits["enforced"] is True


def test_token_is_not_inherited_by_kernels(runtime: DockerRuntime, run: Any, two: dict[str, Any]) -> None:
    # The server config pops JUPYTER_TOKEN out of the server's environment, so a kernel (which
    # inherits it) never sees the token.
    ws, started = two["a"]
    req = urllib.request.Request(
        started.url + "api/kernels", data=b"{}", method="POST", headers={"Authorization": f"token {ws.token}"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 201
    finder = (
        "import os, time\n"
        "time.sleep(1)\n"
        "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
        "    argv = open(f'/proc/{pid}/cmdline', 'rb').read().split(b'\\0')\n"
        "    if b'ipykernel_launcher' in argv:\n"
        "        env = open(f'/proc/{pid}/environ', 'rb').read().split(b'\\0')\n"
        "        print('kernel', sum(e.startswith((b'JUPYTER_TOKEN=', b'FETCHML_JUPYTER_PASSWORD')) for e in env))\n"
    )
    res = run(runtime.exec(ws, started.state, ["python", "-c", finder]))
    out = res.output.decode()
    assert "kernel" in out, out
    assert out.split()[-1] == "0", out


def test_other_workspace_is_refused(
    runtime: DockerRuntime, run: Any, two: dict[str, Any], docker_client: Any
) -> None:
    b_name = two["b"][1].state["container"]
    b_ip = container_ip(docker_client, b_name)
    b_port = two["b"][1].state["port"]
    # b's JupyterLab directly, and b's published port on a's gateway (the host)
    assert probe(runtime, run, two["a"], b_ip, 8888) == "refused"
    assert (
        probe(runtime, run, two["a"], gateway_of(docker_client, two["a"][1].state["container"]), b_port)
        == "refused"
    )
    # control: from the host, b's JupyterLab answers on its container address
    assert probe_host(b_ip, 8888) == "open"


def probe_host(host: str, port: int) -> str:
    out = subprocess.run(["python3", "-c", PROBE, host, str(port)], capture_output=True, text=True)
    return out.stdout.strip()


def test_host_service_is_refused(
    runtime: DockerRuntime, run: Any, two: dict[str, Any], host_service: Server
) -> None:
    assert probe_host(host_service.host, host_service.port) == "open"  # it does listen
    assert probe(runtime, run, two["a"], host_service.host, host_service.port) == "refused"
    assert probe(runtime, run, two["b"], host_service.host, host_service.port) == "refused"


def test_beyond_the_host_is_refused(
    runtime: DockerRuntime, run: Any, two: dict[str, Any], internet: Server
) -> None:
    assert probe_host(internet.host, internet.port) == "open"  # reachable from the host itself
    assert probe(runtime, run, two["a"], internet.host, internet.port) == "refused"


def test_index_is_reachable_and_installs(
    runtime: DockerRuntime, run: Any, two: dict[str, Any], index: Server
) -> None:
    assert probe(runtime, run, two["a"], index.host, index.port) == "open"
    code, out = sh(
        runtime,
        run,
        two["a"],
        f"pip install --retries 0 --timeout 10 {WHEEL_NAME} 2>&1 && python -c "
        "'import fmltest_hello; print(fmltest_hello.GREETING)'",
    )
    assert code == 0, out
    assert "hello from the index" in out


def test_pip_index_url_elsewhere_fails_because_of_the_network(
    runtime: DockerRuntime, run: Any, two: dict[str, Any], internet: Server
) -> None:
    # the same package is there, and the host can fetch it ...
    with urllib.request.urlopen(f"{internet.url}{WHEEL_NAME}/", timeout=5) as r:
        assert r.status == 200
    # ... but from the workspace, pip asked to go there is stopped by the network: its
    # connections are rejected (pip 23 words that as "no versions found") and counted.
    before = run(runtime.firewall.blocked_counts()).get("b", 0)
    code, out = sh(
        runtime,
        run,
        two["b"],
        f"pip install -vvv --no-cache-dir --retries 0 --timeout 5 --index-url {internet.url}"
        f" --trusted-host {internet.host} {WHEEL_NAME} 2>&1",
    )
    assert code != 0
    assert "Connection refused" in out, out
    assert run(runtime.firewall.blocked_counts()).get("b", 0) > before


def test_stats_of_a_running_workspace(runtime: DockerRuntime, run: Any, two: dict[str, Any]) -> None:
    stats = run(runtime.stats(two["a"][1].state))
    assert stats["memory_limit_mb"] == 256.0
    assert stats["memory_mb"] > 10
    assert stats["pids"] >= 2
    assert stats["cpu_percent"] >= 0


def test_adopted_after_the_runtime_is_lost(
    two: dict[str, Any], docker_client: Any, index: Server, run: Any
) -> None:
    fresh = DockerRuntime(
        image=two["a"][0].image or "fetchml/workspace:0.1.0",
        prefix=PREFIX,
        index=(index.host, index.port),
        table=TABLE,
    )
    run(fresh.open())
    try:
        found = dict(run(fresh.discover()))
        assert found["id-a"]["container_id"] == two["a"][1].state["container_id"]
        assert found["id-b"]["container_id"] == two["b"][1].state["container_id"]
        again = run(fresh.start(two["a"][0], _quiet))
        assert again.state["container_id"] == two["a"][1].state["container_id"]
        assert run(fresh.poll(again.state)).state == "running"
        label = {"label": [f"io.fetchml.instance={PREFIX}", "io.fetchml.workspace.id=id-a"]}
        assert len(docker_client.containers.list(all=True, filters=label)) == 1
    finally:
        run(fresh.close())


def test_stop_keeps_files_and_installed_packages(
    runtime: DockerRuntime, run: Any, two: dict[str, Any]
) -> None:
    ws, started = two["a"]
    assert sh(runtime, run, two["a"], "echo kept > /home/fetchml/work/note.txt")[0] == 0
    run(runtime.stop(started.state, grace=5))
    assert run(runtime.poll(started.state)).state == "stopped"
    with pytest.raises(InvalidState):
        run(runtime.exec(ws, started.state, ["true"]))
    restarted = run(runtime.start(ws, _quiet))
    two["a"] = (ws, restarted)
    code, out = sh(
        runtime, run, two["a"], "cat /home/fetchml/work/note.txt; python -c 'import fmltest_hello'"
    )
    assert code == 0 and "kept" in out, out


def test_fewer_gpus_than_asked_is_a_clear_error(runtime: DockerRuntime, run: Any, docker_client: Any) -> None:
    with pytest.raises(InsufficientResources, match="GPU"):
        run(runtime.start(spec("gpu", resources=Resources(gpu=runtime.gpu_capacity() + 1)), _quiet))
    assert not docker_client.networks.list(names=[f"{PREFIX}-gpu"])


def test_image_outside_the_allowed_list_is_refused(docker_client: Any, index: Server, run: Any) -> None:
    rt = DockerRuntime(
        prefix=PREFIX, allowed_images=["fetchml/workspace"], index=(index.host, index.port), table=TABLE
    )
    run(rt.open())
    try:
        with pytest.raises(PolicyDenied, match="allowed"):
            run(rt.start(spec("img", image="fetchml/debian:bookworm"), _quiet))
    finally:
        run(rt.close())


def test_remove_leaves_nothing(
    runtime: DockerRuntime, run: Any, two: dict[str, Any], docker_client: Any
) -> None:
    ws, started = two["b"]
    iface = docker_client.networks.get(f"{PREFIX}-b").attrs["Options"]["com.docker.network.bridge.name"]
    assert (
        iface
        in subprocess.run(["nft", "list", "table", "inet", TABLE], capture_output=True, text=True).stdout
    )
    run(runtime.stop(started.state))
    run(runtime.remove(ws, started.state))
    assert run(runtime.poll(started.state)).state == "missing"
    assert not docker_client.containers.list(all=True, filters={"name": f"{PREFIX}-b$"})
    assert not [v for v in docker_client.volumes.list() if v.name == f"{PREFIX}-b-work"]
    assert not docker_client.networks.list(names=[f"{PREFIX}-b"])
    rules = subprocess.run(["nft", "list", "table", "inet", TABLE], capture_output=True, text=True).stdout
    assert iface not in rules and "blocked_b" not in rules
    assert "blocked_a" in rules  # the other workspace keeps its rules
    run(runtime.remove(ws, None))  # idempotent


def test_build_refuses_a_blocked_package_before_building(
    runtime: DockerRuntime, run: Any, docker_client: Any
) -> None:
    def policy(specs: list[str]) -> None:
        if any(s.startswith("requests") for s in specs):
            raise PolicyDenied("package requests is blocked")

    lines: list[str] = []

    async def progress(line: str) -> None:
        lines.append(line)

    with pytest.raises(PolicyDenied, match="requests"):
        run(
            runtime.build_image(
                f"{PREFIX}/custom",
                base=runtime.image,
                packages=["numpy", "requests"],
                check_packages=policy,
                allowed_bases=[runtime.image],
                progress=progress,
            )
        )
    with pytest.raises(PolicyDenied, match="base image"):
        run(
            runtime.build_image(
                f"{PREFIX}/custom",
                base="fetchml/debian:bookworm",
                packages=["numpy"],
                check_packages=policy,
                allowed_bases=["fetchml/workspace"],
                progress=progress,
            )
        )
    assert lines == []  # nothing started
    assert not docker_client.images.list(name=f"{PREFIX}/custom")


def test_build_then_run_a_custom_image(
    runtime: DockerRuntime, run: Any, docker_client: Any, index: Server
) -> None:
    checked: list[list[str]] = []
    lines: list[str] = []

    async def policy(specs: list[str]) -> None:
        checked.append(specs)

    async def progress(line: str) -> None:
        lines.append(line)

    tag = run(
        runtime.build_image(
            f"{PREFIX}/custom",
            base=runtime.image,
            packages=[WHEEL_NAME],
            check_packages=policy,
            allowed_bases=["fetchml/workspace"],
            progress=progress,
            gpu_support=True,
            index_url=index.url,
        )
    )
    try:
        assert checked == [[WHEEL_NAME]]
        assert any("Successfully installed" in line for line in lines), lines
        env = docker_client.images.get(tag).attrs["Config"]["Env"]
        assert "NVIDIA_VISIBLE_DEVICES=all" in env
        names = {name for name, _version in run(runtime.list_distributions(tag))}
        # installed into the kernel environment, where the scan looks (JupyterLab is the server's)
        assert {WHEEL_NAME, "ipykernel"} <= names and "jupyterlab" not in names
        ws = spec("custom", image=tag)
        started = run(runtime.start(ws, _quiet))
        code, out = sh(
            runtime, run, (ws, started), "python -c 'import fmltest_hello; print(fmltest_hello.GREETING)'"
        )
        assert code == 0 and "hello" in out
        run(runtime.stop(started.state))
        run(runtime.remove(ws, started.state))
    finally:
        docker_client.images.remove(tag, force=True)


def test_commands_get_no_jupyter_secrets(runtime: DockerRuntime, run: Any, two: dict[str, Any]) -> None:
    _, out = sh(runtime, run, two["a"], "env | grep -c -e JUPYTER_TOKEN -e PASSWORD_HASH || true")
    assert out.strip() == "0", out


def test_assigned_gpus_beyond_the_host_are_refused(runtime: DockerRuntime, run: Any) -> None:
    ws = spec("gpuids", resources=Resources(gpu=1), gpu_ids=(runtime.gpu_capacity() + 7,))
    with pytest.raises(InsufficientResources, match="GPU"):
        run(runtime.start(ws, _quiet))


def test_hard_reset_discards_packages_and_keeps_files(
    runtime: DockerRuntime, run: Any, index: Server
) -> None:
    ws = spec("reset", env={"PIP_INDEX_URL": f"http://127.0.0.1:{index.port}/simple/"})
    started = run(runtime.start(ws, _quiet))
    code, out = sh(runtime, run, (ws, started), f"pip install -q {WHEEL_NAME} && echo kept > note.txt")
    assert code == 0, out
    run(runtime.stop(started.state))
    run(runtime.reset_environment(ws, None))
    again = run(runtime.start(ws, _quiet))
    assert again.state["container_id"] != started.state["container_id"]
    code, out = sh(
        runtime, run, (ws, again), "cat note.txt; python -c 'import fmltest_hello' 2>&1; echo rc=$?"
    )
    assert "kept" in out and "rc=1" in out, out
    run(runtime.stop(again.state))
    run(runtime.remove(ws, again.state))
