"""Jinja2 filters the roles and templates share, imported from ``fetchml_agent`` (one conversion each).

``size_mb``       ``"8g" | size_mb`` → 8192 (a bare number is MiB; ``512m``, ``1t``, ``8Gi`` work)
``size_str``      ``8192 | size_str`` → ``"8g"``
``pep503_name``   ``"Friendly.Bard" | pep503_name`` → ``"friendly-bard"``
``pep503_names``  a list of names → the sorted, de-duplicated normalized list

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

from fetchml_agent.policy.names import normalize_name  # noqa: E402
from fetchml_agent.units import format_size_mb, parse_size_mb  # noqa: E402

__all__ = ["FilterModule", "pep503_name", "pep503_names", "size_mb", "size_str"]


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


class FilterModule:
    """Ansible's entry point for this filter file."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {
            "size_mb": size_mb,
            "size_str": size_str,
            "pep503_name": pep503_name,
            "pep503_names": pep503_names,
        }
