"""``fetchml-agent``: run the agent, and the operator's small tools.

    fetchml-agent serve --config agent.yaml
    fetchml-agent new-key                 # a fresh random API key and its api_key_verifier
    fetchml-agent hash-key KEY            # the api_key_verifier of KEY for agent.yaml (- reads stdin)
    fetchml-agent check-config --config agent.yaml
    fetchml-agent convert-keys --config agent.yaml   # api_key_sha256 -> api_key_verifier, in place

``serve`` checks the configuration and ``data_dir``, then binds ``listen``, and only then starts
the agent and says it is serving: every start-up failure is one message and a non-zero exit.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from .errors import FetchmlError

__all__ = ["main"]


def _serve(args: argparse.Namespace) -> int:
    import asyncio

    import uvicorn

    from .agent import Agent, check_privilege
    from .config import load_config
    from .datadir import prepare_data_dir
    from .protocol import PREAUTH_MAX_FRAME
    from .server.app import build_app
    from .server.index_listener import IndexListener
    from .server.listen import bind_listeners
    from .server.metrics import MetricsListener
    from .server.wsproto import FetchmlWebSocketProtocol

    config = load_config(args.config)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    prepare_data_dir(config.data_dir)
    check_privilege(config)
    sockets = bind_listeners(config.host, config.port, config_name=str(args.config))
    agent = Agent(config)
    # Workspaces that cannot reach the agent's loopback (docker, nomad.index) get an index-only
    # listener: started last, stopped first.
    listener = IndexListener()
    agent.services.hooks.start.append(listener.start)
    agent.services.hooks.shutdown.insert(0, listener.stop)
    # metrics.listen: a listener serving only /metrics (docs/observe.md).
    scrape = MetricsListener()
    agent.services.hooks.start.append(scrape.start)
    agent.services.hooks.shutdown.insert(0, scrape.stop)
    app = build_app(agent)

    class AgentServer(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            # Subscribers (ml status --watch) wait for the next change: end them first, or the
            # graceful shutdown waits for each one's next heartbeat.
            agent.live.close()
            await super().shutdown(sockets)

    server = AgentServer(
        uvicorn.Config(
            app,
            ws=FetchmlWebSocketProtocol,
            ws_ping_interval=20.0,
            # Until a connection presents a valid key; the transport raises it afterwards.
            ws_max_size=PREAUTH_MAX_FRAME,
            ws_per_message_deflate=False,
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
    asyncio.run(server.serve(sockets=sockets))
    return 0 if server.started else 1


def _check(args: argparse.Namespace) -> int:
    from .agent import check_privilege
    from .config import load_config
    from .datadir import prepare_data_dir

    config = load_config(args.config)
    prepare_data_dir(config.data_dir, create=False)
    check_privilege(config)
    print(
        f"{args.config}: ok (runtime {config.runtime}, listen {config.host}:{config.port}, "
        f"data_dir {config.data_dir}, {len(config.users)} users)"
    )
    return 0


def _hash_key(args: argparse.Namespace) -> int:
    from .auth import api_key_verifier

    key = sys.stdin.readline().strip() if args.key == "-" else args.key
    if not key:
        print("fetchml-agent: hash-key: the key is empty", file=sys.stderr)
        return 2
    print(api_key_verifier(key))
    return 0


def _new_key(args: argparse.Namespace) -> int:
    from .auth import VERIFIER_FIELD, api_key_verifier, new_api_key

    key = new_api_key()
    print(f"api_key: {key}\n{VERIFIER_FIELD}: {api_key_verifier(key)}")
    return 0


def _convert_keys(args: argparse.Namespace) -> int:
    from .auth import convert_key_file

    path, count = convert_key_file(args.config)
    if count:
        print(f"{path}: replaced api_key_sha256 with api_key_verifier for {count} user(s); the API keys are unchanged")
    else:
        print(f"{path}: no api_key_sha256 to convert")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fetchml-agent", description="The FetchML Jupyter agent.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("serve", help="run the agent")
    p.add_argument("--config", required=True, help="path of agent.yaml")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=_serve)
    p = sub.add_parser("check-config", help="validate agent.yaml and its data_dir, and exit")
    p.add_argument("--config", required=True, help="path of agent.yaml")
    p.set_defaults(func=_check)
    p = sub.add_parser("hash-key", help="print the api_key_verifier of KEY, for agent.yaml")
    p.add_argument("key", help="the API key ('-' reads it from standard input, keeping it out of ps)")
    p.set_defaults(func=_hash_key)
    p = sub.add_parser("new-key", help="make a random API key and print it with its api_key_verifier")
    p.set_defaults(func=_new_key)
    p = sub.add_parser(
        "convert-keys", help="replace every api_key_sha256 in agent.yaml with its api_key_verifier, in place"
    )
    p.add_argument("--config", required=True, help="path of agent.yaml")
    p.set_defaults(func=_convert_keys)
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
