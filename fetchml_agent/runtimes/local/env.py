"""The local runtime's pieces that are not the runtime itself: a workspace's venv, process-tree
stats, a log's tail."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path
from typing import Any

from ... import procs
from ...errors import BackendError
from ..base import State

__all__ = ["create_workspace_env", "process_tree_stats", "tail"]


def create_workspace_env(env_dir: Path, base_python: str | None = None) -> Path:
    """Create the workspace's venv (idempotent) and return its ``python``.

    ``base_python``: the interpreter the venv is made from (``local.python``, one that workspace
    users may run); the agent's own by default. It must be the agent's Python version, since the
    venv reads the agent's site-packages after its own.
    """
    python = env_dir / "bin" / "python"
    if python.exists():
        return python
    if base_python and os.path.realpath(base_python) != os.path.realpath(sys.executable):
        done = subprocess.run([base_python, "-m", "venv", "--without-pip", str(env_dir)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BackendError(f"could not create a venv with local.python {base_python}", done.stderr.strip()[-2000:])
    else:
        venv.EnvBuilder(with_pip=False, symlinks=True, clear=False).create(env_dir)
    purelib = Path(
        sysconfig.get_path("purelib", vars={"base": str(env_dir), "platbase": str(env_dir)})
    )
    base_paths = []
    for key in ("purelib", "platlib"):
        p = sysconfig.get_path(key)
        if p not in base_paths:
            base_paths.append(p)
    # Added after the venv's own site-packages, so workspace installs shadow the shared base; as
    # site dirs, so their own .pth files (an editable install's finder, for one) take effect too.
    lines = [f"import site; site.addsitedir({p!r})" for p in base_paths]
    (purelib / "_fetchml_base.pth").write_text("\n".join(lines) + "\n")
    bindir = env_dir / "bin"
    launcher = "#!{py}\nimport sys\nfrom {mod} import main\nsys.exit(main())\n"
    for name, mod in (
        ("pip", "pip._internal.cli.main"),
        ("pip3", "pip._internal.cli.main"),
        ("jupyter", "jupyter_core.command"),
        ("papermill", "papermill.cli"),
    ):
        target = bindir / name
        target.write_text(launcher.format(py=python, mod=mod))
        target.chmod(0o755)
    return python


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def process_tree_stats(state: State) -> dict[str, Any]:
    """RSS and CPU time summed over JupyterLab and its descendants (kernels included)."""
    pid = state.get("pid")
    if not pid or not procs.alive(state.get("pid"), state.get("start_time")):
        return {"running": False}
    rss = cpu_ticks = count = 0
    page = os.sysconf("SC_PAGE_SIZE")
    for p in [int(pid), *procs.descendants(int(pid))]:
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2 :].split()
        count += 1
        cpu_ticks += int(rest[11]) + int(rest[12])
        rss += int(rest[21]) * page
    hz = os.sysconf("SC_CLK_TCK")
    return {"running": True, "processes": count, "memory_bytes": rss, "cpu_seconds": round(cpu_ticks / hz, 3)}
