"""Rendering the Nomad job templates: golden files, validation, and what Nomad would accept.

A template change shows up as a diff against tests/golden/nomad/*.json. After reviewing the
change, regenerate the files with ``FETCHML_UPDATE_GOLDEN=1 pytest tests/unit/nomad``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from fetchml_agent.errors import InvalidArgument, PolicyDenied
from fetchml_agent.nomad.render import (
    AgentJobRequest,
    JobRenderer,
    WorkspaceJobRequest,
    jupyter_secret_items,
)
from fetchml_agent.nomad.schema import NomadSettings
from fetchml_agent.runtimes.base import Resources, RunSpec
from tests.nomad_double import jobspec

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "nomad"

BASE = {
    "address": "https://nomad.example.internal:4646",
    "namespace": "ml",
    "region": "eu",
    "datacenters": ["dc1", "dc2"],
    "node_pool": "gpu",
    "allowed_images": ["quay.io/jupyter/*", "registry.example.internal/fetchml/*"],
    "allowed_host_volumes": ["fetchml-ws-*", "fetchml-snapshots"],
    "allowed_csi_volumes": ["ws-*"],
    "workspace_volume": {"type": "host", "source": "fetchml-ws-{name}"},
    "gpu": {
        "constraints": [{"attribute": "${device.attr.memory}", "operator": ">=", "value": "40 GiB"}],
        "affinities": [{"attribute": "${device.model}", "value": "NVIDIA H100 80GB HBM3", "weight": 50}],
    },
}


def renderer(**overrides: Any) -> JobRenderer:
    return JobRenderer(NomadSettings.from_config({**BASE, **overrides}))


def check_golden(name: str, job: dict[str, Any]) -> None:
    text = json.dumps(job, indent=2, sort_keys=False) + "\n"
    path = GOLDEN / f"{name}.json"
    if os.environ.get("FETCHML_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"missing golden file {path}; run with FETCHML_UPDATE_GOLDEN=1 after review"
    assert text == path.read_text(), f"{name} differs from its golden file {path}"


def nomad_accepts(job: dict[str, Any]) -> None:
    """Decode as Nomad's API structs (stricter: unknown fields fail) and run its validation."""
    body = jobspec.decode(job, "JobRegisterRequest")
    canonical = jobspec.canonicalize_job(body["Job"], "default", "global")
    assert jobspec.validate_job(canonical) == []


def gpu_workspace() -> dict[str, Any]:
    return renderer().workspace(
        WorkspaceJobRequest(
            name="ws1",
            workspace_id="7f3c",
            owner="alice",
            image="quay.io/jupyter/scipy-notebook:latest",
            resources=Resources(cpu=4, memory_mb=8192, gpu=1, disk_mb=20480),
            memory_max_mb=12288,
            env={"PIP_INDEX_URL": "http://agent.internal:8765/pypi/simple"},
            labels={"team": "vision"},
        )
    )


def test_workspace_golden_gpu() -> None:
    job = gpu_workspace()
    check_golden("jupyter-workspace-gpu", job)
    nomad_accepts(job)


def test_workspace_golden_cpu_mhz_csi() -> None:
    job = renderer(
        cpu_mode="mhz",
        mhz_per_core=2500,
        workspace_volume={"type": "csi", "source": "ws-{name}", "access_mode": "single-node-writer"},
        region=None,
    ).workspace(
        WorkspaceJobRequest(
            name="small",
            image="quay.io/jupyter/base-notebook:latest",
            resources=Resources(cpu=0.5, memory_mb=1024),
        )
    )
    check_golden("jupyter-workspace-cpu-csi", job)
    nomad_accepts(job)


def test_experiment_run_golden() -> None:
    job = renderer().run(
        RunSpec(
            run_id="r42",
            workspace="ws1",
            notebook="notebooks/train.ipynb",
            owner="alice",
            experiment_id="exp-7",
            image="registry.example.internal/fetchml/workspace:1.2",
            snapshot_volume="fetchml-snapshots",
            snapshot_path=".fetchml/runs/r42",
            parameters={"lr": 0.01, "name": "{{ not a template }}"},
            timeout=1800,
            retries=2,
            resources=Resources(cpu=2, memory_mb=4096, gpu=1),
        )
    )
    check_golden("experiment-run", job)
    nomad_accepts(job)


def _small_run() -> RunSpec:
    return RunSpec(run_id="r43", workspace="ws1", notebook="train.ipynb", owner="alice", experiment_id="exp-7",
                   image="registry.example.internal/fetchml/workspace:1.2", snapshot_volume="fetchml-snapshots",
                   snapshot_path="runs/r43", resources=Resources(cpu=1, memory_mb=1024))


def test_a_run_mounts_the_environment_cache_read_write_where_configured() -> None:
    cache = {"type": "host", "source": "fetchml-env-cache"}
    job = renderer(env_cache_volume=cache,
                   allowed_host_volumes=[*BASE["allowed_host_volumes"], "fetchml-env-cache"]).run(_small_run())
    group = job["Job"]["TaskGroups"][0]
    task = group["Tasks"][0]
    assert group["Volumes"]["env-cache"] == {"Name": "env-cache", "Type": "host", "Source": "fetchml-env-cache",
                                             "ReadOnly": False}
    assert group["Volumes"]["snapshot"]["ReadOnly"] is True
    assert {"Volume": "env-cache", "Destination": "/fetchml/env-cache", "ReadOnly": False} in task["VolumeMounts"]
    assert task["Env"]["FETCHML_ENV_CACHE"] == "/fetchml/env-cache"
    assert "environment_step.py" in task["Config"]["args"][1]  # the launcher's environment step
    nomad_accepts(job)
    # without one, runs install into their own task directory (no cache), and the volume obeys the policy
    plain = renderer().run(_small_run())["Job"]["TaskGroups"][0]
    assert "env-cache" not in plain["Volumes"] and "FETCHML_ENV_CACHE" not in plain["Tasks"][0]["Env"]
    with pytest.raises(PolicyDenied, match="fetchml-env-cache"):
        renderer(env_cache_volume=cache).run(_small_run())


def test_the_shared_data_volume_is_read_write_in_workspaces_and_read_only_in_runs() -> None:
    """Data larger than a run's snapshot takes (experiments.run_data_max_mb) is read from nomad.data_volume."""
    r = renderer(data_volume={"type": "csi", "source": "ws-shared-data"}, data_mount="/data",
                 env_cache_volume={"type": "host", "source": "fetchml-snapshots"})
    ws = r.workspace(WorkspaceJobRequest(name="lab", image="quay.io/jupyter/base-notebook:latest"))["Job"]
    group, task = ws["TaskGroups"][0], ws["TaskGroups"][0]["Tasks"][0]
    assert group["Volumes"]["data"]["ReadOnly"] is False and group["Volumes"]["data"]["AccessMode"] == "multi-node-multi-writer"
    assert "workspace" in group["Volumes"]  # the workspace's own volume stays
    assert {"Volume": "data", "Destination": "/data", "ReadOnly": False} in task["VolumeMounts"]
    nomad_accepts({"Job": ws})
    run = r.run(_small_run())["Job"]
    group, task = run["TaskGroups"][0], run["TaskGroups"][0]["Tasks"][0]
    assert group["Volumes"]["data"]["ReadOnly"] is True and group["Volumes"]["data"]["AccessMode"] == "multi-node-reader-only"
    assert [m["Volume"] for m in task["VolumeMounts"]] == ["snapshot", "env-cache", "data"]
    assert {"Volume": "data", "Destination": "/data", "ReadOnly": True} in task["VolumeMounts"]
    nomad_accepts({"Job": run})
    with pytest.raises(PolicyDenied, match="elsewhere"):
        renderer(data_volume={"type": "csi", "source": "elsewhere"}).run(_small_run())


def test_agent_golden() -> None:
    job = renderer().agent(
        AgentJobRequest(image="registry.example.internal/fetchml/agent:0.1", data_volume="fetchml-ws-agent")
    )
    check_golden("fetchml-agent", job)
    nomad_accepts(job)


def test_durations_are_nanoseconds_and_meta_are_strings() -> None:
    job = gpu_workspace()["Job"]
    tg = job["TaskGroups"][0]
    assert tg["RestartPolicy"]["Delay"] == 10_000_000_000
    assert tg["Services"][0]["Checks"][0]["Interval"] == 10_000_000_000
    assert tg["Tasks"][0]["KillTimeout"] == 30_000_000_000
    assert all(isinstance(v, str) for v in job["Meta"].values())


def test_workspace_shape() -> None:
    job = gpu_workspace()["Job"]
    tg = job["TaskGroups"][0]
    task = tg["Tasks"][0]
    assert job["ID"] == "fetchml-ws-ws1" and job["Type"] == "service"
    assert job["Namespace"] == "ml" and job["Region"] == "eu" and job["NodePool"] == "gpu"
    assert job["Meta"] == {
        "fetchml_kind": "workspace",
        "fetchml_workspace": "ws1",
        "fetchml_workspace_id": "7f3c",
        "fetchml_owner": "alice",
        "fetchml_label_team": "vision",
    }
    assert tg["Networks"] == [{"Mode": "bridge", "DynamicPorts": [{"Label": "http", "To": 8888}]}]
    assert "network_mode" not in task["Config"] and "ports" not in task["Config"]
    assert tg["Volumes"]["workspace"]["Source"] == "fetchml-ws-ws1"
    assert task["VolumeMounts"][0]["Destination"] == "/home/jovyan/work"
    assert task["Resources"]["Cores"] == 4 and "CPU" not in task["Resources"]
    assert task["Resources"]["Devices"][0]["Constraints"] == [
        {"LTarget": "${device.attr.memory}", "Operand": ">=", "RTarget": "40 GiB"}
    ]
    assert task["Env"]["JUPYTER_CONFIG_PATH"] == "${NOMAD_SECRETS_DIR}"
    tmpl = task["Templates"][0]
    assert tmpl["DestPath"] == "secrets/jupyter_server_config.json" and tmpl["Perms"] == "0400"
    assert (
        tmpl["EmbeddedTmpl"]
        == '[[ with nomadVar "nomad/jobs/fetchml-ws-ws1" ]][[ .jupyter_config ]][[ end ]]'
    )
    assert tg["Services"][0]["Provider"] == "nomad" and tg["Services"][0]["Checks"][0]["Path"] == "/api"


def test_run_parameters_are_copied_verbatim() -> None:
    job = renderer().run(
        RunSpec(
            run_id="r1",
            workspace="ws1",
            notebook="a.ipynb",
            image="quay.io/jupyter/base-notebook:1",
            parameters={"t": "[[ x ]] {{ y }}"},
        )
    )
    tmpl = job["Job"]["TaskGroups"][0]["Tasks"][0]["Templates"][0]
    assert json.loads(tmpl["EmbeddedTmpl"]) == {"t": "[[ x ]] {{ y }}"}
    assert tmpl["LeftDelim"] not in tmpl["EmbeddedTmpl"]
    args = job["Job"]["TaskGroups"][0]["Tasks"][0]["Config"]["args"]
    assert args[2:6] == ["fetchml-run", ".", "papermill", "a.ipynb"] and "--execution-timeout" in args
    assert not any("${" in line for line in args[1].splitlines())  # Nomad would interpolate it


def test_a_run_passes_the_kernel_and_language_the_agent_chose() -> None:
    """A notebook that names no kernel runs on the default one (the agent chose it at queue time):
    papermill gets it as -k and --language; a notebook's own kernel adds neither."""
    spec = RunSpec(run_id="r1", workspace="ws1", notebook="a.ipynb", image="quay.io/jupyter/base-notebook:1")
    plain = renderer().run(spec)["Job"]["TaskGroups"][0]["Tasks"][0]["Config"]["args"]
    assert "-k" not in plain and "--language" not in plain
    spec = RunSpec(run_id="r1", workspace="ws1", notebook="a.ipynb", image="quay.io/jupyter/base-notebook:1",
                   kernel="python3", language="python")
    args = renderer().run(spec)["Job"]["TaskGroups"][0]["Tasks"][0]["Config"]["args"]
    assert args[args.index("-k") + 1] == "python3" and args[args.index("--language") + 1] == "python"


def test_script_runs_with_python_and_reads_parameters_from_a_file() -> None:
    job = renderer().run(
        RunSpec(run_id="r2", workspace="ws1", notebook="src/train.py", kind="script",
                image="quay.io/jupyter/base-notebook:1", parameters={"lr": 0.1})
    )
    task = job["Job"]["TaskGroups"][0]["Tasks"][0]
    assert task["Config"]["args"][4:] == ["python3", "src/train.py"]
    assert task["Env"]["FETCHML_PARAMETERS_FILE"] == "${NOMAD_TASK_DIR}/parameters.json"
    with pytest.raises(InvalidArgument, match=r"not a \.py file"):
        renderer().run(RunSpec(run_id="r3", workspace="ws1", notebook="a.ipynb", kind="script"))


def test_no_secret_is_an_input_and_secret_items_are_complete() -> None:
    items = jupyter_secret_items("tok" * 8, "argon2:$argon2id$v=19$m=10240,t=10,p=8$abc$def")
    config = json.loads(items["jupyter_config"])
    assert config["IdentityProvider"]["token"] == "tok" * 8
    assert config["PasswordIdentityProvider"]["hashed_password"].startswith("argon2:")
    assert json.loads(jupyter_secret_items("t" * 10)["jupyter_config"]) == {
        "IdentityProvider": {"token": "t" * 10}
    }
    with pytest.raises(InvalidArgument):
        jupyter_secret_items("")


@pytest.mark.parametrize(
    "request_kwargs, error, words",
    [
        ({"image": "docker.io/library/ubuntu:22.04"}, PolicyDenied, "nomad.allowed_images"),
        ({"volume_source": "root-fs"}, PolicyDenied, "nomad.allowed_host_volumes"),
        ({"resources": Resources(cpu=65)}, InvalidArgument, "nomad.max.cpu"),
        ({"resources": Resources(memory_mb=600000)}, InvalidArgument, "nomad.max.memory_mb"),
        ({"resources": Resources(gpu=9)}, InvalidArgument, "nomad.max.gpu"),
        ({"resources": Resources(disk_mb=2_000_000)}, InvalidArgument, "nomad.max.disk_mb"),
        ({"resources": Resources(cpu=-1)}, InvalidArgument, "positive"),
        ({"memory_max_mb": 10, "resources": Resources(memory_mb=100)}, InvalidArgument, "below"),
        ({"name": "Bad Name"}, InvalidArgument, "workspace name"),
        ({"name": "x" * 70}, InvalidArgument, "workspace name"),
        ({"env": {"BAD-KEY": "1"}}, InvalidArgument, "environment variable"),
        ({"env": {"JUPYTER_CONFIG_PATH": "/tmp"}}, InvalidArgument, "set by the agent"),
        ({"labels": {"a": "b\n"}}, InvalidArgument, "label"),
        ({"image": "bad image"}, InvalidArgument, "invalid image"),
    ],
)
def test_workspace_refusals(request_kwargs: dict[str, Any], error: type, words: str) -> None:
    kwargs = {"name": "ws1", "image": "quay.io/jupyter/base-notebook:latest", **request_kwargs}
    with pytest.raises(error) as err:
        renderer().workspace(WorkspaceJobRequest(**kwargs))
    assert words in str(err.value)


@pytest.mark.parametrize(
    "spec_kwargs, words",
    [
        ({"run_id": "../x"}, "invalid run id"),
        ({"notebook": "../secret.ipynb"}, "relative path"),
        ({"notebook": "train.py"}, ".ipynb"),
        ({"snapshot_path": "/etc"}, "relative path"),
        ({"retries": 11}, "retries"),
        ({"timeout": 0}, "timeout"),
        ({"parameters": {"x": object()}}, "not JSON"),
        ({"parameters": {"x": "[[fetchml-literal:"}}, "reserved"),
        ({"snapshot_volume": "other"}, "not allowed"),
    ],
)
def test_run_refusals(spec_kwargs: dict[str, Any], words: str) -> None:
    kwargs = {
        "run_id": "r1",
        "workspace": "ws1",
        "notebook": "train.ipynb",
        "image": "quay.io/jupyter/base-notebook:latest",
        **spec_kwargs,
    }
    with pytest.raises((InvalidArgument, PolicyDenied)) as err:
        renderer().run(RunSpec(**kwargs))
    assert words in str(err.value)


def test_defaults_apply_when_nothing_is_asked() -> None:
    job = renderer(defaults={"cpu": 2, "memory_mb": 3000, "disk_mb": 5000}).workspace(
        WorkspaceJobRequest(name="plain", image="quay.io/jupyter/base-notebook:latest")
    )["Job"]
    tg = job["TaskGroups"][0]
    assert tg["Tasks"][0]["Resources"] == {"Cores": 2, "MemoryMB": 3000}
    assert tg["EphemeralDisk"]["SizeMB"] == 5000
    assert job["Constraints"] == [{"LTarget": "${attr.kernel.name}", "Operand": "=", "RTarget": "linux"}]


def test_render_throughput_is_reasonable() -> None:
    import time

    r = renderer()
    req = WorkspaceJobRequest(
        name="ws1", image="quay.io/jupyter/base-notebook:latest", resources=Resources(cpu=4, gpu=1)
    )
    t0 = time.perf_counter()
    for _ in range(200):
        r.workspace(req)
    per_second = 200 / (time.perf_counter() - t0)
    assert per_second > 500, f"rendering is far slower than the 2,000 jobs/s target: {per_second:.0f}/s"
