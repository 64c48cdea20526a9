"""Which workspace files are code and configuration, their hashes, and the run snapshot.

*Sources* are what a run freezes and what ``sync --to-experiment`` carries: notebooks, scripts
and configuration files (by suffix, plus ``requirements*.txt`` and friends) up to a size limit,
outside hidden directories, ``__pycache__``, checkpoints, and the workspace's top-level
``experiments/`` (synced results) and ``outputs/``. Symbolic links are never followed.

:func:`build_snapshot` makes a run's working directory: sources are *copied* (so editing the
notebook after queueing does not change the run); everything else (data) is *linked* — a
directory that holds no source is one symbolic link — so the notebook reads data by the same
relative paths as in the workspace, live rather than frozen.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import InvalidArgument, NotFound

__all__ = [
    "CONFLICT_MARK",
    "SKIP_TOP",
    "build_snapshot",
    "DEFAULT_KERNEL",
    "data_find_expression",
    "is_source",
    "notebook_kernel",
    "resolve_target",
    "select_sources",
    "sha256_file",
    "source_find_expression",
]

CODE_SUFFIXES = frozenset({".ipynb", ".py", ".r", ".jl", ".sh", ".sql"})
CONFIG_SUFFIXES = frozenset({".yaml", ".yml", ".json", ".toml", ".cfg", ".ini", ".conf"})
CONFIG_NAMES = frozenset({"makefile", "dockerfile", "environment.yml", "pipfile", "pipfile.lock"})
SKIP_TOP = frozenset({"experiments", "outputs"})  # results live here; never sources, never linked
_SKIP_DIRS = frozenset({"__pycache__", ".ipynb_checkpoints", "node_modules"})
CONFLICT_MARK = ".conflict-"  # in the name of a conflict copy that sync wrote: never a source
#: The kernel (and its language) a notebook that names none runs on: every workspace environment
#: and image has ipykernel's ``python3``.
DEFAULT_KERNEL = ("python3", "python")


def is_source(name: str) -> bool:
    lower = name.lower()
    suffix = os.path.splitext(lower)[1]
    return (
        suffix in CODE_SUFFIXES
        or suffix in CONFIG_SUFFIXES
        or lower in CONFIG_NAMES
        or (lower.startswith("requirements") and lower.endswith(".txt"))
    )


def _skip_dir(rel: str, name: str) -> bool:
    return name.startswith(".") or name in _SKIP_DIRS or (rel == "" and name in SKIP_TOP)


def select_sources(root: Path, max_bytes: int) -> tuple[dict[str, Path], list[str]]:
    """``({relative posix path: path}, [too large])`` for the sources under ``root``."""
    found: dict[str, Path] = {}
    too_large: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir
        dirnames[:] = sorted(d for d in dirnames if not _skip_dir(rel_dir, d) and not os.path.islink(os.path.join(dirpath, d)))
        for name in sorted(filenames):
            if name.startswith(".") or CONFLICT_MARK in name or not is_source(name):
                continue
            path = Path(dirpath, name)
            if path.is_symlink() or not path.is_file():
                continue
            rel = str(PurePosixPath(*Path(rel_dir, name).parts))
            if path.stat().st_size > max_bytes:
                too_large.append(rel)
            else:
                found[rel] = path
    return found, too_large


def source_find_expression(max_bytes: int) -> list[str]:
    """The sources rule of :func:`select_sources` as a ``find .`` expression printing NUL-separated
    paths, for workspaces whose files the agent reaches only by running a command in them."""
    prune = ["-name", ".*"]
    for name in sorted(_SKIP_DIRS):
        prune += ["-o", "-name", name]
    for name in sorted(SKIP_TOP):
        prune += ["-o", "-path", f"./{name}"]
    names: list[str] = ["-iname", "requirements*.txt"]
    for suffix in sorted(CODE_SUFFIXES | CONFIG_SUFFIXES):
        names += ["-o", "-iname", f"*{suffix}"]
    for name in sorted(CONFIG_NAMES):
        names += ["-o", "-iname", name]
    return ["-mindepth", "1", "(", "-type", "d", "(", *prune, ")", ")", "-prune", "-o",
            "-type", "f", "(", *names, ")", "!", "-name", f"*{CONFLICT_MARK}*", "!", "-name", ".*",
            "-size", f"-{max_bytes + 1}c", "-print0"]


def data_find_expression() -> list[str]:
    """The workspace's *data* as a ``find .`` expression printing NUL-separated paths: every
    regular file the sources rule skips by name (hidden directories, ``__pycache__``,
    checkpoints, top-level ``experiments/`` and ``outputs/`` are pruned the same way); sources
    of any size stay with :func:`source_find_expression`."""
    expr = source_find_expression(0)
    names = expr[expr.index("-type", expr.index("-prune")) + 2:expr.index("!")]  # ( -iname ... )
    prune = expr[:expr.index("-prune") + 1]
    return [*prune, "-o", "-type", "f", "!", *names, "!", "-name", ".*", "-print0"]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_target(root: Path, target: str, kind: str, shown: str | None = None) -> str:
    """``target`` as a clean relative path of an existing notebook (.ipynb) or script (.py) in ``root``
    (``shown``: the workspace's directory as its user knows it, for messages; default ``root``)."""
    shown = shown or str(root)
    want = ".ipynb" if kind == "notebook" else ".py"
    rel = PurePosixPath(target.replace(os.sep, "/"))
    if rel.is_absolute():
        try:
            rel = PurePosixPath(Path(target).resolve().relative_to(root.resolve()))
        except ValueError:
            try:  # a path as the user sees it inside a remote workspace
                rel = rel.relative_to(shown)
            except ValueError:
                raise InvalidArgument(f"{kind} {target!r} is not inside the workspace ({shown})") from None
    if ".." in rel.parts or not rel.parts:
        raise InvalidArgument(f"{kind} {target!r} must be a path inside the workspace, without '..'")
    if rel.suffix != want:
        raise InvalidArgument(f"{kind} {target!r}: expected a {want} file")
    path = root / rel
    if not path.is_file():
        raise NotFound(f"no {kind} {str(rel)!r} in the workspace ({shown})", f"the path is relative to {shown}")
    # A symbolic link (of the file or of a directory on the way) may point anywhere on the host;
    # what a run executes is copied by the agent, so it must stay inside the workspace.
    real, real_root = path.resolve(), root.resolve()
    if real_root not in real.parents:
        raise InvalidArgument(f"{kind} {str(rel)!r} is a symbolic link that leads out of the workspace",
                              "copy the file into the workspace instead of linking to it")
    return str(rel)


def build_snapshot(root: Path, work: Path, max_bytes: int, always: tuple[str, ...] = ()) -> dict[str, Any]:
    """Make ``work`` the run's working directory from workspace ``root``; return its manifest
    ``{"copied": {path: sha256}, "linked": [path], "too_large": [path]}``."""
    sources, too_large = select_sources(root, max_bytes)
    for rel in always:  # what the run executes is frozen whatever its size
        if rel not in sources and (root / rel).is_file():
            sources[rel] = root / rel
            too_large = [p for p in too_large if p != rel]
    holders = {""}
    for rel in sources:
        parts = PurePosixPath(rel).parts[:-1]
        for i in range(1, len(parts) + 1):
            holders.add(str(PurePosixPath(*parts[:i])))
    copied: dict[str, str] = {}
    linked: list[str] = []
    work.mkdir(parents=True, exist_ok=True)

    def fill(rel_dir: str) -> None:
        src_dir = root / rel_dir if rel_dir else root
        try:
            entries = sorted(os.scandir(src_dir), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            dest = work / rel
            if entry.is_dir(follow_symlinks=False):
                if _skip_dir(rel_dir, entry.name):
                    continue
                if rel in holders:
                    dest.mkdir(exist_ok=True)
                    fill(rel)
                    continue
            elif rel in sources:
                shutil.copy2(entry.path, dest)
                copied[rel] = sha256_file(dest)
                continue
            elif entry.name.startswith(".") or (rel_dir == "" and entry.name in SKIP_TOP):
                continue
            os.symlink(entry.path, dest)
            linked.append(rel)

    fill("")
    return {"copied": copied, "linked": linked, "too_large": sorted(too_large)}


def notebook_kernel(path: Path, configured: str | None, shown: str) -> tuple[str | None, str | None, str | None]:
    """What papermill needs to run the notebook at ``path``: ``(kernel, language, note)``.

    ``kernel`` is ``configured`` (the experiment config's ``kernel:``), else ``None`` when the
    notebook names one (``metadata.kernelspec.name``), else :data:`DEFAULT_KERNEL`'s, with a
    ``note`` saying so. ``language`` is given only where the notebook names none (papermill needs
    one to write the parameters cell). Raises :class:`InvalidArgument` for a file that is not a
    notebook papermill can read, saying what to add; ``shown`` names it in messages.
    """
    try:
        nb = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"{shown} is not a Jupyter notebook: it does not read as JSON ({exc})"[:300],
                              "save it from JupyterLab, or run a .py file with --script") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list) or nb.get("nbformat") != 4:
        raise InvalidArgument(f"{shown} is not a Jupyter notebook in format 4 (nbformat: 4 and a cells list)",
                              "save it from JupyterLab (File > Save), which writes the current format")
    meta = nb.get("metadata")
    if not isinstance(meta, dict):
        raise InvalidArgument(
            f"{shown} has no metadata: papermill cannot run a notebook without it",
            'add "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}} '
            "at the top level, or open and save it in JupyterLab")
    raw_spec, raw_info = meta.get("kernelspec"), meta.get("language_info")
    spec: dict[str, Any] = raw_spec if isinstance(raw_spec, dict) else {}
    info: dict[str, Any] = raw_info if isinstance(raw_info, dict) else {}
    named = spec.get("name") if isinstance(spec.get("name"), str) and spec.get("name") else None
    language_known = bool(spec.get("language") or info.get("name"))
    kernel, note = configured, None
    if kernel is None and named is None:
        kernel = DEFAULT_KERNEL[0]
        note = (f"{shown} names no kernel (metadata.kernelspec): it runs on the workspace's default kernel "
                f"{kernel}; set kernel: in the experiment config, or pick a kernel in JupyterLab and save, to choose")
    language = None
    if not language_known and kernel is not None:
        language = DEFAULT_KERNEL[1] if kernel == DEFAULT_KERNEL[0] else None
    return kernel, language, note
