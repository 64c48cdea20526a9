"""The arguments the package operations share: booleans from JSON or a query string, one spec
from ``spec`` or the seed's ``{"package", "version"}``."""

from __future__ import annotations

import re
from typing import Any

from ...errors import InvalidArgument

__all__ = ["BOOL", "NAME", "SPEC_KEYS", "_flag", "_one_spec", "_package_and_version"]


def _flag(value: Any) -> Any:
    """Booleans from JSON, or from an HTTP query string (``?pending=true``)."""
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off", ""):
            return False
    return value


def _text(value: Any) -> Any:
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


NAME = {"name": {"type": "string", "required": True, "empty": False}}
BOOL = {"type": "boolean", "coerce": _flag, "default": False}
SPEC_KEYS: dict[str, Any] = {
    "spec": {"type": "string", "nullable": True, "default": None},
    "package": {"type": "string", "nullable": True, "default": None},
    "version": {"type": "string", "coerce": _text, "nullable": True, "default": None},
    "conda": BOOL,
    "channels": {"type": "list", "schema": {"type": "string"}, "default": []},
}


def _package_and_version(args: dict[str, Any]) -> str | None:
    """The seed's HTTP body ``{"package": "numpy", "version": "1.24.0"}`` as one spec."""
    package = (args.get("package") or "").strip()
    version = (args.get("version") or "").strip()
    if not package:
        if version:
            raise InvalidArgument("version given without a package", 'send {"package": "numpy", "version": "1.24.0"}')
        return None
    if version:
        if re.search(r"[<>=!~@]", package):
            raise InvalidArgument(f"{package!r} already has a version: give it either in package or in version")
        package += version if version[0] in "<>=!~" else f"=={version}"
    return package


def _one_spec(args: dict[str, Any], example: str) -> str:
    specs = [s for s in (args.get("spec"), _package_and_version(args)) if s]
    if len(specs) != 1:
        raise InvalidArgument("name exactly one package" if specs else "name a package", f"e.g. {example}")
    return specs[0]
