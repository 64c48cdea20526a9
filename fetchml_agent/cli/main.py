"""``ml``: the command line data scientists use.

Where it finds the agent, first match wins: ``--server``/``--api-key``/``--ca`` flags, then
``FETCHML_SERVER``/``FETCHML_API_KEY``/``FETCHML_CA``, then the config file
(``$FETCHML_CONFIG``, else ``$XDG_CONFIG_HOME/fetchml/ml.yaml``, else ``~/.config/fetchml/ml.yaml``)
that ``make dev-up`` writes.

Exit codes: 0 ok, 1 server error, 2 usage or invalid input, 3 authentication or permission,
4 not found / conflict / wrong state, 5 policy denied, 6 approval required, 7 agent or backend
unreachable, 8 not enough resources, 9 the audit chain (or an export of it) does not verify
(the table is in :mod:`fetchml_agent.errors`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import AgentUnreachable, AuthenticationFailed, FetchmlError, InvalidArgument, MfaRequired

__all__ = ["Ctx", "main", "build_parser", "COMMAND_MODULES"]

DEFAULT_SERVER = "ws://127.0.0.1:9101/ws"

# Modules that add commands: each has ``register(jupyter, top, common)``.
COMMAND_MODULES = [
    "fetchml_agent.cli.workspaces",
    "fetchml_agent.cli.operations",
    "fetchml_agent.cli.packages",
    "fetchml_agent.cli.experiments",
    "fetchml_agent.cli.auth",
    "fetchml_agent.cli.governance",
]


def config_path() -> Path:
    explicit = os.environ.get("FETCHML_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "fetchml" / "ml.yaml"


def _read_config_file() -> dict[str, Any]:
    path = config_path()
    if not path.is_file():
        return {}
    import yaml

    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidArgument(f"{path}: cannot read ml's config file ({exc})", "fix or delete it") from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"{path}: expected keys server, api_key, ca")
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
    g.add_argument("--ca", default=argparse.SUPPRESS, help="CA bundle to verify a wss:// agent")
    g.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON document")
    return p


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # usage errors: exit 2 with a hint, no traceback
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}\nRun `{self.prog} --help` for details.", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    common = common_options()
    parser = _Parser(prog="ml", description="FetchML Jupyter: isolated Jupyter workspaces linked to experiments.",
                     parents=[common])
    top = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    top.required = True
    jp = top.add_parser("jupyter", help="manage Jupyter workspaces", parents=[common],  # type: ignore[list-item]
                        description="Create, run, share and inspect Jupyter workspaces.")
    jupyter = jp.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    jupyter.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(jupyter, top, common)
    return parser


def main(argv: list[str] | None = None) -> int:
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
        return 130
    finally:
        try:
            ctx.close()
        except Exception:
            pass


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
