"""``ml``: the command line data scientists use.

Where it finds the agent, first match wins: ``--server``/``--api-key``/``--ca`` flags, then
``FETCHML_SERVER``/``FETCHML_API_KEY``/``FETCHML_CA``, then the config file
(``$FETCHML_CONFIG``, else ``$XDG_CONFIG_HOME/fetchml/ml.yaml``, else ``~/.config/fetchml/ml.yaml``)
that ``make dev-up`` writes.

Exit codes (:data:`EXIT_CODES`; an error's code comes from the table in :mod:`fetchml_agent.errors`).

Start-up is part of every command's latency, so this module and the command modules import
little: the protocol codec, and the WebSocket client once a command talks to the agent. A
command's parser is built only when that command runs (or when a help page lists it).
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from ..errors import AgentUnreachable, AuthenticationFailed, FetchmlError, InvalidArgument, MfaRequired

__all__ = ["COMMAND_MODULES", "Commands", "Ctx", "EXIT_CODES", "build_parser", "flat_yaml", "main"]

DEFAULT_SERVER = "ws://127.0.0.1:9101/ws"

# The one table of exit codes. Errors carry theirs (fetchml_agent.errors); a few outcomes that are
# not errors map onto the same table: a workspace that is not running (`status`), a run that did
# not succeed (`queue --wait`), sync conflicts → 4; a `delete` not confirmed → 2.
EXIT_CODES: dict[int, str] = {
    0: "ok",
    1: "server error",
    2: "usage or invalid input",
    3: "authentication or permission",
    4: "not found, conflict or wrong state",
    5: "policy denied",
    6: "approval required",
    7: "agent or backend unreachable",
    8: "not enough resources",
    9: "the audit chain, or an export of it, does not verify (ml jupyter audit --verify)",
    130: "interrupted (Ctrl-C)",
    141: "the reader of ml's output went away (ml ... | head), as for any Unix tool",
}
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

# Modules that add commands: each has ``register(jupyter, top)``.
COMMAND_MODULES = [
    "fetchml_agent.cli.workspaces",
    "fetchml_agent.cli.operations",
    "fetchml_agent.cli.packages",
    "fetchml_agent.cli.experiments",
    "fetchml_agent.cli.auth",
    "fetchml_agent.cli.governance",
]


def config_path() -> str:
    explicit = os.environ.get("FETCHML_CONFIG")
    if explicit:
        return os.path.expanduser(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "fetchml", "ml.yaml")


def _read_config_file() -> dict[str, Any]:
    path = config_path()
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise InvalidArgument(f"{path}: cannot read ml's config file ({exc.strerror})", "fix or delete it") from None
    doc = flat_yaml(text)
    if doc is None:
        import yaml

        try:
            doc = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise InvalidArgument(f"{path}: cannot read ml's config file ({exc})", "fix or delete it") from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"{path}: expected keys server, api_key, ca")
    return doc


_FLAT_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*):(?: +(.*?))? *")
# Plain scalars YAML would read as something other than a string (null, booleans, numbers), or
# starting with an indicator: those documents go to the YAML parser.
_NOT_PLAIN = re.compile(r"(?:null|Null|NULL|~|true|True|TRUE|false|False|FALSE|yes|Yes|YES|no|No|NO|on|On|ON"
                        r"|off|Off|OFF|=|[-+]?\.?[0-9].*|[-+]?\.(?:inf|Inf|INF|nan|NaN|NAN)|[-?:,\[\]{}#&*!|>'\"%@`].*)")


def flat_yaml(text: str) -> dict[str, str] | None:
    """``key: value`` lines of plain or simply quoted strings, as YAML reads them; ``None`` for
    anything else (then the caller asks the YAML parser).

    ml's config file (``make dev-up`` writes three such lines) is read by every command, and
    importing PyYAML would cost a short command a quarter of its time.
    """
    doc: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _FLAT_LINE.fullmatch(line)
        if m is None or m.group(1) in doc or "\t" in line:
            return None
        value = m.group(2) or ""
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            inner = value[1:-1]
            if value[0] in inner or "\\" in inner:
                return None  # escapes and doubled quotes: the YAML parser's business
            doc[m.group(1)] = inner
            continue
        if not value or " #" in value or ": " in value or value.endswith(":") or _NOT_PLAIN.fullmatch(value):
            return None
        doc[m.group(1)] = value
    return doc


class Ctx:
    """What a command needs: parsed arguments, output mode, and a lazily opened client."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.json = bool(getattr(args, "json", False))
        self._client: Any = None
        self._file: dict[str, Any] | None = None

    def _setting(self, flag: str, env: str, key: str) -> str | None:
        value = getattr(self.args, flag, None) or os.environ.get(env)
        if value:
            return str(value)
        if self._file is None:
            self._file = _read_config_file()
        v = self._file.get(key)
        return str(v) if v else None

    @property
    def server(self) -> str:
        return self._setting("server", "FETCHML_SERVER", "server") or DEFAULT_SERVER

    @property
    def client(self) -> Any:
        if self._client is None:
            from ..client import Client

            key = self._setting("api_key", "FETCHML_API_KEY", "api_key")
            if not key:
                raise AuthenticationFailed(
                    "no API key: pass --api-key, set FETCHML_API_KEY, or run `make dev-up`",
                    f"make dev-up writes {config_path()}",
                )
            quiet = self.json or getattr(self.args, "quiet", False)
            server = self.server
            self._client = Client(
                server,
                key,
                ca=self._setting("ca", "FETCHML_CA", "ca") if server.startswith("wss:") else None,
                on_progress=None if quiet else _progress,
                on_log=None if quiet else _log,
            )
            self._client.connect()
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _progress(message: str) -> None:
    print(f"  … {message}", file=sys.stderr, flush=True)


def _log(chunk: bytes) -> None:
    sys.stderr.write(chunk.decode("utf-8", errors="replace"))
    sys.stderr.flush()


def common_options() -> argparse.ArgumentParser:
    """Options every command takes, before or after its name."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection and output")
    g.add_argument("--server", default=argparse.SUPPRESS, help=f"agent WebSocket URL (default {DEFAULT_SERVER})")
    g.add_argument("--api-key", dest="api_key", default=argparse.SUPPRESS, help="API key (or FETCHML_API_KEY)")
    g.add_argument("--ca", default=argparse.SUPPRESS, help="CA bundle to verify a wss:// agent (or FETCHML_CA)")
    g.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON document")
    return p


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, sized without importing shutil (argparse makes one per added argument)."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None,
                 **kwargs: Any) -> None:
        if width is None:
            try:
                width = int(os.environ.get("COLUMNS") or os.get_terminal_size(1).columns)
            except (OSError, ValueError):
                width = 80
            width -= 2
        super().__init__(prog, indent_increment, max_help_position, width, **kwargs)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def print_help(self, file: Any = None) -> None:
        # argparse would swallow a closed pipe here; main() ends quietly on it instead.
        (file or sys.stdout).write(self.format_help())

    def error(self, message: str) -> Any:  # usage errors: exit 2 with a hint, no traceback
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}\nRun `{self.prog} --help` for details.", file=sys.stderr)
        raise SystemExit(2)


class _LazyParsers(dict[str, Any]):
    """``name -> parser`` where a parser is built on first lookup (argparse looks up only the chosen one)."""

    def __init__(self, build: Callable[[str], argparse.ArgumentParser]) -> None:
        super().__init__()
        self._build = build

    def __getitem__(self, name: str) -> argparse.ArgumentParser:
        value = super().__getitem__(name)
        if not isinstance(value, argparse.ArgumentParser):
            value = self._build(name)
            super().__setitem__(name, value)
        return value

    def get(self, name: str, default: Any = None) -> Any:
        return self[name] if name in self else default

    def values(self) -> Any:
        return [self[name] for name in self]

    def items(self) -> Any:
        return [(name, self[name]) for name in self]


class Commands(argparse._SubParsersAction):  # type: ignore[type-arg]
    """The sub-commands of ``ml`` or ``ml jupyter``, declared with :meth:`command`, built on use.

    Building the ~40 parsers of ``ml`` took longer than the rest of a short command; ``--help``
    lists every command from its one-line help without building any.
    """

    common: argparse.ArgumentParser  # the options every command takes (set by :func:`_commands`)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._specs: dict[str, tuple[Callable[[Ctx], int | None], Callable[[Any], None] | None, dict[str, Any]]] = {}
        self._name_parser_map = self.choices = _LazyParsers(self._build)  # type: ignore[assignment]

    def command(self, name: str, func: Callable[[Ctx], int | None], arguments: Callable[[Any], None] | None = None,
                *, help: str, description: str | None = None) -> None:
        """Declare ``name``: ``arguments(parser)`` adds its arguments when it is built; ``func(ctx)`` runs it."""
        self._choices_actions.append(self._ChoicesPseudoAction(name, (), help))
        self._specs[name] = (func, arguments, {"description": description or help[:1].upper() + help[1:] + "."})
        dict.__setitem__(self._name_parser_map, name, None)

    def group(self, name: str, *, help: str, description: str, dest: str, metavar: str, what: str) -> Commands:
        """Declare ``name`` as a command with sub-commands of its own; return them to declare on."""
        self._choices_actions.append(self._ChoicesPseudoAction(name, (), help))
        p = self._parser_class(prog=f"{self._prog_prefix} {name}", parents=[self.common], description=description)
        dict.__setitem__(self._name_parser_map, name, p)
        return _commands(p, self.common, dest=dest, metavar=metavar, help=what)

    def _build(self, name: str) -> argparse.ArgumentParser:
        func, arguments, kwargs = self._specs[name]
        p = self._parser_class(prog=f"{self._prog_prefix} {name}", parents=[self.common], **kwargs)
        if arguments is not None:
            arguments(p)
        p.set_defaults(func=func)
        return p


def _commands(parser: argparse.ArgumentParser, common: argparse.ArgumentParser, **kwargs: Any) -> Commands:
    sub = parser.add_subparsers(action=Commands, parser_class=_Parser, **kwargs)
    assert isinstance(sub, Commands)
    sub.common = common
    sub.required = True
    return sub


def build_parser() -> argparse.ArgumentParser:
    """The whole ``ml`` parser; each command's own parser is built when it is looked up."""
    common = common_options()
    parser = _Parser(prog="ml", description="FetchML Jupyter: isolated Jupyter workspaces linked to experiments.",
                     parents=[common])
    top = _commands(parser, common, dest="command", metavar="COMMAND", help="what to do (ml COMMAND --help for each)")
    jupyter = top.group("jupyter", help="manage Jupyter workspaces", dest="verb", metavar="VERB",
                        description="Create, run, share and inspect Jupyter workspaces.",
                        what="what to do with workspaces (ml jupyter VERB --help for each)")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(jupyter, top)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``ml`` with ``argv`` (default ``sys.argv[1:]``) and return its exit code (:data:`EXIT_CODES`)."""
    try:
        try:
            code = _run(argv)
        except SystemExit as exit_:  # argparse: --help printed, or a usage error
            code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
        # A reader that went away shows up here, not in the interpreter's last flush.
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # `ml ... | head`: the reader has what it wanted; stop quietly, as Unix tools do.
        _discard_output()
        return EXIT_BROKEN_PIPE


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    ctx = Ctx(args)
    func: Callable[[Ctx], int | None] = args.func
    try:
        try:
            return int(func(ctx) or 0)
        except MfaRequired:
            # access.mfa: an admin operation without a second factor. Ask for it once, elevate,
            # and run the command again (ml auth elevate does the same on its own).
            from .auth import elevate_and_retry

            if getattr(args, "auth_verb", None) or not elevate_and_retry(ctx):
                raise
            return int(func(ctx) or 0)
    except FetchmlError as exc:
        return report_error(ctx, exc)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        try:
            ctx.close()
        except Exception:
            pass


def _discard_output() -> None:
    """Point stdout and stderr at /dev/null so that nothing (not even the exit's flush) writes to the closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (OSError, ValueError):
            pass
    os.close(devnull)


def report_error(ctx: Ctx, exc: FetchmlError) -> int:
    if ctx.json:
        from .output import emit_json

        emit_json({"ok": False, **exc.to_dict()})
    label = "error" if not isinstance(exc, AgentUnreachable) else "cannot connect"
    print(f"ml: {label}: {exc.message}", file=sys.stderr)
    if exc.details:
        print(f"    {exc.details}", file=sys.stderr)
    return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
