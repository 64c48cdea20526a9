"""Package-name validity (PEP 508) and normalization (PEP 503), the only place names are compared from."""

from __future__ import annotations

import re

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)

__all__ = ["dist_filename_parts", "is_valid_channel", "is_valid_name", "normalize_name", "normalize_names"]

# PEP 508 names, with \Z so a trailing newline never passes (the 2025 fix to the spec).
_VALID_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])\Z", re.IGNORECASE)
# A conda channel: a name (``conda-forge``, ``company-internal``, ``conda-forge/label/dev``) or an
# http(s)/file URL; ASCII, no spaces.
_VALID_CHANNEL = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9._-]+)*|(?:https?|file)://[!-~]+)\Z")


def is_valid_channel(channel: str) -> bool:
    """True for a conda channel name or an http(s)/file channel URL."""
    return bool(_VALID_CHANNEL.match(channel))


def is_valid_name(name: str) -> bool:
    """True for a valid project name: ASCII letters, digits, ``.``, ``_``, ``-``, alphanumeric ends."""
    return bool(_VALID_NAME.match(name))


def normalize_name(name: str) -> str:
    """``Friendly.Bard`` → ``friendly-bard``; the seed's dotted entries (``os.system``) too."""
    return str(canonicalize_name(name.strip()))


def normalize_names(names: list[str] | tuple[str, ...] | set[str]) -> frozenset[str]:
    return frozenset(normalize_name(n) for n in names if n and n.strip())


def dist_filename_parts(filename: str) -> tuple[str, str] | None:
    """``(normalized name, version)`` of a wheel or sdist file name, or ``None`` if it is neither."""
    try:
        if filename.lower().endswith(".whl"):
            name, version, _build, _tags = parse_wheel_filename(filename)
            return str(name), str(version)
        if filename.lower().endswith((".tar.gz", ".zip")):
            name, version = parse_sdist_filename(filename)
            return str(name), str(version)
    except (InvalidWheelFilename, InvalidSdistFilename):
        return None
    return None
