"""``fetchml-agent nomad-job render ...``: print a Nomad JSON job without an agent.

The rendering goes through :class:`~fetchml_agent.nomad.render.JobRenderer`, the same code path
as the ``nomad`` runtime, with the same refusals (images, volumes, maxima). A password or token
given on the command line never appears in the job: the command prints the Nomad Variable the
job reads them from (with ``--var-file`` it writes that Variable's specification to a file
readable only by its owner, for ``nomad var put -in json @FILE``; otherwise it prints the
``nomad var put`` command on stderr).

Examples::

    fetchml-agent nomad-job render jupyter-workspace --name ws1 --cpu 4 --memory 8g --gpu 1 \\
        --image quay.io/jupyter/scipy-notebook:latest --password secret
    fetchml-agent nomad-job render experiment-run --run-id r42 --workspace ws1 --notebook train.ipynb
    fetchml-agent nomad-job render fetchml-agent          # nomad.agent_job: image, data volume, port
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import yaml

from fetchml_agent.errors import EXIT_USAGE, FetchmlError, InvalidArgument
from fetchml_agent.nomad.render import (
    AgentJobRequest,
    JobRenderer,
    WorkspaceJobRequest,
    jupyter_secret_items,
    secret_variable_path,
)
from fetchml_agent.nomad.schema import AGENT_IMAGE, NomadSettings
from fetchml_agent.runtimes.base import Resources, RunSpec
from fetchml_agent.units import parse_cpu, parse_size_mb

__all__ = ["build_parser", "render_job_cli"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fetchml-agent nomad-job",
        description="Render FetchML's Nomad jobs as JSON (for `nomad job run -json` or POST /v1/jobs).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser("render", help="print a rendered job on stdout")
    kinds = render.add_subparsers(dest="template", required=True, metavar="TEMPLATE")

    def common(p: argparse.ArgumentParser, image_help: str = "container image (must match nomad.allowed_images)") -> None:
        p.add_argument(
            "--config",
            type=Path,
            help="agent.yaml whose `nomad:` section applies (default: built-in defaults)",
        )
        p.add_argument("--image", help=image_help)

    def resources(p: argparse.ArgumentParser) -> None:
        p.add_argument("--cpu", help="CPU cores, e.g. 4 or 0.5")
        p.add_argument("--memory", help="memory, e.g. 8g or 512m")
        p.add_argument("--gpu", type=int, default=0, help="number of NVIDIA GPUs")
        p.add_argument("--gpu-type", help="a GPU model (full device name) or MIG profile such as 3g.40gb")
        p.add_argument("--disk", help="ephemeral disk, e.g. 20g")
        p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="environment variable")

    ws = kinds.add_parser("jupyter-workspace", help="a workspace (service job)")
    common(ws)
    resources(ws)
    ws.add_argument("--name", required=True, help="workspace name")
    ws.add_argument("--owner", default="", help="owner recorded in the job's meta")
    ws.add_argument("--memory-max", help="memory the task may burst to (needs memory oversubscription)")
    ws.add_argument(
        "--volume", help="host/CSI volume for the workspace files (default: nomad.workspace_volume)"
    )
    ws.add_argument(
        "--password", help="Jupyter password (hashed; stored in a Nomad Variable, never in the job)"
    )
    ws.add_argument("--token", help="Jupyter token (default: a new random token; stored in a Nomad Variable)")
    ws.add_argument("--var-file", type=Path, help="write the Variable specification here (mode 0600)")

    run = kinds.add_parser("experiment-run", help="an experiment run (batch job)")
    common(run)
    resources(run)
    run.add_argument("--run-id", required=True)
    run.add_argument("--workspace", required=True)
    target = run.add_mutually_exclusive_group(required=True)
    target.add_argument("--notebook", help="notebook path inside the snapshot (run by papermill)")
    target.add_argument("--script", help="Python script path inside the snapshot (run by python3)")
    run.add_argument("--owner", default="")
    run.add_argument("--experiment", default="")
    run.add_argument("--snapshot-volume", help="host volume holding the run's snapshot")
    run.add_argument("--snapshot-volume-type", choices=["host", "csi"], default="host")
    run.add_argument("--snapshot-path", default="", help="directory of the snapshot inside the volume")
    run.add_argument("--param", action="append", default=[], metavar="KEY=JSON", help="run parameter")
    run.add_argument("--timeout", type=float, default=3600.0, help="seconds")
    run.add_argument("--retries", type=int, default=0)

    agent = kinds.add_parser(
        "fetchml-agent", help="the agent itself (service job)",
        description="The agent's own job. Its image and data volume are the agent's settings "
                    "(nomad.agent_job), not held to the workspace policy (nomad.allowed_images, "
                    "nomad.allowed_host_volumes).")
    common(agent, f"the agent's image (default: nomad.agent_job.image, {AGENT_IMAGE})")
    agent.add_argument("--data-volume", help="host volume for the agent's data directory (default: "
                                             "nomad.agent_job.data_volume, fetchml-agent)")
    agent.add_argument("--port", type=int, help="the API's static port (default: nomad.agent_job.port, 9101)")
    agent.add_argument("--health-path", default="/api/v1/health", help="the health check's path")
    return parser


def _settings(args: argparse.Namespace, config: Mapping[str, Any] | None) -> NomadSettings:
    section: Mapping[str, Any] | None = config
    if section is None and args.config is not None:
        try:
            data = yaml.safe_load(args.config.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise InvalidArgument(f"cannot read {args.config}: {exc}") from None
        section = data.get("nomad") if isinstance(data, dict) else None
        if section is None:
            raise InvalidArgument(f"{args.config} has no `nomad:` section")
    section = dict(section or {})
    section.setdefault("address", "http://127.0.0.1:4646")
    return NomadSettings.from_config(section)


def _env(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise InvalidArgument(f"--env expects KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def _resources(args: argparse.Namespace) -> Resources:
    try:
        return Resources(
            cpu=parse_cpu(args.cpu, "--cpu") if args.cpu is not None else None,
            memory_mb=parse_size_mb(args.memory, "--memory") if args.memory is not None else None,
            gpu=args.gpu or (1 if args.gpu_type else 0),
            disk_mb=parse_size_mb(args.disk, "--disk") if args.disk is not None else None,
            gpu_type=args.gpu_type,
        )
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None


def _hash_password(password: str) -> str:
    from jupyter_server.auth import passwd  # local: only this command hashes passwords

    return str(passwd(password))


def _workspace(args: argparse.Namespace, renderer: JobRenderer, err: TextIO) -> dict[str, Any]:
    memory_max = None
    if args.memory_max is not None:
        try:
            memory_max = parse_size_mb(args.memory_max, "--memory-max")
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
    job = renderer.workspace(
        WorkspaceJobRequest(
            name=args.name,
            owner=args.owner,
            image=args.image,
            resources=_resources(args),
            memory_max_mb=memory_max,
            env=_env(args.env),
            volume_source=args.volume,
        )
    )
    job_id = job["Job"]["ID"]
    token = args.token or secrets.token_hex(24)
    password_hash = _hash_password(args.password) if args.password else None
    items = jupyter_secret_items(token, password_hash)
    path = secret_variable_path(job_id)
    namespace = renderer.settings.namespace
    spec = {"Namespace": namespace, "Path": path, "Items": items}
    if args.var_file is not None:
        fd = os.open(args.var_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(spec, f, indent=2)
        print(
            f"Jupyter's credentials for {job_id} were written to {args.var_file}; store them before "
            f"running the job:\n  nomad var put -namespace {namespace} -in json @{args.var_file}",
            file=err,
        )
    else:
        print(
            f"The job reads Jupyter's credentials from Nomad Variable {path}; store them before running it:\n"
            f"  nomad var put -namespace {namespace} {path} jupyter_config={shlex.quote(items['jupyter_config'])}",
            file=err,
        )
    if not args.token and not args.password:
        print(
            "No --token or --password was given: a random token was generated (it is in the Variable).",
            file=err,
        )
    return job


def _run(args: argparse.Namespace, renderer: JobRenderer) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in args.param:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise InvalidArgument(f"--param expects KEY=JSON, got {pair!r}")
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return renderer.run(
        RunSpec(
            run_id=args.run_id,
            workspace=args.workspace,
            notebook=args.notebook or args.script,
            kind="notebook" if args.notebook else "script",
            owner=args.owner,
            experiment_id=args.experiment,
            image=args.image,
            snapshot_volume=args.snapshot_volume,
            snapshot_volume_type=args.snapshot_volume_type,
            snapshot_path=args.snapshot_path,
            parameters=params,
            timeout=args.timeout,
            retries=args.retries,
            resources=_resources(args),
            env=_env(args.env),
        )
    )


def _agent_note(job: dict[str, Any], namespace: str, err: TextIO) -> None:
    """Where the agent's job reads its agent.yaml from, on stderr."""
    job_id = job["Job"]["ID"]
    port = job["Job"]["TaskGroups"][0]["Networks"][0]["ReservedPorts"][0]["Value"]
    print(
        f"The job reads the agent's agent.yaml (listen: 0.0.0.0:{port}) from Nomad Variable "
        f"{secret_variable_path(job_id)}; store it before running the job:\n"
        f"  nomad var put -namespace {namespace} {secret_variable_path(job_id)} agent_yaml=@agent.yaml",
        file=err,
    )


def render_job_cli(
    argv: list[str],
    config: Mapping[str, Any] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run ``fetchml-agent nomad-job ARGV``; returns the exit code.

    ``config`` is the agent's ``nomad:`` section when the caller already loaded it (it wins over
    ``--config``). The job goes to ``out`` (stdout), messages to ``err`` (stderr). Errors print
    their message and details and return the error's CLI exit code; usage errors return 2.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        settings = _settings(args, config)
        renderer = JobRenderer(settings)
        if args.template == "jupyter-workspace":
            job = _workspace(args, renderer, err)
        elif args.template == "experiment-run":
            job = _run(args, renderer)
        else:
            job = renderer.agent(
                AgentJobRequest(
                    image=args.image,
                    data_volume=args.data_volume,
                    port=args.port,
                    health_path=args.health_path,
                )
            )
            _agent_note(job, renderer.settings.namespace, err)
    except FetchmlError as exc:
        print(f"error: {exc.message}", file=err)
        if exc.details:
            print(f"  {exc.details}", file=err)
        return exc.exit_code
    json.dump(job, out, indent=2)
    out.write("\n")
    return 0
