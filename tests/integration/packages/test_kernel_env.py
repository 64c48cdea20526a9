"""Kernels in an environment of their own, on the local runtime, with the default configuration
(the seed's default policy: requests and urllib3 blocked, the startup scan on).

JupyterLab runs from the server environment (it needs requests, urllib3, tornado, ...); a kernel
runs from the workspace's kernel environment: what the workspace installed, over the kernel base
(ipykernel, pip, the notebook SDK). Real `ml`, a real agent, a real JupyterLab and real kernels.
"""

from __future__ import annotations

import json
import random
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from tests.conftest import AgentProcess
from tests.integration.experiments.exp_helpers import wait_for, write_notebook
from tests.integration.jupyter import execute, split_url
from tests.integration.packages.world import ServerThread, agent_for, site_packages, workspace_python

PROBE = """
import importlib.util, sys
print(sys.executable)
print(sorted(m for m in ("requests", "urllib3", "jupyterlab", "jupyter_server", "fetchml_agent", "fetchml_jupyter")
             if importlib.util.find_spec(m) is not None))
"""


@pytest.fixture(scope="module")
def default_agent(upstream: ServerThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    """An agent with no package_management settings at all: the seed's defaults."""
    a = agent_for(tmp_path_factory.mktemp("kernel-env"), f"{upstream.url}/simple/", {})
    with a.running():
        yield a


@pytest.fixture
def ws(default_agent: AgentProcess) -> Iterator[str]:
    name = f"kernel-env-{random.randint(1000, 9999)}"
    default_agent.ml("jupyter", "create", name, "--experiment", f"exp-{name}", user="bob")
    yield name
    default_agent.ml("jupyter", "delete", name, "--yes", check=False)


def _kernelspecs(url: str) -> dict:
    base, token = split_url(url)
    req = urllib.request.Request(base + "api/kernelspecs", headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def test_a_kernel_imports_neither_blocked_packages_nor_the_server(default_agent: AgentProcess, ws: str) -> None:
    url = default_agent.ml_json("jupyter", "info", ws)["url"]
    python = workspace_python(default_agent, ws)
    # The only kernel offered is the workspace's, started with its kernel environment's Python.
    specs = _kernelspecs(url)
    assert specs["default"] == "python3" and set(specs["kernelspecs"]) == {"python3"}
    assert specs["kernelspecs"]["python3"]["spec"]["argv"][0] == str(python)
    out = execute(url, PROBE)
    assert out.split() == [str(python), "[]"], out
    assert execute(url, "import fetchml, ipykernel, pip; 'ok'").strip() == "'ok'"
    # the startup scan and security-scan look at that same environment: nothing blocked in it
    scan = default_agent.ml_json("jupyter", "security-scan", ws, user="bob")
    assert scan["ok"] and scan["startup_scan"]["found"] == []
    assert scan["findings"] == [] and scan["packages_checked"] >= 20  # the kernel base's closure
    rows = {p["name"].lower(): p for p in default_agent.ml_json("jupyter", "packages", ws, "--all")["packages"]}
    assert rows["ipykernel"]["location"] == "base" and not {"requests", "urllib3", "jupyterlab"} & set(rows)


def test_pip_in_a_kernel_installs_allowed_packages_only(default_agent: AgentProcess, ws: str) -> None:
    url = default_agent.ml_json("jupyter", "info", ws)["url"]
    out = execute(url, "!pip install leftpad", timeout=240)
    assert "Successfully installed leftpad-1.0" in out, out
    assert execute(url, "import leftpad_mod; leftpad_mod.VERSION").strip() == "'1.0'"
    out = execute(url, "!pip install requests", timeout=240)
    assert 'fetchml-policy="requests is blocked by the package policy' in out, out
    assert execute(url, "import importlib.util; importlib.util.find_spec('requests') is None").strip() == "True"
    assert {p.name.split("-")[0] for p in site_packages(default_agent, ws).glob("*.dist-info")} == {"leftpad"}
    refused = default_agent.ml("jupyter", "install", ws, "urllib3", user="bob", check=False)
    assert refused.returncode == 5 and "urllib3 is blocked by the package policy" in refused.stderr


def test_a_run_executes_in_the_kernel_environment(default_agent: AgentProcess, ws: str) -> None:
    """papermill (the runner, in the server environment) finds the workspace's kernel; the
    notebook's code, and a script run, get the kernel environment."""
    info = default_agent.ml_json("jupyter", "info", ws)
    root = Path(info["path"])
    python = workspace_python(default_agent, ws)
    write_notebook(root / "probe.ipynb", PROBE, "from fetchml import log_metric\nlog_metric('x', 1.0)")
    (root / "probe.py").write_text("import contextlib, pathlib\npathlib.Path('outputs').mkdir(exist_ok=True)\n"
                                   "with open('outputs/probe.txt', 'w') as out, contextlib.redirect_stdout(out):\n"
                                   + "".join(f"    {line}\n" for line in PROBE.strip().splitlines()))
    notebook = json.loads(default_agent.ml("jupyter", "queue", "--workspace", ws, "--notebook", "probe.ipynb",
                                           "--json", user="bob").stdout)
    done = wait_for(default_agent, notebook["id"], ("succeeded", "failed"), user="bob")
    assert done["status"] == "succeeded", done
    out = nbformat.read(done["output_notebook"], as_version=4)
    printed = "".join(o.get("text", "") for o in out.cells[0].outputs)
    assert printed.split() == [str(python), "[]"], printed
    assert [m["value"] for m in done["metrics"] if m["name"] == "x"] == [1.0]
    script = json.loads(default_agent.ml("jupyter", "queue", "--workspace", ws, "--script", "probe.py",
                                         "--json", user="bob").stdout)
    done = wait_for(default_agent, script["id"], ("succeeded", "failed"), user="bob")
    assert done["status"] == "succeeded" and done["outputs"] == ["probe.txt"], done
    synced = root / "experiments" / script["experiment"] / "runs" / script["id"] / "outputs" / "probe.txt"
    assert synced.read_text().split() == [str(python), "[]"]
