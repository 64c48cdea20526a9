"""The local runtime's kernel environment (runtimes/local/env.py): the kernel base is ipykernel's
and pip's dependency closure, built once from the agent's installed distributions; a workspace
venv reads only it, and one made before kernels had an environment of their own is moved onto it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sysconfig
from pathlib import Path

from fetchml_agent.runtimes.local.env import (
    KERNEL_NAME,
    create_server_env,
    create_workspace_env,
    kernel_base,
    kernel_closure,
)


def _imports(python: Path, *modules: str) -> dict[str, bool]:
    code = ("import importlib.util, json, sys; print(json.dumps({m: importlib.util.find_spec(m) is not None "
            "for m in sys.argv[1:]}))")
    out = subprocess.run([str(python), "-c", code, *modules], capture_output=True, text=True, check=True, cwd="/")
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_the_closure_holds_the_kernel_and_pip_not_the_server() -> None:
    names = {d.metadata["Name"].lower().replace("_", "-") for d in kernel_closure()}
    assert {"ipykernel", "pip", "jupyter-client", "pyzmq", "tornado", "traitlets"} <= names
    assert not {"requests", "urllib3", "jupyterlab", "jupyter-server", "papermill"} & names


def test_the_base_is_built_once_of_links(tmp_path: Path) -> None:
    first = kernel_base(tmp_path / "kb")
    assert kernel_base(tmp_path / "kb") == first
    assert [p.name for p in (tmp_path / "kb").iterdir()] == [first.name]  # no build left behind
    entries = list(first.iterdir())
    assert entries and all(p.is_symlink() for p in entries)
    assert {"ipykernel", "pip", "fetchml"} <= {p.name for p in entries}


def test_an_old_workspace_venv_moves_onto_the_kernel_base(tmp_path: Path) -> None:
    env_dir = tmp_path / "env"
    python = create_workspace_env(env_dir)  # no base: nothing shared
    site = Path(sysconfig.get_path("purelib", vars={"base": str(env_dir), "platbase": str(env_dir)}))
    # as an agent before kernel environments left it: the agent's whole site-packages, server launchers
    (site / "_fetchml_base.pth").write_text(f"import site; site.addsitedir({sysconfig.get_path('purelib')!r})\n")
    (env_dir / "bin" / "papermill").write_text("#!/bin/sh\n")
    assert _imports(python, "requests")["requests"]
    base = kernel_base(tmp_path / "kb")
    assert create_workspace_env(env_dir, base=base) == python
    assert _imports(python, "requests", "jupyterlab", "ipykernel", "pip", "fetchml") == {
        "requests": False, "jupyterlab": False, "ipykernel": True, "pip": True, "fetchml": True}
    assert not (env_dir / "bin" / "papermill").exists() and (env_dir / "bin" / "pip").is_file()
    spec = json.loads((env_dir / "share" / "jupyter" / "kernels" / KERNEL_NAME / "kernel.json").read_text())
    assert spec["argv"][:3] == [str(python), "-m", "ipykernel_launcher"]


def test_the_server_env_is_readable_by_every_workspace_user_under_the_units_umask(tmp_path: Path) -> None:
    """The role's unit runs the agent with UMask=0027: the server environment it makes must still
    be readable by the workspace users that run JupyterLab from it (a molecule run found it not)."""
    old = os.umask(0o027)
    try:
        python = create_server_env(tmp_path / "server-env")
    finally:
        os.umask(old)
    for path in [tmp_path / "server-env", *(tmp_path / "server-env").rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        assert mode & 0o005 == 0o005 if path.is_dir() else mode & 0o004, f"{path}: {stat.filemode(mode)}"
    assert os.access(python.parent / "jupyter", os.X_OK) and (python.parent / "jupyter").stat().st_mode & 0o001
