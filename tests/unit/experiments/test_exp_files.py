from __future__ import annotations

import os
from pathlib import Path

import pytest

from fetchml_agent.errors import InvalidArgument, NotFound
from fetchml_agent.experiments.files import build_snapshot, is_source, resolve_target, select_sources


def _tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_sources_are_code_and_config_outside_results_and_hidden_dirs(tmp_path: Path) -> None:
    _tree(tmp_path, {
        "train.ipynb": "{}", "lib/util.py": "", "config.yaml": "", "requirements-dev.txt": "", "Makefile": "",
        "data/train.csv": "x", "data/schema.json": "{}", "notes.txt": "", ".hidden/x.py": "", "lib/__pycache__/u.py": "",
        ".ipynb_checkpoints/train-checkpoint.ipynb": "", "experiments/e/run.json": "{}", "outputs/model.py": "",
        "deep/outputs/keep.py": "", "train.conflict-experiment-20260101T000000Z.ipynb": "{}", "big.json": "x" * 2000,
    })
    found, too_large = select_sources(tmp_path, max_bytes=1000)
    assert sorted(found) == ["Makefile", "config.yaml", "data/schema.json", "deep/outputs/keep.py", "lib/util.py",
                             "requirements-dev.txt", "train.ipynb"]
    assert too_large == ["big.json"]
    assert is_source("TRAIN.IPYNB") and not is_source("model.pt")


def test_snapshot_copies_sources_and_links_the_rest(tmp_path: Path) -> None:
    ws, work = tmp_path / "ws", tmp_path / "work"
    _tree(ws, {"train.ipynb": "v1", "data/big/a.csv": "1", "data/big/b.csv": "2", "data/prep.py": "p",
               "weights.bin": "w", "huge.ipynb": "x" * 50, ".git/config": "", "outputs/old.txt": "", "experiments/e/x": ""})
    manifest = build_snapshot(ws, work, max_bytes=20, always=("huge.ipynb",))
    assert sorted(manifest["copied"]) == ["data/prep.py", "huge.ipynb", "train.ipynb"]
    assert sorted(manifest["linked"]) == ["data/big", "weights.bin"]
    assert not (work / "train.ipynb").is_symlink() and (work / "data").is_dir() and not (work / "data").is_symlink()
    assert os.readlink(work / "data" / "big") == str(ws / "data" / "big")  # one link for a data-only directory
    assert not (work / ".git").exists() and not (work / "outputs").exists() and not (work / "experiments").exists()
    (ws / "train.ipynb").write_text("v2")  # editing the workspace later does not change the snapshot
    assert (work / "train.ipynb").read_text() == "v1"
    assert (work / "data" / "big" / "a.csv").read_text() == "1"  # data is read live


def test_resolve_target(tmp_path: Path) -> None:
    _tree(tmp_path, {"nb/train.ipynb": "{}", "train.py": ""})
    assert resolve_target(tmp_path, "nb/train.ipynb", "notebook") == "nb/train.ipynb"
    assert resolve_target(tmp_path, str(tmp_path / "train.py"), "script") == "train.py"
    with pytest.raises(NotFound):
        resolve_target(tmp_path, "missing.ipynb", "notebook")
    with pytest.raises(InvalidArgument, match=r"without '\.\.'"):
        resolve_target(tmp_path, "../x.ipynb", "notebook")
    with pytest.raises(InvalidArgument, match=r"expected a \.py file"):
        resolve_target(tmp_path, "nb/train.ipynb", "script")
    with pytest.raises(InvalidArgument, match="not inside the workspace"):
        resolve_target(tmp_path, "/etc/passwd.ipynb", "notebook")
