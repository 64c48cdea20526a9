"""Jinja2 filters the roles and templates share, imported from ``fetchml_agent`` (one conversion each).

``size_mb``       ``"8g" | size_mb`` → 8192 (a bare number is MiB; ``512m``, ``1t``, ``8Gi`` work)
``size_str``      ``8192 | size_str`` → ``"8g"``
``pep503_name``   ``"Friendly.Bard" | pep503_name`` → ``"friendly-bard"``
``api_key_verifier``  ``vault_key | api_key_verifier`` → the ``api_key_verifier`` agent.yaml stores
                  for that API key (64 hex digits; never the key, never a value that logs in)
``pep503_names``  a list of names → the sorted, de-duplicated normalized list
``startup_scan_argv``      ``'' | startup_scan_argv`` → ``["-c", "..."]``: run with an image's python,
                           prints its installed distributions (the agent's own scan, SCAN_ARGV)
``startup_scan_findings``  that output | startup_scan_findings(package_management, environment) →
                           ``{packages, message, details}``: what the agent's startup scan would
                           refuse (``packages`` empty when the image passes)

The repository root is put on ``sys.path`` from this file's own location, so the filters work from
any working directory and under molecule, which does not read the repository's ansible.cfg.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

_REPO = str(Path(__file__).resolve().parents[2])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from ansible.errors import AnsibleFilterError  # noqa: E402

from fetchml_agent.auth import api_key_verifier as _api_key_verifier  # noqa: E402
from fetchml_agent.errors import FetchmlError, PolicyDenied  # noqa: E402
from fetchml_agent.policy.names import normalize_name  # noqa: E402
from fetchml_agent.policy.scan import SCAN_ARGV, check_startup, installed_from_json  # noqa: E402
from fetchml_agent.policy.schema import apply_environ, policy_from_document  # noqa: E402
from fetchml_agent.units import format_size_mb, parse_size_mb  # noqa: E402

__all__ = [
    "FilterModule",
    "api_key_verifier",
    "pep503_name",
    "pep503_names",
    "size_mb",
    "size_str",
    "startup_scan_argv",
    "startup_scan_findings",
]


def size_mb(value: Any, what: str = "size") -> int:
    """A size such as ``8g`` or ``512m`` in MiB; fails the task with the offending value otherwise."""
    try:
        return parse_size_mb(value, what)
    except ValueError as exc:
        raise AnsibleFilterError(str(exc)) from None


def size_str(value: Any) -> str:
    """MiB as the seed spells sizes: 8192 → ``8g``, 1536 → ``1536m``."""
    try:
        return format_size_mb(int(value))
    except (TypeError, ValueError):
        raise AnsibleFilterError(f"size_str: expected a whole number of MiB, got {value!r}") from None


def api_key_verifier(value: Any) -> str:
    """The ``api_key_verifier`` of an API key (what agent.yaml stores instead of the key)."""
    if not isinstance(value, str) or not value.strip():
        raise AnsibleFilterError("api_key_verifier: expected an API key (a non-empty string)")
    return _api_key_verifier(value.strip())


def pep503_name(value: Any) -> str:
    """A package name normalized as pip compares it (PEP 503)."""
    if not isinstance(value, str) or not value.strip():
        raise AnsibleFilterError(f"pep503_name: expected a package name, got {value!r}")
    return normalize_name(value)


def pep503_names(values: Iterable[Any]) -> list[str]:
    """Package names normalized, de-duplicated and sorted (for rendered policy lists)."""
    if isinstance(values, str):
        raise AnsibleFilterError(f"pep503_names: expected a list of package names, got the string {values!r}")
    return sorted({pep503_name(v) for v in values})


def startup_scan_argv(_: Any = None) -> list[str]:
    """The arguments that make a Python print its installed distributions as JSON."""
    return list(SCAN_ARGV)


def startup_scan_findings(
    scan_output: str,
    package_management: dict[str, Any] | None = None,
    environment: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What the agent's startup scan refuses in an environment, under the agent's policy.

    ``package_management`` is agent.yaml's section and ``environment`` the agent's environment
    (``FETCHML_JUPYTER_*`` overrides). Returns ``{"packages": [...], "message": str, "details": str}``;
    ``packages`` is empty when the scan passes or is off. A policy or output the agent would reject
    fails the task with the agent's message.
    """
    try:
        policy = policy_from_document(package_management or {}, source="workspace_images_package_management")
        policy = apply_environ(policy, {str(k): str(v) for k, v in (environment or {}).items()})
        check_startup(installed_from_json(scan_output), policy)
    except PolicyDenied as exc:
        return {
            "packages": list(exc.fields.get("packages", [])),
            "message": exc.message,
            "details": exc.details,
        }
    except FetchmlError as exc:
        raise AnsibleFilterError(f"startup scan: {exc.message} {exc.details or ''}".strip()) from None
    return {"packages": [], "message": "", "details": ""}


class FilterModule:
    """Ansible's entry point for this filter file."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {
            "api_key_verifier": api_key_verifier,
            "size_mb": size_mb,
            "size_str": size_str,
            "pep503_name": pep503_name,
            "pep503_names": pep503_names,
            "startup_scan_argv": startup_scan_argv,
            "startup_scan_findings": startup_scan_findings,
        }
