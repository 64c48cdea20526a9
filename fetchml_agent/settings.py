"""The agent's validated configuration, as every layer sees it: :class:`AgentConfig` and
:class:`User`, and :class:`ConfigError` for a configuration (or a data directory) that is not usable.

The schema and the loader are :mod:`fetchml_agent.config` (which imports the section schemas of
every concern, so that nothing below it may import it); this module holds only the values, so the
runtimes, the services and the server can take them without depending on the loader.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InvalidArgument

__all__ = ["AgentConfig", "ConfigError", "User", "format_errors"]


class ConfigError(InvalidArgument):
    """The configuration file is missing, unreadable, not YAML, or fails its schema."""


@dataclass(frozen=True)
class User:
    """A user of agent.yaml; ``key_verifier`` is the 32-byte ``api_key_verifier`` (see :mod:`.auth`)."""

    name: str
    role: str
    key_verifier: bytes = field(repr=False)
    teams: frozenset[str] = frozenset()

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass
class AgentConfig:
    """The validated configuration; ``raw`` keeps every section as validated (defaults filled)."""

    path: Path | None
    host: str
    port: int
    data_dir: Path
    runtime: str
    tls_cert: Path | None
    tls_key: Path | None
    users: list[User]
    raw: dict[str, Any]
    environ: dict[str, str] = field(default_factory=dict)

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.tls_cert else 'ws'}://{self.host}:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def section(self, name: str) -> dict[str, Any]:
        value = self.raw.get(name) or {}
        return dict(value)

    @property
    def local_isolation(self) -> str:
        """What ``local.isolation`` means on this host: ``users`` or ``none`` as set; unset,
        ``users`` when the agent may switch users (root, or the capabilities of
        :data:`fetchml_agent.privilege.SWITCH_USERS`) and ``single`` (one person's workspaces,
        unisolated) otherwise."""
        from .privilege import SWITCH_USERS, missing

        value = self.section("local").get("isolation")
        if value:
            return str(value)
        return "users" if not missing(SWITCH_USERS) else "single"

    @property
    def local_workspaces_dir(self) -> Path | None:
        """With ``local.isolation: users`` (runtimes/local/users.py), where workspace users' files,
        HOMEs, venvs and run directories live: ``local.workspaces_dir``, by default the data_dir's
        sibling ``<data_dir>-workspaces``. ``None`` without user isolation (all under data_dir)."""
        local = self.section("local")
        if self.runtime != "local" or self.local_isolation != "users":
            return None
        configured = local.get("workspaces_dir")
        if not configured:
            return self.data_dir.with_name(self.data_dir.name + "-workspaces")
        path = Path(configured).expanduser()
        if not path.is_absolute() and self.path is not None:
            path = self.path.parent / path
        return Path(os.path.abspath(path))


def format_errors(errors: Any, prefix: str = "") -> list[str]:
    """Cerberus' error tree as ``key.path: message`` lines (list indexes as ``[i]``)."""
    out: list[str] = []
    if isinstance(errors, dict):
        for key, value in errors.items():
            path = f"{prefix}[{key}]" if isinstance(key, int) else (f"{prefix}.{key}" if prefix else str(key))
            out.extend(format_errors(value, path))
    elif isinstance(errors, list):
        for item in errors:
            if isinstance(item, (dict, list)):
                out.extend(format_errors(item, prefix))
            else:
                out.append(f"{prefix}: {item}")
    else:
        out.append(f"{prefix}: {errors}")
    return out
