"""The conflict rule, case by case, on real files (no agent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fetchml_agent.experiments.files import sha256_file
from fetchml_agent.experiments.sync import _Pair, conflict_name, reconcile

NOW = 1_800_000_000.0


def _setup(tmp_path: Path, ws: str | None, exp: str | None, *, to_exp: bool = True, to_ws: bool = True) -> tuple[_Pair, Path]:
    root = tmp_path / "ws"
    root.mkdir(exist_ok=True)
    pair = _Pair("src:f.py", "f.py", root / "f.py", tmp_path / "exp" / "f.py", to_exp, to_ws)
    pair.exp_path.parent.mkdir(exist_ok=True)
    if ws is not None:
        pair.ws_path.write_text(ws)
    if exp is not None:
        pair.exp_path.write_text(exp)
    return pair, root


def _h(tmp_path: Path, text: str) -> str:
    p = tmp_path / "h"
    p.write_text(text)
    return sha256_file(p)


def test_identical_sides_agree(tmp_path: Path) -> None:
    pair, root = _setup(tmp_path, "a", "a")
    out = reconcile([pair], root, {}, {}, NOW)
    assert out.unchanged == 1 and out.bases == {"src:f.py": _h(tmp_path, "a")} and not out.copied


@pytest.mark.parametrize(("ws", "exp", "base", "result", "to"), [
    ("new", "old", "old", "new", "experiment"),  # only the workspace changed
    ("old", "new", "old", "new", "workspace"),  # only the experiment changed
    ("only", None, None, "only", "experiment"),  # absent on the experiment side
    (None, "only", None, "only", "workspace"),  # absent in the workspace
])
def test_one_side_changed_flows(tmp_path: Path, ws: str | None, exp: str | None, base: str | None, result: str, to: str) -> None:
    pair, root = _setup(tmp_path, ws, exp)
    bases = {"src:f.py": _h(tmp_path, base)} if base else {}
    out = reconcile([pair], root, bases, {}, NOW)
    assert out.copied == [{"path": "f.py", "to": to}] and not out.conflicts
    assert pair.ws_path.read_text() == result and pair.exp_path.read_text() == result
    assert out.bases["src:f.py"] == _h(tmp_path, result)


def test_direction_limits_keep_the_newer_side(tmp_path: Path) -> None:
    pair, root = _setup(tmp_path, "old", "new", to_ws=False)
    out = reconcile([pair], root, {"src:f.py": _h(tmp_path, "old")}, {}, NOW)
    assert out.kept == [{"path": "f.py", "newer": "experiment"}] and pair.ws_path.read_text() == "old"


@pytest.mark.parametrize("base", [None, "original"])
def test_both_changed_is_a_conflict_that_overwrites_nothing(tmp_path: Path, base: str | None) -> None:
    pair, root = _setup(tmp_path, "mine", "theirs")
    bases = {"src:f.py": _h(tmp_path, base)} if base else {}
    out = reconcile([pair], root, bases, {}, NOW)
    copy = conflict_name("f.py", NOW)
    assert copy == "f.conflict-experiment-20270115T080000Z.py"
    assert out.conflicts == [{"path": "f.py", "experiment_copy": copy}] and not out.copied
    assert pair.ws_path.read_text() == "mine" and pair.exp_path.read_text() == "theirs"
    assert (root / copy).read_text() == "theirs"
    assert out.new_conflicts["src:f.py"]["theirs_sha256"] == _h(tmp_path, "theirs")
    assert "src:f.py" not in out.bases


def test_conflict_stays_unresolved_until_the_copy_is_deleted(tmp_path: Path) -> None:
    pair, root = _setup(tmp_path, "mine", "theirs")
    first = reconcile([pair], root, {}, {}, NOW)
    pending = first.new_conflicts
    again = reconcile([pair], root, {}, pending, NOW + 1)
    assert again.unresolved == ["f.py"] and not again.copied and not again.conflicts
    pair.ws_path.write_text("merged")
    (root / pending["src:f.py"]["copy_path"]).unlink()
    resolved = reconcile([pair], root, {}, pending, NOW + 2)
    assert resolved.resolved == ["src:f.py"] and resolved.copied == [{"path": "f.py", "to": "experiment"}]
    assert pair.exp_path.read_text() == "merged"


def test_resolution_against_a_moved_experiment_is_a_new_conflict(tmp_path: Path) -> None:
    pair, root = _setup(tmp_path, "mine", "theirs")
    pending = reconcile([pair], root, {}, {}, NOW).new_conflicts
    (root / pending["src:f.py"]["copy_path"]).unlink()
    pair.ws_path.write_text("merged")
    pair.exp_path.write_text("theirs again")
    out = reconcile([pair], root, {}, pending, NOW + 5)
    assert [c["path"] for c in out.conflicts] == ["f.py"] and pair.exp_path.read_text() == "theirs again"


def test_conflict_names() -> None:
    assert conflict_name("a/b/train.ipynb", NOW) == "a/b/train.conflict-experiment-20270115T080000Z.ipynb"
    assert conflict_name("Makefile", NOW) == "Makefile.conflict-experiment-20270115T080000Z"
