"""The package policy: its document schema, its value, tightening, and the environment overrides.

One document shape, the seed's ``package_management:``, is read in three places:

* the agent's config (``package_management:`` in agent.yaml): the *global* policy, with every key
  of :data:`PACKAGE_MANAGEMENT_SCHEMA` (``mode`` and ``startup_blocked_packages`` included);
* a workspace's ``security:`` (workspace-config.yaml, templates, the API body) and
  ``workspace-security.yaml`` files (under ``package_management:``): a *workspace overlay* with
  the keys of :data:`WORKSPACE_SECURITY_SCHEMA`, which can only tighten the global policy.

Tightening (:func:`effective_policy`): blocked and approval-required lists are unions, the
allowlist and the trusted channels are intersections (when both sides set them), and ``enforce``
beats ``dry_run``. Names are stored PEP 503-normalized (``os.system`` → ``os-system``).

Nothing here reads ``os.environ``: the config loader passes its environment to
:func:`apply_environ`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cerberus
import yaml

from fetchml_agent.errors import InvalidArgument
from fetchml_agent.policy.names import is_valid_channel, is_valid_name, normalize_name, normalize_names
from fetchml_agent.policy.vulns import VULNERABILITIES_SCHEMA, VulnerabilitySettings

__all__ = [
    "BLOCKED_ENV",
    "DEFAULT_BLOCKED_PACKAGES",
    "DEFAULT_TRUSTED_CHANNELS",
    "AGENT_SECTION_SCHEMA",
    "PACKAGE_MANAGEMENT_SCHEMA",
    "STARTUP_BLOCKED_ENV",
    "WORKSPACE_SECURITY_SCHEMA",
    "PackagePolicy",
    "WorkspaceSecurity",
    "apply_environ",
    "effective_policy",
    "load_workspace_security_file",
    "policy_from_document",
    "validation_messages",
    "workspace_security_from_document",
]

Mode = Literal["enforce", "dry_run"]

#: The seed's defaults ("Package Management → Security Features").
DEFAULT_TRUSTED_CHANNELS: tuple[str, ...] = ("conda-forge", "defaults", "pytorch", "nvidia")
DEFAULT_BLOCKED_PACKAGES: tuple[str, ...] = ("requests", "urllib3", "socket", "subprocess", "os.system")

BLOCKED_ENV = "FETCHML_JUPYTER_BLOCKED_PACKAGES"
STARTUP_BLOCKED_ENV = "FETCHML_JUPYTER_STARTUP_BLOCKED_PACKAGES"

def _check_name(field: str, value: Any, error: Any) -> None:
    if not isinstance(value, str) or not is_valid_name(value):
        error(field, f"{value!r} is not a valid package name (letters, digits, '.', '_', '-')")


def _check_channel(field: str, value: Any, error: Any) -> None:
    if not isinstance(value, str) or not is_valid_channel(value):
        error(field, f"{value!r} is not a channel name or an http(s)/file URL")


def _name_list(nullable: bool = False) -> dict[str, Any]:
    return {"type": "list", "nullable": nullable, "schema": {"type": "string", "check_with": _check_name}}


#: The four keys a workspace may set (its ``security:`` and ``workspace-security.yaml``), plus
#: ``mode``, which a workspace can only move from ``dry_run`` to ``enforce``.
WORKSPACE_SECURITY_SCHEMA: dict[str, Any] = {
    "trusted_channels": {"type": "list", "schema": {"type": "string", "check_with": _check_channel}},
    "blocked_packages": _name_list(),
    "approval_required": _name_list(),
    "allowlist": _name_list(nullable=True),
    "mode": {"type": "string", "allowed": ["enforce", "dry_run"]},
}

#: The agent's ``package_management:`` (the global policy). Embed it in the agent's config
#: schema as ``{"type": "dict", "schema": PACKAGE_MANAGEMENT_SCHEMA}``.
PACKAGE_MANAGEMENT_SCHEMA: dict[str, Any] = {
    **WORKSPACE_SECURITY_SCHEMA,
    "startup_blocked_packages": {
        "nullable": True,
        "anyof": [
            {"type": "list", "schema": {"type": "string", "check_with": _check_name}},
            {"type": "string", "allowed": ["off"]},
        ],
    },
    "vulnerabilities": VULNERABILITIES_SCHEMA,
}

#: The agent config's rule for its ``package_management:`` section (fetchml_agent.config merges it).
AGENT_SECTION_SCHEMA: dict[str, Any] = {"type": "dict", "nullable": True, "schema": PACKAGE_MANAGEMENT_SCHEMA}


@dataclass(frozen=True)
class PackagePolicy:
    """An effective package policy; every name normalized (PEP 503).

    ``allowlist`` is ``None`` when no allowlist applies (anything not blocked or
    approval-required is allowed). ``startup_blocked_packages`` is ``None`` when the startup scan
    follows the blocked list; ``startup_scan`` is False when the scan is ``off``.
    """

    trusted_channels: tuple[str, ...] = DEFAULT_TRUSTED_CHANNELS
    blocked_packages: frozenset[str] = normalize_names(DEFAULT_BLOCKED_PACKAGES)
    approval_required: frozenset[str] = frozenset()
    allowlist: frozenset[str] | None = None
    mode: Mode = "enforce"
    startup_blocked_packages: frozenset[str] | None = None
    startup_scan: bool = True
    vulnerabilities: VulnerabilitySettings | None = None

    @property
    def dry_run(self) -> bool:
        return self.mode == "dry_run"

    @property
    def startup_scan_list(self) -> frozenset[str]:
        """The names the startup scan looks for (empty when the scan is off)."""
        if not self.startup_scan:
            return frozenset()
        if self.startup_blocked_packages is None:
            return self.blocked_packages
        return self.startup_blocked_packages

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able view (``ml jupyter info``, the API), lists sorted."""
        startup: list[str] | str | None
        if not self.startup_scan:
            startup = "off"
        elif self.startup_blocked_packages is None:
            startup = None
        else:
            startup = sorted(self.startup_blocked_packages)
        return {
            "mode": self.mode,
            "trusted_channels": list(self.trusted_channels),
            "blocked_packages": sorted(self.blocked_packages),
            "approval_required": sorted(self.approval_required),
            "allowlist": None if self.allowlist is None else sorted(self.allowlist),
            "startup_blocked_packages": startup,
            "vulnerabilities": self.vulnerabilities.to_dict() if self.vulnerabilities else None,
        }


@dataclass(frozen=True)
class WorkspaceSecurity:
    """A workspace's overlay on the global policy; ``None`` means "not set here"."""

    trusted_channels: tuple[str, ...] | None = None
    blocked_packages: frozenset[str] | None = None
    approval_required: frozenset[str] | None = None
    allowlist: frozenset[str] | None = None
    mode: Mode | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``security:`` document this overlay came from (normalized), without unset keys."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            out[f.name] = list(value) if f.name == "trusted_channels" else (
                value if isinstance(value, str) else sorted(value))
        return out


def validation_messages(errors: Mapping[str, Any], prefix: str) -> list[str]:
    """Flatten cerberus' nested ``validator.errors`` into ``key.sub[2]: message`` lines."""
    out: list[str] = []
    for key, items in sorted(errors.items(), key=lambda kv: str(kv[0])):
        path = f"{prefix}[{key}]" if isinstance(key, int) else (f"{prefix}.{key}" if prefix else str(key))
        for item in items:
            if isinstance(item, Mapping):
                out.extend(validation_messages(item, path))
            else:
                out.append(f"{path}: {item}")
    return out


def _validate(doc: Any, schema: dict[str, Any], *, source: str, key: str) -> dict[str, Any]:
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise InvalidArgument(
            f"{source}: {key} must be a mapping of policy keys, got {type(doc).__name__}",
            details=f"allowed keys: {', '.join(sorted(schema))}",
        )
    validator = cerberus.Validator(schema, allow_unknown=False)
    if not validator.validate(dict(doc)):
        lines = validation_messages(validator.errors, key)
        raise InvalidArgument(f"{source}: invalid {lines[0]}", details="; ".join(lines[1:]),
                              file=source, key=lines[0].split(":", 1)[0])
    return dict(doc)


def _channels(values: Iterable[str]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for v in values:
        seen.setdefault(v.strip().rstrip("/"), None)
    return tuple(seen)


def policy_from_document(doc: Any, *, source: str, key: str = "package_management",
                         config_dir: Path | None = None) -> PackagePolicy:
    """The global policy from an agent.yaml ``package_management:`` mapping (absent → defaults).

    Keys left out take the seed's defaults. Raises :class:`InvalidArgument` naming ``source``
    (the file) and the key on anything the schema refuses. ``config_dir``: the directory a relative
    ``vulnerabilities.osv`` path is taken from (the config file's).
    """
    data = _validate(doc, PACKAGE_MANAGEMENT_SCHEMA, source=source, key=key)
    vulns = data.get("vulnerabilities")
    base = PackagePolicy()
    startup = data.get("startup_blocked_packages")
    return PackagePolicy(
        trusted_channels=_channels(data["trusted_channels"]) if "trusted_channels" in data else base.trusted_channels,
        blocked_packages=normalize_names(data["blocked_packages"]) if "blocked_packages" in data
        else base.blocked_packages,
        approval_required=normalize_names(data.get("approval_required") or ()),
        allowlist=None if data.get("allowlist") is None else normalize_names(data["allowlist"]),
        mode=data.get("mode", "enforce"),
        startup_blocked_packages=None if startup in (None, "off") else normalize_names(startup),
        startup_scan=startup != "off",
        vulnerabilities=VulnerabilitySettings.from_document(
            cerberus.Validator(VULNERABILITIES_SCHEMA["schema"]).normalized(vulns), config_dir) if vulns else None,
    )


def workspace_security_from_document(doc: Any, *, source: str, key: str = "security") -> WorkspaceSecurity:
    """A workspace overlay from its ``security:`` mapping (workspace-config.yaml, template, API).

    Raises :class:`InvalidArgument` naming ``source`` and the key.
    """
    data = _validate(doc, WORKSPACE_SECURITY_SCHEMA, source=source, key=key)
    return WorkspaceSecurity(
        trusted_channels=_channels(data["trusted_channels"]) if "trusted_channels" in data else None,
        blocked_packages=normalize_names(data["blocked_packages"]) if "blocked_packages" in data else None,
        approval_required=normalize_names(data["approval_required"]) if "approval_required" in data else None,
        allowlist=normalize_names(data["allowlist"]) if data.get("allowlist") is not None else None,
        mode=data.get("mode"),
    )


def load_workspace_security_file(path: Path) -> WorkspaceSecurity:
    """Reads a ``workspace-security.yaml`` (the seed's ``package_management:`` document).

    Raises :class:`InvalidArgument` when the file is missing, is not YAML, or fails the schema;
    the message names the file and the key.
    """
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidArgument(f"{path}: cannot read the workspace security file", details=exc.strerror or "") from exc
    except yaml.YAMLError as exc:
        raise InvalidArgument(f"{path}: not valid YAML", details=str(exc).replace("\n", " ")) from exc
    if not isinstance(doc, Mapping) or set(doc) != {"package_management"}:
        raise InvalidArgument(f"{path}: expected one top-level key, package_management:",
                              details="see docs/package-policy.md", file=str(path))
    return workspace_security_from_document(doc["package_management"], source=str(path), key="package_management")


def effective_policy(global_policy: PackagePolicy, *overlays: WorkspaceSecurity | None) -> PackagePolicy:
    """The global policy tightened by each overlay in turn; never loosened.

    blocked and approval_required: union; allowlist and trusted_channels: intersection when both
    sides set one (the order of the global channels is kept); mode: ``enforce`` wins.
    """
    p = global_policy
    for o in overlays:
        if o is None:
            continue
        channels = p.trusted_channels
        if o.trusted_channels is not None:
            wanted = set(o.trusted_channels)
            channels = tuple(c for c in p.trusted_channels if c in wanted)
        allowlist = p.allowlist
        if o.allowlist is not None:
            allowlist = o.allowlist if allowlist is None else allowlist & o.allowlist
        p = dataclasses.replace(
            p,
            trusted_channels=channels,
            blocked_packages=p.blocked_packages | (o.blocked_packages or frozenset()),
            approval_required=p.approval_required | (o.approval_required or frozenset()),
            allowlist=allowlist,
            mode="enforce" if "enforce" in (p.mode, o.mode) else "dry_run",
        )
    return p


def _env_names(environ: Mapping[str, str], var: str) -> frozenset[str]:
    names = [n.strip() for n in environ[var].split(",") if n.strip()]
    bad = [n for n in names if not is_valid_name(n)]
    if bad:
        raise InvalidArgument(f"{var}: not valid package names: {', '.join(map(repr, bad))}",
                              details="expected a comma-separated list such as requests,urllib3")
    return frozenset(normalize_name(n) for n in names)


def apply_environ(policy: PackagePolicy, environ: Mapping[str, str]) -> PackagePolicy:
    """The global policy with the seed's environment overrides applied (pure: pass os.environ).

    ``FETCHML_JUPYTER_BLOCKED_PACKAGES`` (set, even empty) replaces the blocked list.
    ``FETCHML_JUPYTER_STARTUP_BLOCKED_PACKAGES``: ``off`` disables the startup scan, a comma list
    replaces the scan's list; unset, the scan follows the (possibly replaced) blocked list.
    Raises :class:`InvalidArgument` naming the variable on a name that is not valid.
    """
    if BLOCKED_ENV in environ:
        policy = dataclasses.replace(policy, blocked_packages=_env_names(environ, BLOCKED_ENV))
    if STARTUP_BLOCKED_ENV in environ:
        if environ[STARTUP_BLOCKED_ENV].strip().lower() == "off":
            policy = dataclasses.replace(policy, startup_scan=False, startup_blocked_packages=None)
        else:
            policy = dataclasses.replace(policy, startup_scan=True,
                                         startup_blocked_packages=_env_names(environ, STARTUP_BLOCKED_ENV))
    return policy
