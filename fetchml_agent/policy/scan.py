"""The startup scan: a blocked package already in a workspace's environment or image stops its start.

The runtime runs :data:`SCAN_ARGV` with the workspace's Python (it needs nothing but the standard
library, so images without pip work too) and hands the output to :func:`installed_from_json`;
or the agent reads a site-packages directory itself with :func:`installed_from_path`. Then
:func:`check_startup` raises when something on the policy's startup list is installed. The list is
``FETCHML_JUPYTER_STARTUP_BLOCKED_PACKAGES`` (``off`` disables the scan), or the blocked list
when that variable is unset (:attr:`PackagePolicy.startup_scan_list`).
"""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from fetchml_agent.errors import InvalidArgument, PolicyDenied
from fetchml_agent.policy.names import normalize_name
from fetchml_agent.policy.schema import STARTUP_BLOCKED_ENV, PackagePolicy

__all__ = ["SCAN_ARGV", "blocked_installed", "check_startup", "installed_from_json", "installed_from_path"]

#: Run inside the workspace as ``[python, *SCAN_ARGV]``: prints ``pip list --format=json``'s shape.
SCAN_ARGV: tuple[str, ...] = (
    "-c",
    "import importlib.metadata as m, json; print(json.dumps(sorted("
    "({'name': d.metadata['Name'], 'version': d.version} for d in m.distributions() if d.metadata['Name']),"
    " key=lambda x: x['name'].lower())))",
)

Installed = tuple[str, str]


def installed_from_json(text: str) -> list[Installed]:
    """``[(name, version)]`` from ``pip list --format=json`` (or :data:`SCAN_ARGV`) output.

    Raises :class:`InvalidArgument` when the text is not that JSON list.
    """
    try:
        rows = json.loads(text)
        return [(str(r["name"]), str(r.get("version", ""))) for r in rows]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise InvalidArgument("the startup scan could not read the environment's package list",
                              details=f"expected pip list --format=json output: {exc}") from exc


def installed_from_path(paths: Sequence[Path]) -> list[Installed]:
    """``[(name, version)]`` of the distributions installed in ``paths`` (site-packages dirs)."""
    found = importlib.metadata.distributions(path=[str(p) for p in paths])
    return sorted({(d.metadata["Name"], d.version) for d in found if d.metadata["Name"]})


def blocked_installed(installed: Iterable[Installed], startup_list: frozenset[str]) -> list[Installed]:
    """The installed distributions whose normalized name is on ``startup_list``, sorted by name."""
    return sorted({(n, v) for n, v in installed if normalize_name(n) in startup_list},
                  key=lambda nv: normalize_name(nv[0]))


def check_startup(installed: Iterable[Installed], policy: PackagePolicy, *, workspace: str | None = None) -> None:
    """Raises :class:`PolicyDenied` when the environment holds a package the startup scan looks for.

    The message names the packages and ``FETCHML_JUPYTER_STARTUP_BLOCKED_PACKAGES``; the error's
    fields carry ``packages`` (``["name==version", ...]``) and ``rule`` (``startup_blocked_packages``).
    Does nothing when the scan is off.
    """
    found = blocked_installed(installed, policy.startup_scan_list)
    if not found:
        return
    listed = ", ".join(f"{n} {v}".strip() for n, v in found)
    where = f"workspace {workspace}" if workspace else "the workspace"
    raise PolicyDenied(
        f"{where} cannot start: its environment already contains blocked packages: {listed}",
        details=(f"remove them from the image or environment, or set {STARTUP_BLOCKED_ENV} on the agent "
                 "(a comma list of the names to look for, or off to skip this scan); installs stay blocked "
                 "by the blocked_packages list"),
        packages=[f"{n}=={v}" if v else n for n, v in found], rule="startup_blocked_packages",
    )
