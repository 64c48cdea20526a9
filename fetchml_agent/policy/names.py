"""Package-name normalization (PEP 503), the only place names are compared from."""

from __future__ import annotations

from packaging.utils import canonicalize_name

__all__ = ["normalize_name", "normalize_names"]


def normalize_name(name: str) -> str:
    """``Friendly.Bard`` → ``friendly-bard``; the seed's dotted entries (``os.system``) too."""
    return str(canonicalize_name(name.strip()))


def normalize_names(names: list[str] | tuple[str, ...] | set[str]) -> frozenset[str]:
    return frozenset(normalize_name(n) for n in names if n and n.strip())
