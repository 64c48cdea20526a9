"""Benchmarks of the nomad runtime (prints numbers; asserts nothing).

1. Rendering throughput of the jupyter-workspace template (validate + render + parse), jobs/s.
   Target: >= 2,000 jobs/s.
2. Agent-side overhead per workspace create: render + validate + write the secret Variable +
   register + follow the evaluation and the allocation with blocking queries, until the
   allocation runs. Nomad's placement is taken out by a Nomad double with instant placement,
   running in a separate process so that its work is not counted; both the wall time per
   create and the agent process's CPU time per create are shown. Target: <= 10 ms.
   (Jupyter's own start-up, which the runtime waits for afterwards, is not agent overhead.)
3. 500 workspaces listed with live status (``poll_many``: two Nomad requests), and ``discover``
   over the same 500. Target: <= 300 ms.

Run: ``PYTHONPATH=. python3 benchmarks/bench_nomad.py [--workspaces 500] [--creates 200]``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fetchml_agent.nomad.render import (
    JobRenderer,
    WorkspaceJobRequest,
    jupyter_secret_items,
    secret_variable_path,
)
from fetchml_agent.nomad.schema import NomadSettings
from fetchml_agent.runtimes.base import Resources
from fetchml_agent.runtimes.nomad import NomadRuntime

IMAGE = "fetchml/idle:bench"


def _serve_double(port_queue: Any, stop: Any) -> None:
    from tests.nomad_double import DoubleImage, DoubleNode, NomadDouble

    node = DoubleNode("bench-1", cores=4096, memory_mb=10_000_000, disk_mb=100_000_000)
    with NomadDouble(nodes=[node], images=[DoubleImage(IMAGE, kind="idle")]) as double:

        def instant() -> None:
            double.cluster.placement_delay = 0.0
            double.cluster.client_delay = 0.0

        double.call(instant)
        port_queue.put(double.address)
        stop.wait()


def bench_render(n: int) -> None:
    settings = NomadSettings.from_config(
        {
            "address": "http://127.0.0.1:4646",
            "allowed_images": ["quay.io/jupyter/*"],
            "gpu": {
                "constraints": [{"attribute": "${device.attr.memory}", "operator": ">=", "value": "40 GiB"}]
            },
        }
    )
    renderer = JobRenderer(settings)
    requests_ = [
        WorkspaceJobRequest(
            name=f"ws{i}",
            owner="alice",
            image="quay.io/jupyter/scipy-notebook:latest",
            resources=Resources(cpu=4, memory_mb=8192, gpu=1),
            env={"PIP_INDEX_URL": "http://a/simple"},
        )
        for i in range(n)
    ]
    for r in requests_[:50]:
        renderer.workspace(r)
    t0 = time.perf_counter()
    for r in requests_:
        renderer.workspace(r)
    elapsed = time.perf_counter() - t0
    print(
        f"render jupyter-workspace: {n / elapsed:,.0f} jobs/s ({elapsed / n * 1e6:.0f} us/job)  [target >= 2,000 jobs/s]"
    )


async def bench_create(address: str, n: int) -> None:
    settings = {
        "address": address,
        "allowed_images": ["fetchml/*"],
        "default_image": IMAGE,
        "job_prefix": "bc-",
    }
    rt = NomadRuntime(settings)
    await rt.open()

    async def quiet(_line: str) -> None:
        return None

    async def one(i: int) -> None:
        job = rt.renderer.workspace(
            WorkspaceJobRequest(name=f"c{i}", resources=Resources(cpu=0.1, memory_mb=64))
        )
        token = secrets.token_hex(24)
        rt._assert_no_secret(job, token)
        job_id = job["Job"]["ID"]
        await rt.client.put_variable(secret_variable_path(job_id), jupyter_secret_items(token))
        eval_id, index = await rt._register(job)
        await rt._wait_evaluation(eval_id, time.monotonic() + 30, job_id, index)
        await rt._follow_allocation(job_id, eval_id, "jupyter", quiet, job_id)

    for i in range(5):  # warm up connections and code paths
        await one(10_000 + i)
    walls = []
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    for i in range(n):
        s = time.perf_counter()
        await one(i)
        walls.append(time.perf_counter() - s)
    total = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    print(f"create overhead (render+validate+variable+register+follow to running, instant placement), n={n}:")
    print(
        f"  wall per create: median {statistics.median(walls) * 1e3:.2f} ms, "
        f"p95 {sorted(walls)[int(0.95 * n) - 1] * 1e3:.2f} ms, mean {total / n * 1e3:.2f} ms"
    )
    print(f"  agent CPU per create: {cpu / n * 1e3:.2f} ms  [target <= 10 ms]")
    await rt.close()


async def bench_list(address: str, n: int) -> None:
    settings = {
        "address": address,
        "allowed_images": ["fetchml/*"],
        "default_image": IMAGE,
        "job_prefix": "bl-",
    }
    rt = NomadRuntime(settings)
    await rt.open()
    renderer = JobRenderer(NomadSettings.from_config(settings))
    sem = asyncio.Semaphore(16)

    async def submit(i: int) -> None:
        async with sem:
            job = renderer.workspace(
                WorkspaceJobRequest(name=f"l{i}", resources=Resources(cpu=0.1, memory_mb=64))
            )
            await rt.client.put_variable(
                secret_variable_path(job["Job"]["ID"]), jupyter_secret_items("t" * 32)
            )
            await rt.client.register_job(job)

    t0 = time.perf_counter()
    await asyncio.gather(*(submit(i) for i in range(n)))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        allocs, _ = await rt.client.list_allocations(filter_='JobID matches "^bl-ws-"', task_states=False)
        if sum(1 for a in allocs if a["ClientStatus"] == "running") >= n:
            break
        await asyncio.sleep(0.2)
    print(f"{n} workspaces submitted and running in {time.perf_counter() - t0:.1f} s (setup, not a target)")
    found = await rt.discover()
    states = [state for _, state in found]
    timings = []
    for _ in range(5):
        s = time.perf_counter()
        statuses = await rt.poll_many(states)
        timings.append(time.perf_counter() - s)
    running = sum(1 for st in statuses if st.state == "running")
    d_timings = []
    for _ in range(3):
        s = time.perf_counter()
        await rt.discover()
        d_timings.append(time.perf_counter() - s)
    print(
        f"list {n} workspaces with live status (poll_many): median {statistics.median(timings) * 1e3:.0f} ms, "
        f"best {min(timings) * 1e3:.0f} ms, {running}/{n} running  [target <= 300 ms]"
    )
    print(
        f"discover {n} workspaces (adoption after restart): median {statistics.median(d_timings) * 1e3:.0f} ms"
    )
    await rt.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--renders", type=int, default=5000)
    parser.add_argument("--creates", type=int, default=200)
    parser.add_argument("--workspaces", type=int, default=500)
    args = parser.parse_args()
    bench_render(args.renders)
    ctx = multiprocessing.get_context("spawn")
    port_queue, stop = ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=_serve_double, args=(port_queue, stop), daemon=True)
    proc.start()
    try:
        address = port_queue.get(timeout=60)
        asyncio.run(bench_create(address, args.creates))
        asyncio.run(bench_list(address, args.workspaces))
    finally:
        stop.set()
        proc.join(30)


if __name__ == "__main__":
    main()
