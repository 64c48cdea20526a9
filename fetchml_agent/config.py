"""The agent's configuration: one YAML file, validated with cerberus at start-up.

``fetchml-agent serve --config agent.yaml``. Errors name the file and the key. This module is the
only place that reads ``os.environ`` for the agent (the seed's ``FETCHML_JUPYTER_*`` variables).
Sections owned by other concerns (``package_management``, ``docker``, ``nomad``, ``experiments``,
``webhooks``, ``access``, ``retention``, ``culling``, ``quotas``, ``warm_pool``, ``usage``, ``metrics``) have
their schemas declared next to the code that uses them and are merged in here,
so this loader sits above them all; the validated values (:class:`AgentConfig`, :class:`User`)
live in :mod:`fetchml_agent.settings`, which every layer may import (with :class:`ConfigError`).
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from cerberus import Validator

from .access.config import ACCESS_SCHEMA
from .access.networks import parse_network
from .auth import LEGACY_KEY_FIELD, LEGACY_KEY_REFUSAL, VERIFIER_FIELD, legacy_key_hint
from .experiments.config import AGENT_SECTION_SCHEMA as EXPERIMENTS_SECTION_SCHEMA
from .governance.retention import RETENTION_SCHEMA
from .nomad.schema import NOMAD_CONFIG_SCHEMA
from .policy.schema import AGENT_SECTION_SCHEMA as POLICY_SECTION_SCHEMA
from .runtimes.docker_schema import DOCKER_SECTION_SCHEMA
from .service.capacity.settings import CULLING_SCHEMA, QUOTAS_SCHEMA, WARM_POOL_SCHEMA
from .settings import AgentConfig, ConfigError, User, format_errors
from .usage.config import METRICS_SCHEMA, USAGE_SCHEMA
from .webhooks import WEBHOOK_SCHEMA

__all__ = ["AgentConfig", "ConfigError", "SCHEMA", "User", "load_config", "parse_config", "DEFAULT_LISTEN"]

DEFAULT_LISTEN = "127.0.0.1:9101"
DEFAULT_PORT_BASE = 8888
DEFAULT_MAX_REQUEST_BODY = 1024 * 1024
ENV_KEYS = ("FETCHML_JUPYTER_BLOCKED_PACKAGES", "FETCHML_JUPYTER_STARTUP_BLOCKED_PACKAGES")

_HEX64 = r"^[0-9a-f]{64}\Z"
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}\Z"
_LISTEN = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(?P<port>\d{1,5})\Z")


def _listen_ok(field: str, value: str, error: Any) -> None:
    m = _LISTEN.match(value or "")
    if not m or not 0 < int(m.group("port")) < 65536:
        error(field, "must be HOST:PORT, e.g. 127.0.0.1:9101")


def _network_ok(field: str, value: str, error: Any) -> None:
    try:
        parse_network(value)
    except ValueError as exc:
        error(field, str(exc))


#: Sections owned by other concerns, validated when present (absent, their code's defaults apply).
_SECTIONS: dict[str, dict[str, Any]] = {
    "package_management": POLICY_SECTION_SCHEMA,
    "nomad": {"type": "dict", "schema": NOMAD_CONFIG_SCHEMA},
    "docker": DOCKER_SECTION_SCHEMA,
    "experiments": EXPERIMENTS_SECTION_SCHEMA,
    "access": ACCESS_SCHEMA,  # who may reach JupyterLab: sessions, MFA, allowlists (docs/access.md)
    "retention": RETENTION_SCHEMA,  # how long records are kept (docs/audit.md)
    # docs/capacity.md and docs/warm-pool.md: idle culling, per-user and per-team quotas, warm pools.
    "culling": CULLING_SCHEMA,
    "quotas": QUOTAS_SCHEMA,
    "warm_pool": WARM_POOL_SCHEMA,
    "usage": USAGE_SCHEMA,  # the usage history's sampler (docs/observe.md)
    "metrics": METRICS_SCHEMA,  # the Prometheus endpoint (docs/observe.md)
}


SCHEMA: dict[str, Any] = {
    "listen": {"type": "string", "default": DEFAULT_LISTEN, "check_with": _listen_ok},
    "public_url": {"type": "string", "nullable": True, "default": None, "regex": r"^https?://.+"},
    "data_dir": {"type": "string", "default": "./.fetchml", "empty": False},
    "runtime": {"type": "string", "default": "local", "allowed": ["local", "docker", "nomad"]},
    "tls": {
        "type": "dict",
        "nullable": True,
        "default": None,
        "schema": {
            "cert": {"type": "string", "required": True, "empty": False},
            "key": {"type": "string", "required": True, "empty": False},
        },
    },
    "users": {
        "type": "list",
        "default": [],
        "schema": {
            "type": "dict",
            "schema": {
                "name": {"type": "string", "required": True, "regex": _NAME},
                "role": {"type": "string", "default": "user", "allowed": ["admin", "user"]},
                VERIFIER_FIELD: {"type": "string", "required": True, "regex": _HEX64},
                "teams": {"type": "list", "default": [], "schema": {"type": "string", "regex": _NAME}},
                # Read by fetchml_agent/access (docs/access.md): how JupyterLab shows the user, and
                # the networks this user may come from (on top of access.allowed_networks).
                "display_name": {"type": "string", "nullable": True, "default": None, "maxlength": 128},
                "allowed_networks": {"type": "list", "nullable": True, "default": None,
                                     "schema": {"type": "string", "check_with": _network_ok}},
            },
        },
    },
    "teams": {
        "type": "list",
        "default": [],
        "schema": {
            "type": "dict",
            "schema": {
                "name": {"type": "string", "required": True, "regex": _NAME},
                "members": {"type": "list", "default": [], "schema": {"type": "string", "regex": _NAME}},
            },
        },
    },
    "local": {
        "type": "dict",
        "default": {},
        "schema": {
            "port_base": {"type": "integer", "min": 1024, "max": 65000, "default": DEFAULT_PORT_BASE},
            "start_timeout": {"type": "number", "min": 1, "default": 120},
            "stop_grace": {"type": "number", "min": 0, "default": 5},
            "workspace_roots": {"type": "list", "default": [], "schema": {"type": "string"}},
            "cgroup": {"type": "boolean", "default": True},
            # runtimes/local/users.py: each owner's workspaces as an OS user of their own.
            # unset: one person's workspaces only; none: shared knowingly; users: an OS user per owner.
            "isolation": {"type": "string", "nullable": True, "default": None, "allowed": ["none", "users"]},
            "workspaces_dir": {"type": "string", "nullable": True, "default": None, "empty": False},
            "python": {"type": "string", "nullable": True, "default": None, "empty": False},
            "uid_range": {"type": "list", "default": [61000, 61999], "minlength": 2, "maxlength": 2,
                          "schema": {"type": "integer", "min": 1000, "max": 2**31 - 2}},
            "user_prefix": {"type": "string", "default": "fml-", "regex": r"[a-z][a-z0-9_-]{0,15}\Z"},
            # With isolation: users, the agent's nftables table keyed by uid (docs/security.md).
            "firewall": {"type": "boolean", "default": True},
            "firewall_table": {"type": "string", "default": "fetchml_local", "regex": r"[A-Za-z][A-Za-z0-9_]{0,31}\Z"},
            "index_port": {"type": "integer", "nullable": True, "default": None, "min": 1024, "max": 65535},
            "dns": {"type": "list", "default": [], "schema": {"type": "string"}},
            "allow": {"type": "list", "default": [], "schema": {"type": "dict", "schema": {
                "addr": {"type": "string", "required": True},
                "port": {"type": "integer", "nullable": True, "default": None, "min": 1, "max": 65535},
                "proto": {"type": "string", "default": "tcp", "allowed": ["tcp", "udp"]}}}},
        },
    },
    "package_index": {
        "type": "dict",
        "default": {},
        "schema": {
            "upstream": {"type": "string", "nullable": True, "default": None, "regex": r"^(https?|file)://.+"},
            "cache_dir": {"type": "string", "nullable": True, "default": None},
            # PEM CA certificates trusted for an https upstream besides the system's store (a
            # TLS-intercepting proxy's CA, a private index's); SSL_CERT_FILE/SSL_CERT_DIR work too.
            "ca_bundle": {"type": "string", "nullable": True, "default": None, "empty": False},
        },
    },
    "templates_dir": {"type": "string", "nullable": True, "default": None},
    "webhooks": {"type": "list", "default": [], "schema": {"type": "dict", "schema": WEBHOOK_SCHEMA}},
    "limits": {
        "type": "dict",
        "default": {},
        "schema": {
            "max_concurrent_starts": {"type": "integer", "min": 1, "default": 4},
            "max_workspaces": {"type": "integer", "min": 1, "default": 1000},
            # Requests: the largest body an operation takes (bytes; an operation may declare more),
            # and what one client address may do before it has a valid key (docs/security.md).
            "max_request_body": {"type": "integer", "min": 64 * 1024, "default": DEFAULT_MAX_REQUEST_BODY},
            "max_connections_per_peer": {"type": "integer", "min": 1, "default": 64},
            "auth_failures_per_minute": {"type": "integer", "min": 1, "default": 10},
        },
    },
}


def _refuse_legacy_keys(document: dict[str, Any], where: str) -> None:
    """``api_key_sha256`` logs in as the key it hashes: refuse it with the way to convert."""
    users = document.get("users")
    if not isinstance(users, list):
        return
    legacy = [
        f"users[{i}] ({u.get('name', '?')})"
        for i, u in enumerate(users)
        if isinstance(u, dict) and LEGACY_KEY_FIELD in u
    ]
    if legacy:
        raise ConfigError(
            f"{where}: {', '.join(legacy)}: {LEGACY_KEY_REFUSAL}",
            legacy_key_hint(where if where != "<config>" else "agent.yaml"),
        )


def parse_config(document: Any, *, path: Path | None = None, environ: Mapping[str, str] | None = None) -> AgentConfig:
    """Validate a parsed YAML document. Raises ConfigError naming the file and every bad key."""
    where = str(path) if path else "<config>"
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError(f"{where}: the top level must be a mapping of keys", "see README.md for an example")
    _refuse_legacy_keys(document, where)
    schema = {**SCHEMA, **_SECTIONS}
    v = Validator(schema, purge_unknown=False)
    if not v.validate(document):
        lines = format_errors(v.errors)
        raise ConfigError(f"{where}: invalid configuration: " + "; ".join(lines), "\n".join(lines))
    doc = v.document
    if doc["runtime"] == "nomad" and not doc.get("nomad"):
        raise ConfigError(f"{where}: invalid configuration: runtime nomad needs a nomad: section", "at least nomad.address")
    m = _LISTEN.match(doc["listen"])
    assert m is not None
    base = path.parent if path else Path.cwd()
    data_dir = Path(doc["data_dir"]).expanduser()
    if not data_dir.is_absolute():
        data_dir = (base / data_dir).resolve()
    tls = doc.get("tls")

    def _rel(p: str) -> Path:
        q = Path(p).expanduser()
        return q if q.is_absolute() else (base / q).resolve()

    index = doc.get("package_index") or {}
    if index.get("ca_bundle"):
        bundle = _rel(index["ca_bundle"])
        try:
            ssl.create_default_context(cafile=str(bundle))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{where}: package_index.ca_bundle: {bundle} is not a readable PEM file of CA "
                              f"certificates ({getattr(exc, 'strerror', None) or exc})",
                              "name the PEM file of the CA that signs the upstream's (or the proxy's) certificate") from None
        index["ca_bundle"] = str(bundle)
    memberships: dict[str, set[str]] = {}
    for team in doc["teams"]:
        for member in team["members"]:
            memberships.setdefault(member, set()).add(team["name"])
    users = []
    seen: set[str] = set()
    verifiers: dict[str, str] = {}
    for i, u in enumerate(doc["users"]):
        if u["name"] in seen:
            raise ConfigError(f"{where}: users[{i}].name: duplicate user {u['name']!r}")
        seen.add(u["name"])
        verifier = u[VERIFIER_FIELD]
        if verifier in verifiers:
            raise ConfigError(
                f"{where}: users[{i}].{VERIFIER_FIELD}: {u['name']!r} has the same API key as {verifiers[verifier]!r}",
                "give every user a key of their own (fetchml-agent new-key)",
            )
        verifiers[verifier] = u["name"]
        teams = frozenset(u["teams"]) | frozenset(memberships.get(u["name"], ()))
        users.append(User(u["name"], u["role"], bytes.fromhex(verifier), teams))
    env = dict(environ if environ is not None else os.environ)
    return AgentConfig(
        path=path,
        host=m.group("host").strip("[]"),
        port=int(m.group("port")),
        data_dir=data_dir,
        runtime=doc["runtime"],
        tls_cert=_rel(tls["cert"]) if tls else None,
        tls_key=_rel(tls["key"]) if tls else None,
        users=users,
        raw=doc,
        environ={k: env[k] for k in ENV_KEYS if k in env},
    )


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> AgentConfig:
    """Read and validate ``path``. Raises ConfigError with the file name in the message."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such configuration file", "create it or pass --config PATH") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the configuration file: {exc.strerror}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{p}: not valid YAML{at}", str(getattr(exc, "problem", exc))) from None
    return parse_config(document, path=p.resolve(), environ=environ)
