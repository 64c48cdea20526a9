"""``fetchml-agent``: run the agent, and the operator's small tools.

    fetchml-agent serve --config agent.yaml
    fetchml-agent hash-key KEY            # the api_key_sha256 value for agent.yaml
    fetchml-agent new-key                 # a fresh random API key and its hash
    fetchml-agent check-config --config agent.yaml
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import secrets
import sys

from .errors import FetchmlError

__all__ = ["main"]


def _serve(args: argparse.Namespace) -> int:
    import asyncio

    import uvicorn

    from .agent import Agent
    from .config import load_config
    from .server.app import build_app
    from .server.index_listener import IndexListener

    config = load_config(args.config)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    agent = Agent(config)
    # Workspaces that cannot reach the agent's loopback (docker, nomad.index) get an index-only
    # listener: started last, stopped first.
    listener = IndexListener()
    agent.services.hooks.start.append(listener.start)
    agent.services.hooks.shutdown.insert(0, listener.stop)
    app = build_app(agent)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            ws="websockets-sansio",
            ws_ping_interval=20.0,
            ws_max_size=32 * 1024 * 1024,
            log_level="warning",
            access_log=False,
            ssl_certfile=str(config.tls_cert) if config.tls_cert else None,
            ssl_keyfile=str(config.tls_key) if config.tls_key else None,
            lifespan="on",
            timeout_graceful_shutdown=10,
        )
    )
    logging.getLogger("fetchml.agent").info(
        "fetchml-agent %s serving %s (runtime %s, data %s)", agent.version, config.ws_url, config.runtime, config.data_dir
    )
    asyncio.run(server.serve())
    return 0 if server.started else 1


def _check(args: argparse.Namespace) -> int:
    from .config import load_config

    config = load_config(args.config)
    print(f"{args.config}: ok (runtime {config.runtime}, listen {config.host}:{config.port}, {len(config.users)} users)")
    return 0


def _hash_key(args: argparse.Namespace) -> int:
    print(hashlib.sha256(args.key.encode("utf-8")).hexdigest())
    return 0


def _new_key(args: argparse.Namespace) -> int:
    key = "fml_" + secrets.token_urlsafe(32)
    print(f"api_key: {key}\napi_key_sha256: {hashlib.sha256(key.encode()).hexdigest()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fetchml-agent", description="The FetchML Jupyter agent.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("serve", help="run the agent")
    p.add_argument("--config", required=True, help="path of agent.yaml")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=_serve)
    p = sub.add_parser("check-config", help="validate agent.yaml and exit")
    p.add_argument("--config", required=True)
    p.set_defaults(func=_check)
    p = sub.add_parser("hash-key", help="print the api_key_sha256 of KEY")
    p.add_argument("key")
    p.set_defaults(func=_hash_key)
    p = sub.add_parser("new-key", help="make a random API key and print it with its hash")
    p.set_defaults(func=_new_key)
    p = sub.add_parser(
        "nomad-job", add_help=False, help="render a Nomad job without an agent (nomad-job render --help)"
    )
    p.add_argument("argv", nargs=argparse.REMAINDER)
    p.set_defaults(func=_nomad_job)
    return parser


def _nomad_job(args: argparse.Namespace) -> int:
    from .nomad.cli import render_job_cli

    return render_job_cli(args.argv)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except FetchmlError as exc:
        print(f"fetchml-agent: {exc.message}", file=sys.stderr)
        if exc.details:
            print(exc.details, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
