"""What the docs and docstrings point a reader to exists: the modules a package's map names, and
no path that lives only on the machine the code was written on."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = sorted(p.parent for p in (REPO / "fetchml_agent").rglob("__init__.py"))


def _docstring(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text())) or ""


def _modules(package: Path) -> set[str]:
    return {p.stem for p in package.glob("*.py") if p.stem != "__init__"} | {
        p.name for p in package.iterdir() if (p / "__init__.py").is_file()}


@pytest.mark.parametrize("package", PACKAGES, ids=[str(p.relative_to(REPO)) for p in PACKAGES])
def test_a_package_map_names_only_modules_that_exist(package: Path) -> None:
    named = set(re.findall(r":mod:`\.([A-Za-z_][A-Za-z0-9_]*)`", _docstring(package / "__init__.py")))
    assert named <= _modules(package), f"named but not there: {sorted(named - _modules(package))}"


def test_the_experiments_map_lists_every_module() -> None:
    package = REPO / "fetchml_agent" / "experiments"
    named = set(re.findall(r":mod:`\.([A-Za-z_][A-Za-z0-9_]*)`", _docstring(package / "__init__.py")))
    assert named == _modules(package)


def test_no_tracked_file_cites_a_path_of_the_development_machine() -> None:
    """Only the repository travels: a docstring or page that cites the development machine's
    shared reference directory (where the product's notes were kept while it was written) sends
    every other reader nowhere."""
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    local = re.compile(r"/work/(shared|main|wt|prompts)\b")
    hits = []
    for name in files:
        path = REPO / name
        if path.suffix not in (".py", ".md", ".yml", ".yaml", ".j2", ".toml", ".sh", ".cfg", ".txt") or not path.is_file():
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if local.search(line):
                hits.append(f"{name}:{n}: {line.strip()}")
    assert hits == []
