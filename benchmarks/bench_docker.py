"""Benchmarks of the docker runtime; prints numbers and ratios, asserts nothing.

    python3 benchmarks/bench_docker.py [--runs 3] [--many 20]

1. create -> JupyterLab ready (``GET /api/status`` 200): DockerRuntime.start (own network,
   firewall, volume, container) vs a bare ``docker run -d -p 127.0.0.1::8888`` of the same image,
   and a bare ``jupyter lab`` process on the host (what the local runtime runs). Target <= 1.15x
   the bare container.
2. Firewall setup per workspace: rendering and loading the whole table with 1..N workspaces
   (``nft -f`` in a private network namespace). Target <= 50 ms.
3. N workspaces running at once, listed with live status (discover + poll of each). Target
   <= 300 ms for 20.

Needs root, a running Docker engine, nft, and the workspace image (images/build.sh). Everything it
makes is named ``fmlbench-*`` and removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fetchml_agent.netpolicy import Firewall, NetPolicy, WorkspaceNet  # noqa: E402
from fetchml_agent.runtimes.base import WorkspaceSpec  # noqa: E402
from fetchml_agent.runtimes.docker import DEFAULT_IMAGE, DockerRuntime  # noqa: E402

PREFIX = "fmlbench"
TOKEN = "bench-token"


def wait_ready(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as http:
        while time.monotonic() < deadline:
            try:
                if (
                    http.get(url + "api/status", headers={"Authorization": f"token {TOKEN}"}).status_code
                    == 200
                ):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
    raise TimeoutError(url)


def bare_docker_run(image: str, name: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--name",
            name,
            "-p",
            "127.0.0.1::8888",
            "-e",
            f"JUPYTER_TOKEN={TOKEN}",
            image,
        ],
        check=True,
        capture_output=True,
    )
    port = subprocess.run(["docker", "port", name, "8888"], check=True, capture_output=True, text=True)
    wait_ready(f"http://{port.stdout.splitlines()[0].strip()}/")
    elapsed = time.perf_counter() - t0
    subprocess.run(["docker", "rm", "-f", name], check=True, capture_output=True)
    return elapsed


def bare_jupyter_lab(workdir: Path) -> float:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={port}",
            f"--IdentityProvider.token={TOKEN}",
            f"--ServerApp.root_dir={workdir}",
            "--allow-root",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}/")
        return time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def spec(i: int | str) -> WorkspaceSpec:
    return WorkspaceSpec(
        id=f"bench-{i}", name=f"ws{i}", owner="bench", path=Path("/nonexistent"), token=TOKEN
    )


async def _quiet(line: str) -> None:
    return None


async def runtime_create(rt: DockerRuntime, i: int) -> tuple[float, float]:
    """(create -> ready, network+firewall step) in seconds; the workspace is removed after."""
    marks: dict[str, float] = {}
    t0 = time.perf_counter()

    async def progress(line: str) -> None:
        marks[line] = time.perf_counter()

    started = await rt.start(spec(f"c{i}"), progress)
    elapsed = time.perf_counter() - t0
    await rt.stop(started.state, grace=2)
    await rt.remove(spec(f"c{i}"), started.state)
    return elapsed, marks["starting"] - marks["preparing network"]


def fmt(xs: list[float]) -> str:
    return f"median {statistics.median(xs) * 1000:7.1f} ms  (min {min(xs) * 1000:.1f}, max {max(xs) * 1000:.1f}, n={len(xs)})"


async def bench_firewall(n: int) -> list[float]:
    ns = f"{PREFIX}-fw"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        fw = Firewall(
            NetPolicy(table="fmlbench", index=("172.17.0.1", 9101)), ("ip", "netns", "exec", ns, "nft")
        )
        nets: list[WorkspaceNet] = []
        times = []
        for i in range(n):
            nets.append(WorkspaceNet(f"ws{i}", f"fmlb{i:04d}", f"10.213.{i}.0/28"))
            t0 = time.perf_counter()
            await fw.apply(nets)
            times.append(time.perf_counter() - t0)
        return times
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--many", type=int, default=20)
    ap.add_argument("--image", default=DEFAULT_IMAGE)
    args = ap.parse_args()
    if os.geteuid() != 0 or shutil.which("nft") is None:
        sys.exit("bench_docker needs root and nft")

    rt = DockerRuntime(image=args.image, prefix=PREFIX, table="fmlbench_docker", index=(None, 9101))
    await rt.open()
    try:
        print(f"== create -> JupyterLab ready ({args.runs} runs each, interleaved) ==")
        bare, ours, netfw, local = [], [], [], []
        with tempfile.TemporaryDirectory() as tmp:
            bare_jupyter_lab(Path(tmp))  # warm caches once
            bare_docker_run(args.image, f"{PREFIX}-bare-warm")
            for i in range(args.runs):
                bare.append(bare_docker_run(args.image, f"{PREFIX}-bare-{i}"))
                t, step = await runtime_create(rt, i)
                ours.append(t)
                netfw.append(step)
                local.append(bare_jupyter_lab(Path(tmp)))
        print(f"bare docker run        {fmt(bare)}")
        print(f"docker runtime start   {fmt(ours)}")
        print(f"  network+firewall step {fmt(netfw)}")
        print(f"bare jupyter lab (host){fmt(local)}")
        print(
            f"ratio docker runtime / bare docker run: {statistics.median(ours) / statistics.median(bare):.3f}  (target <= 1.15)"
        )
        print(
            f"ratio docker runtime / bare jupyter lab: {statistics.median(ours) / statistics.median(local):.3f}"
        )

        print(f"\n== firewall setup per workspace (whole table, 1..{args.many} workspaces) ==")
        fw_times = await bench_firewall(args.many)
        print(f"nft apply              {fmt(fw_times)}  (target <= 50 ms)")

        print(f"\n== {args.many} workspaces running at once, listed with live status ==")
        t0 = time.perf_counter()
        started = await asyncio.gather(*(rt.start(spec(i), _quiet) for i in range(args.many)))
        print(f"started {len(started)} in {time.perf_counter() - t0:.1f} s (concurrently, 2 cores)")
        listings = []
        for _ in range(5):
            t0 = time.perf_counter()
            found = await rt.discover()
            statuses = await asyncio.gather(*(rt.poll(state) for _, state in found))
            listings.append(time.perf_counter() - t0)
            assert len(found) == args.many and all(s.state == "running" for s in statuses)
        print(f"discover + poll each   {fmt(listings)}  (target <= 300 ms)")
    finally:
        client = rt.client
        label = {"label": [f"io.fetchml.instance={PREFIX}"]}
        for c in client.containers.list(all=True, filters=label):
            c.remove(force=True)
        for n in client.networks.list(filters=label):
            n.remove()
        for v in client.volumes.list(filters=label):
            v.remove(force=True)
        await rt.firewall.delete() if rt.firewall else None
        await rt.close()


if __name__ == "__main__":
    asyncio.run(main())
