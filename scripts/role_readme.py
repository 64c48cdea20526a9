#!/usr/bin/env python3
"""Write the variable table of each role's README.md from its meta/argument_specs.yml.

    scripts/role_readme.py [--check] [ROLE ...]

The table sits between ``<!-- variables -->`` and ``<!-- /variables -->`` in ``roles/<role>/README.md``;
the text around it is written by hand. ``--check`` changes nothing and exits 1 when a table is stale.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

__all__ = ["main", "variables_table"]

ROLES = Path(__file__).resolve().parents[1] / "roles"
START, END = "<!-- variables -->", "<!-- /variables -->"


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return "`" + text.replace("|", "\\|") + "`" if text != "" else '`""`'


def variables_table(role: str) -> str:
    """The Markdown table of a role's variables (name, type, default, description)."""
    specs = yaml.safe_load((ROLES / role / "meta" / "argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    rows = ["| Variable | Type | Default | Description |", "|---|---|---|---|"]
    for name, spec in options.items():
        kind = spec.get("type", "str")
        if spec.get("elements"):
            kind += f" of {spec['elements']}"
        extra = []
        if spec.get("choices"):
            extra.append("one of " + ", ".join(f"`{c}`" for c in spec["choices"]))
        if spec.get("no_log"):
            extra.append("secret: keep it in a vault")
        if spec.get("options"):
            extra.append("keys: " + ", ".join(f"`{k}`" for k in spec["options"]))
        description = " ".join(str(spec.get("description", "")).split())
        if extra:
            description += " (" + "; ".join(extra) + ")"
        rows.append(f"| `{name}` | {kind} | {_cell(spec.get('default', ''))} | {description} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a README's table is stale")
    parser.add_argument("roles", nargs="*")
    args = parser.parse_args(argv)
    stale = []
    for role in args.roles or sorted(
        p.name for p in ROLES.iterdir() if (p / "meta" / "argument_specs.yml").exists()
    ):
        readme = ROLES / role / "README.md"
        text = readme.read_text()
        if START not in text or END not in text:
            print(f"{readme}: no {START} ... {END} markers", file=sys.stderr)
            stale.append(role)
            continue
        head, rest = text.split(START, 1)
        tail = rest.split(END, 1)[1]
        new = f"{head}{START}\n{variables_table(role)}\n{END}{tail}"
        if new != text:
            stale.append(role)
            if not args.check:
                readme.write_text(new)
    if args.check and stale:
        print("stale variable tables (run scripts/role_readme.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
