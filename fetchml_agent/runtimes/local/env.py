"""The local runtime's pieces that are not the runtime itself: the environments a workspace runs
in, process-tree stats, a log's tail.

Two environments per workspace (docs/security.md, "Kernels in an environment of their own"):

- the *server environment* (:func:`create_server_env`, one per agent): a venv of the agent's
  Python that reads the agent's whole site-packages; JupyterLab, its extensions and the
  experiment runner (papermill) run from it;
- the workspace's *kernel environment* (:func:`create_workspace_env`, one per workspace): a venv
  whose own site-packages hold what the workspace installed, followed by the *kernel base*
  (:func:`kernel_base`): a read-only directory of links to the agent's installed ipykernel and
  pip with their dependency closure, and the notebook SDK ``fetchml``, built once. Kernels, terminals' ``python`` and ``pip``, and
  the agent's installs run here, so what JupyterLab needs (``requests``, ``urllib3``, ...) is not
  importable from a kernel unless the workspace installs it (under the package policy).

JupyterLab finds the kernel through a kernelspec in the workspace's run directory
(:func:`write_kernelspec`, on ``JUPYTER_PATH``), which shadows the server's native one.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import venv
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement

from ... import procs
from ...errors import BackendError
from ...policy.names import normalize_name
from ..base import KERNEL_PYTHON_ENV as KERNEL_RUNNER_ENV
from ..base import State

__all__ = ["KERNEL_BASE_MODULES", "KERNEL_BASE_ROOTS", "KERNEL_NAME", "KERNEL_RUNNER_ENV", "create_server_env", "create_workspace_env", "kernel_base",
           "kernel_closure", "process_tree_stats", "tail", "write_kernelspec"]

#: What a kernel environment holds beyond the workspace's own packages: the kernel, and pip so
#: that ``!pip install`` keeps working (through the agent's index); with their requirements.
KERNEL_BASE_ROOTS: tuple[str, ...] = ("ipykernel", "pip")
#: Packages of the agent's own a kernel imports (the notebook SDK: ``from fetchml import
#: log_metric``), linked alone, not with the distribution they ship in.
KERNEL_BASE_MODULES: tuple[str, ...] = ("fetchml",)
#: The kernelspec the workspace's kernel is offered under (the name notebooks carry by default).
KERNEL_NAME = "python3"


def kernel_closure(roots: tuple[str, ...] = KERNEL_BASE_ROOTS) -> list[md.Distribution]:
    """The agent's installed distributions ``roots`` and everything they require (markers
    evaluated for this interpreter, no extras), in a stable order; a requirement that is not
    installed is left out (its import fails in the kernel as it would in the agent)."""
    found: dict[str, md.Distribution] = {}
    todo = list(roots)
    while todo:
        name = normalize_name(todo.pop())
        if name in found:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        found[name] = dist
        for line in dist.requires or ():
            try:
                req = Requirement(line)
            except InvalidRequirement:
                continue
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return [found[k] for k in sorted(found)]


def _top_entries(dist: md.Distribution) -> tuple[Path, set[str]]:
    """The site dir a distribution is installed in and its top-level entries there (packages,
    modules, its dist-info, extension libraries), without scripts outside the site dir."""
    site = Path(str(dist.locate_file(""))).resolve()
    tops: set[str] = set()
    for f in dist.files or ():
        parts = Path(str(f)).parts
        if parts and parts[0] != ".." and not parts[0].endswith(".pth") and parts[0] != "__pycache__":
            tops.add(parts[0])
    info = getattr(dist, "_path", None)  # the dist-info itself, when RECORD does not list it
    if info is not None:
        tops.add(Path(str(info)).name)
    return site, tops


def kernel_base(root: Path) -> Path:
    """The kernel base under ``root`` (built once per set of distributions; readable by all, the
    agent's own to write); its path. A directory of symlinks to the agent's installed files of
    :func:`kernel_closure`, so it costs no copy and no network."""
    dists = kernel_closure()
    entries: dict[str, Path] = {}
    for dist in dists:
        site, tops = _top_entries(dist)
        for top in tops:
            if (site / top).exists():
                entries.setdefault(top, site / top)
    for module in KERNEL_BASE_MODULES:
        found = importlib.util.find_spec(module)
        if found is not None and found.submodule_search_locations:
            entries[module] = Path(next(iter(found.submodule_search_locations)))
        elif found is not None and found.origin:
            entries[f"{module}.py"] = Path(found.origin)
    key = "\n".join(f"{sys.version}|{n}|{p}" for n, p in sorted(entries.items()))
    dest = root / hashlib.sha256(key.encode()).hexdigest()[:16]
    if dest.is_dir():
        return dest
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    for name, target in entries.items():
        (tmp / name).symlink_to(target)
    os.chmod(tmp, 0o755)
    try:
        tmp.rename(dest)
    except OSError:  # built meanwhile by another start
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _venv(env_dir: Path, base_python: str | None) -> Path:
    python = env_dir / "bin" / "python"
    if base_python and os.path.realpath(base_python) != os.path.realpath(sys.executable):
        done = subprocess.run([base_python, "-m", "venv", "--without-pip", str(env_dir)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BackendError(f"could not create a venv with local.python {base_python}", done.stderr.strip()[-2000:])
    else:
        venv.EnvBuilder(with_pip=False, symlinks=True, clear=False).create(env_dir)
    return python


def _site_dir(env_dir: Path) -> Path:
    return Path(sysconfig.get_path("purelib", vars={"base": str(env_dir), "platbase": str(env_dir)}))


def _launchers(env_dir: Path, python: Path, names: tuple[tuple[str, str], ...]) -> None:
    launcher = "#!{py}\nimport sys\nfrom {mod} import main\nsys.exit(main())\n"
    for name, mod in names:
        target = env_dir / "bin" / name
        target.write_text(launcher.format(py=python, mod=mod))
        target.chmod(0o755)


def _pth_text(site_dirs: list[str]) -> str:
    # Added after the venv's own site-packages, so workspace installs shadow what is shared; as
    # site dirs, so their own .pth files (an editable install's finder, for one) take effect too.
    return "".join(f"import site; site.addsitedir({p!r})\n" for p in site_dirs)


def _write_pth(env_dir: Path, site_dirs: list[str]) -> None:
    (_site_dir(env_dir) / "_fetchml_base.pth").write_text(_pth_text(site_dirs))


def _readable_by_all(root: Path) -> None:
    """Every workspace user runs the server environment: readable (and, where the owner may,
    executable) by all, whatever the agent's umask (the role's unit sets 0027)."""
    for dirpath, _dirs, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                mode = os.stat(path).st_mode
                os.chmod(path, mode | 0o444 | (0o111 if mode & 0o100 else 0))


def create_server_env(env_dir: Path, base_python: str | None = None) -> Path:
    """The server environment (idempotent; see the module doc): its ``python``.

    ``base_python``: the interpreter the venv is made from (``local.python``, one that workspace
    users may run); the agent's own by default. It must be the agent's Python version, since the
    venv reads the agent's site-packages after its own.
    """
    python = env_dir / "bin" / "python"
    if python.exists():
        return python
    tmp = env_dir.with_name(f".{env_dir.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    _venv(tmp, base_python)
    site_dirs: list[str] = []
    for key in ("purelib", "platlib"):
        p = sysconfig.get_path(key)
        if p not in site_dirs:
            site_dirs.append(p)
    _write_pth(tmp, site_dirs)
    _launchers(tmp, python, (("jupyter", "jupyter_core.command"), ("papermill", "papermill.cli")))
    _readable_by_all(tmp)
    try:
        tmp.rename(env_dir)
    except OSError:  # made meanwhile by another start
        shutil.rmtree(tmp, ignore_errors=True)
    return python


def create_workspace_env(env_dir: Path, base_python: str | None = None, base: Path | None = None) -> Path:
    """The workspace's kernel environment (idempotent; see the module doc): its ``python``.

    ``base``: the kernel base (:func:`kernel_base`) read after the venv's own site-packages.
    ``base_python`` as for :func:`create_server_env`.
    """
    python = env_dir / "bin" / "python"
    if not python.exists():
        _venv(env_dir, base_python)
    # Each time: the kernel base moves when the agent's packages change, and an environment made
    # before kernels had one of their own read the agent's whole site-packages.
    pth = _site_dir(env_dir) / "_fetchml_base.pth"
    want = [str(base)] if base is not None else []
    if not pth.exists() or pth.read_text() != _pth_text(want):
        _write_pth(env_dir, want)
        for name in ("jupyter", "papermill"):  # the server environment's now
            (env_dir / "bin" / name).unlink(missing_ok=True)
        _launchers(env_dir, python, (("pip", "pip._internal.cli.main"), ("pip3", "pip._internal.cli.main")))
        write_kernelspec(env_dir / "share" / "jupyter", python)
    return python


def write_kernelspec(share_dir: Path, python: Path, display_name: str = "Python 3 (workspace)") -> Path:
    """A kernelspec :data:`KERNEL_NAME` under ``share_dir`` (a ``JUPYTER_PATH`` entry) that starts
    ``python`` (the kernel environment's, by absolute path, so Jupyter does not swap in its own
    interpreter); the kernelspec's directory."""
    kdir = share_dir / "kernels" / KERNEL_NAME
    kdir.mkdir(parents=True, exist_ok=True)
    spec = {"argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": display_name, "language": "python", "metadata": {"debugger": True}}
    (kdir / "kernel.json").write_text(json.dumps(spec, indent=1) + "\n")
    return kdir


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
