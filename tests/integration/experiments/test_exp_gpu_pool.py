"""The worker pool's GPU rule on a host inventory of two GPUs (an in-process agent whose local
runtime is told the GPUs; runs are real scripts in the workspace's env that record what they got)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from fetchml_agent.agent import Agent
from fetchml_agent.auth import api_key_verifier
from fetchml_agent.config import parse_config
from fetchml_agent.errors import InsufficientResources
from fetchml_agent.runtimes.local import LocalRuntime
from fetchml_agent.service import Call
from fetchml_agent.service.experiments import executor_of, queue_run, run_info
from fetchml_agent.store.workspaces import Workspace, insert_workspace

SCRIPT = """import os, time
from fetchml import log_metric, outputs_dir
(outputs_dir() / 'gpus.txt').write_text(os.environ.get('CUDA_VISIBLE_DEVICES', 'unset'))
log_metric('started', time.time())
time.sleep(2)
log_metric('ended', time.time())
"""


async def _scenario(tmp_path: Path) -> dict[str, dict]:
    config = parse_config({"data_dir": str(tmp_path / "data"), "experiments": {"cpu_workers": 1, "warm_runner_idle_s": 5},
                           "users": [{"name": "admin", "role": "admin", "api_key_verifier": api_key_verifier("k")}]})
    gpus = [{"index": 0, "name": "test GPU 0"}, {"index": 1, "name": "test GPU 1"}]
    agent = Agent(config, runtime=LocalRuntime(config.data_dir, gpus=gpus, use_cgroups=False))
    await agent.start()
    try:
        root = tmp_path / "ws"
        root.mkdir()
        (root / "train.py").write_text(SCRIPT)
        now = time.time()
        ws = Workspace(id="ws-gpu", name="gpu-ws", owner="admin", path=str(root), runtime="local", token="t",
                       index_key="k", created_at=now, updated_at=now, status="stopped", resources={"gpu": 1})
        await agent.store.run(insert_workspace, ws, agent.store.sealer)
        agent.workspaces[ws.name] = ws
        call = Call(agent.users["admin"], "ws")
        with pytest.raises(InsufficientResources, match="asks for 3 GPUs, but this host has 2"):
            await queue_run(agent, call, {"workspace": "gpu-ws", "script": "train.py", "experiment": "g",
                                          "config": {"resources": {"gpu": 3}}, "parameters": {}})
        ids = {}
        for name, gpu in (("a", 1), ("b", 1), ("c", 1), ("cpu", 0), ("both", 2)):
            result = await queue_run(agent, call, {"workspace": "gpu-ws", "script": "train.py", "experiment": "g",
                                                   "config": {"resources": {"gpu": gpu}}, "parameters": {}})
            ids[name] = result.data["id"]
        ex = executor_of(agent)
        peak_gpu_runs = 0
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            running = list(ex.active.values())
            peak_gpu_runs = max(peak_gpu_runs, sum(1 for r in running if r.gpus))
            used = [i for r in running for i in r.gpu_indexes]
            assert len(used) == len(set(used)) and set(used) <= {0, 1}  # one run per GPU, never more than the host has
            docs = {k: (await run_info(agent, call, {"run_id": v})).data for k, v in ids.items()}
            if all(d["status"] in ("succeeded", "failed") for d in docs.values()):
                break
            await asyncio.sleep(0.1)
        assert peak_gpu_runs == 2
        return docs
    finally:
        await agent.close()


def test_gpu_runs_take_gpus_exclusively(tmp_path: Path) -> None:
    docs = asyncio.run(_scenario(tmp_path))
    assert all(d["status"] == "succeeded" for d in docs.values()), {k: d["message"] for k, d in docs.items()}

    def seen(name: str) -> str:
        return (Path(docs[name]["run_dir"]) / "work" / "outputs" / "gpus.txt").read_text()

    def span(name: str) -> tuple[float, float]:
        values = {m["name"]: m["value"] for m in docs[name]["metrics"]}
        return values["started"], values["ended"]

    assert {seen("a"), seen("b")} == {"0", "1"} and seen("c") in ("0", "1")
    assert seen("cpu") == "" and sorted(seen("both").split(",")) == ["0", "1"]
    # c waited for a GPU; "both" waited for two free GPUs and ran alone among GPU runs.
    assert span("c")[0] >= min(span("a")[1], span("b")[1]) - 0.5
    both = span("both")
    for other in ("a", "b", "c"):
        assert both[0] >= span(other)[1] - 0.5 or both[1] <= span(other)[0] + 0.5
