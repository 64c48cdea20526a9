"""``fetchml-agent nomad-job render``: the operator's way to get the jobs the runtime submits."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path
from typing import Any

import yaml

from fetchml_agent import __version__
from fetchml_agent.nomad.cli import render_job_cli
from fetchml_agent.nomad.render import JobRenderer, WorkspaceJobRequest
from fetchml_agent.nomad.schema import AGENT_IMAGE, NomadSettings
from fetchml_agent.runtimes.base import Resources

CONFIG = {
    "address": "http://127.0.0.1:4646",
    "allowed_images": ["quay.io/jupyter/*"],
    "allowed_host_volumes": ["fetchml-ws-*"],
    "max": {"cpu": 8, "memory_mb": 65536, "gpu": 2},
}


def run(argv: list[str], config: dict[str, Any] | None = CONFIG) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = render_job_cli(argv, config=config, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_workspace_is_the_runtimes_job_and_holds_no_secret(tmp_path: Path) -> None:
    argv = [
        "render",
        "jupyter-workspace",
        "--name",
        "ws1",
        "--cpu",
        "4",
        "--memory",
        "8g",
        "--gpu",
        "1",
        "--image",
        "quay.io/jupyter/scipy-notebook:latest",
        "--password",
        "correct horse battery",
        "--token",
        "tok-0123456789abcdef",
        "--var-file",
        str(tmp_path / "ws1.var.json"),
    ]
    code, out, err = run(argv)
    assert code == 0, err
    job = json.loads(out)
    same = JobRenderer(NomadSettings.from_config(CONFIG)).workspace(
        WorkspaceJobRequest(
            name="ws1",
            image="quay.io/jupyter/scipy-notebook:latest",
            resources=Resources(cpu=4, memory_mb=8192, gpu=1),
        )
    )
    assert job == same
    assert "correct horse" not in out and "tok-0123456789abcdef" not in out and "argon2" not in out
    var_file = tmp_path / "ws1.var.json"
    assert stat.S_IMODE(var_file.stat().st_mode) == 0o600
    spec = json.loads(var_file.read_text())
    assert spec["Path"] == "nomad/jobs/fetchml-ws-ws1" and spec["Namespace"] == "default"
    config = json.loads(spec["Items"]["jupyter_config"])
    assert config["IdentityProvider"]["token"] == "tok-0123456789abcdef"
    assert config["PasswordIdentityProvider"]["hashed_password"].startswith("argon2:")
    assert "correct horse" not in var_file.read_text()
    assert "nomad var put" in err


def test_without_var_file_the_variable_command_goes_to_stderr() -> None:
    code, out, err = run(
        ["render", "jupyter-workspace", "--name", "ws2", "--image", "quay.io/jupyter/base-notebook:1"]
    )
    assert code == 0
    assert "nomad var put -namespace default nomad/jobs/fetchml-ws-ws2 jupyter_config=" in err
    assert "random token" in err
    assert "IdentityProvider" not in out


def test_refusals_exit_with_the_errors_codes() -> None:
    base = ["render", "jupyter-workspace", "--name", "ws1"]
    code, out, err = run([*base, "--image", "docker.io/evil/miner:1"])
    assert (code, out) == (5, "") and "not allowed" in err and "quay.io/jupyter/*" in err
    code, _, err = run([*base, "--cpu", "16", "--image", "quay.io/jupyter/x:1"])
    assert code == 2 and "nomad.max.cpu" in err
    code, _, err = run([*base, "--volume", "etc", "--image", "quay.io/jupyter/x:1"])
    assert code == 5 and "allowed_host_volumes" in err
    code, _, err = run([*base, "--memory", "lots", "--image", "quay.io/jupyter/x:1"])
    assert code == 2 and "--memory" in err
    code, _, err = run(["render", "jupyter-workspace"])
    assert code == 2 and "--name" in err
    code, _, _ = run(["render", "nonsense"])
    assert code == 2


def test_run_and_agent_templates(tmp_path: Path) -> None:
    code, out, err = run(
        [
            "render",
            "experiment-run",
            "--run-id",
            "r1",
            "--workspace",
            "ws1",
            "--notebook",
            "t.ipynb",
            "--image",
            "quay.io/jupyter/base-notebook:1",
            "--param",
            "lr=0.1",
            "--param",
            "name=x",
            "--snapshot-volume",
            "fetchml-ws-ws1",
            "--snapshot-path",
            "runs/r1",
        ]
    )
    assert code == 0, err
    job = json.loads(out)["Job"]
    assert job["Type"] == "batch"
    assert json.loads(job["TaskGroups"][0]["Tasks"][0]["Templates"][0]["EmbeddedTmpl"]) == {
        "lr": 0.1,
        "name": "x",
    }
    code, out, err = run(["render", "experiment-run", "--run-id", "r2", "--workspace", "ws1", "--script", "src/t.py",
                          "--image", "quay.io/jupyter/base-notebook:1"])
    assert code == 0, err
    assert json.loads(out)["Job"]["TaskGroups"][0]["Tasks"][0]["Config"]["args"][-2:] == ["python3", "src/t.py"]
    code, _, err = run(["render", "experiment-run", "--run-id", "r3", "--workspace", "ws1", "--script", "t.ipynb",
                        "--image", "quay.io/jupyter/base-notebook:1"])
    assert code == 2 and "not a .py file" in err
    code, out, err = run(
        ["render", "fetchml-agent", "--image", "quay.io/jupyter/agent:1", "--data-volume", "fetchml-ws-agent"]
    )
    assert code == 0, err
    assert json.loads(out)["Job"]["ID"] == "fetchml-agent"


def _agent_task(out: str) -> tuple[dict[str, Any], dict[str, Any]]:
    job = json.loads(out)["Job"]
    return job["TaskGroups"][0], job["TaskGroups"][0]["Tasks"][0]


def test_the_agents_job_renders_with_its_own_defaults_outside_the_workspace_policy() -> None:
    # Nothing given: the agent's own image and data volume, neither of which the workspace policy
    # (allowed_images quay.io/jupyter/*, allowed_host_volumes fetchml-ws-*) allows.
    code, out, err = run(["render", "fetchml-agent"])
    assert code == 0, err
    group, task = _agent_task(out)
    assert task["Config"]["image"] == AGENT_IMAGE == f"fetchml/agent:{__version__}"
    assert task["Config"]["args"] == ["serve", "--config", "${NOMAD_SECRETS_DIR}/agent.yaml"]
    assert group["Volumes"]["data"]["Source"] == "fetchml-agent"
    assert group["Networks"][0]["ReservedPorts"] == [{"Label": "api", "Value": 9101, "To": 9101}]
    assert "nomad var put" in err and "listen: 0.0.0.0:9101" in err
    # the workspace policy is unchanged by it: a workspace may still not use that image
    code, _, err = run(["render", "jupyter-workspace", "--name", "w", "--image", AGENT_IMAGE])
    assert code == 5 and "nomad.allowed_images" in err


def test_the_agents_job_settings_and_flags() -> None:
    own = {**CONFIG, "agent_job": {"image": "registry.internal/ops/fetchml-agent:2", "data_volume": "agent-state",
                                   "port": 8443, "memory_mb": 1024}}
    code, out, err = run(["render", "fetchml-agent"], config=own)
    assert code == 0, err
    group, task = _agent_task(out)
    assert task["Config"]["image"] == "registry.internal/ops/fetchml-agent:2"
    assert group["Volumes"]["data"]["Source"] == "agent-state"
    assert task["Resources"]["MemoryMB"] == 1024 and group["Networks"][0]["ReservedPorts"][0]["Value"] == 8443
    code, out, err = run(["render", "fetchml-agent", "--image", "other/agent:3", "--data-volume", "v2", "--port", "9000"],
                         config=own)
    assert code == 0, err
    group, task = _agent_task(out)
    assert (task["Config"]["image"], group["Volumes"]["data"]["Source"]) == ("other/agent:3", "v2")
    code, _, err = run(["render", "fetchml-agent", "--image", "bad image"])
    assert code == 2 and "invalid image reference" in err and "nomad.agent_job.image" in err
    code, _, err = run(["render", "fetchml-agent", "--data-volume", "../etc"])
    assert code == 2 and "invalid volume name" in err
    code, _, err = run(["render", "fetchml-agent"], config={**CONFIG, "agent_job": {"port": 0}})
    assert code == 2 and "nomad.agent_job.port" in err


def test_config_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump({"nomad": dict(CONFIG, namespace="ml", datacenters=["dc9"])}))
    code, out, err = run(
        [
            "render",
            "jupyter-workspace",
            "--name",
            "ws1",
            "--image",
            "quay.io/jupyter/x:1",
            "--config",
            str(path),
        ],
        config=None,
    )
    assert code == 0, err
    job = json.loads(out)["Job"]
    assert job["Namespace"] == "ml" and job["Datacenters"] == ["dc9"]
    (tmp_path / "bad.yaml").write_text("nomad: {address: 12}")
    code, _, err = run(
        ["render", "jupyter-workspace", "--name", "ws1", "--config", str(tmp_path / "bad.yaml")], None
    )
    assert code == 2 and "nomad.address" in err
