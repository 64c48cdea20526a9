"""The `ml` parser: every command, argument and option says what it is; commands are built on use;
one table of exit codes, the same in the code, the error classes and the README."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from fetchml_agent import errors
from fetchml_agent.cli.main import EXIT_CODES, Commands, build_parser

README = Path(__file__).resolve().parents[3] / "README.md"


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ("ml",)) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser of the tree, building each command's parser (as running it would)."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name in list(action.choices):
                yield from _walk(action.choices[name], (*path, name))


def test_every_argument_option_and_command_has_help() -> None:
    missing = []
    commands = 0
    for path, parser in _walk(build_parser()):
        for action in parser._actions:
            if action.help == argparse.SUPPRESS:
                continue  # hidden on purpose (ml status --count, for tests)
            if not (action.help or "").strip():
                missing.append(f"{' '.join(path)}: {'/'.join(action.option_strings) or action.dest}")
            if isinstance(action, argparse._SubParsersAction):
                helped = {a.dest for a in action._get_subactions() if (a.help or "").strip()}
                missing += [f"{' '.join(path)} {name}: no one-line help" for name in action.choices if name not in helped]
        commands += 1
    assert commands > 40  # the walk saw the whole tree
    assert not missing, "without help:\n" + "\n".join(missing)


def test_every_command_runs_something() -> None:
    for path, parser in _walk(build_parser()):
        if not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
            assert callable(parser.get_default("func")), " ".join(path)


def test_a_commands_parser_is_built_only_when_it_is_used() -> None:
    parser = build_parser()
    top = next(a for a in parser._actions if isinstance(a, Commands))
    jupyter = next(a for a in top.choices["jupyter"]._actions if isinstance(a, Commands))
    assert all(dict.__getitem__(jupyter.choices, name) is None for name in jupyter.choices)
    args = parser.parse_args(["jupyter", "scale", "ws1", "--cpu", "2"])
    assert (args.name, args.cpu) == ("ws1", "2")
    built = [name for name in jupyter.choices if dict.__getitem__(jupyter.choices, name) is not None]
    assert built == ["scale"]


def test_help_lists_every_command_without_building_them(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["jupyter", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for verb in ("create", "scale", "optimize", "logs", "report", "reset", "install", "queue", "sync", "export"):
        assert re.search(rf"^\s+{verb}\s+\S", out, re.M), verb


def test_one_table_of_exit_codes() -> None:
    codes = {cls.exit_code for cls in vars(errors).values()
             if isinstance(cls, type) and issubclass(cls, errors.FetchmlError)}
    assert codes <= set(EXIT_CODES), codes - set(EXIT_CODES)
    assert errors.EXIT_USAGE == 2 and EXIT_CODES[0] == "ok"
    # NotSupported is the request's problem (this agent does not offer it), not a server error.
    assert errors.NotSupported.exit_code == errors.InvalidArgument.exit_code == 2
    readme = " ".join(README.read_text().split())
    for code in range(9):
        words = EXIT_CODES[code].split()[0]
        assert re.search(rf"`{code}` {words}", readme), f"README's exit code table lacks {code} ({EXIT_CODES[code]})"
