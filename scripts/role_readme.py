#!/usr/bin/env python3
"""Write the variable tables of the role READMEs and of docs/gitops.md from the roles' argument specs.

    scripts/role_readme.py [--check] [ROLE ...]

A role's table sits between ``<!-- variables -->`` and ``<!-- /variables -->`` in
``roles/<role>/README.md``; the inventory groups' tables (which variables reach the hosts of each group,
through the roles its playbooks apply) sit between ``<!-- group-variables -->`` and
``<!-- /group-variables -->`` in ``docs/gitops.md``. The text around them is written by hand.
``--check`` changes nothing and exits 1 when a table is stale.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

__all__ = ["group_roles", "group_tables", "main", "variables_table"]

REPO = Path(__file__).resolve().parents[1]
ROLES = REPO / "roles"
GITOPS_DOC = REPO / "docs" / "gitops.md"
START, END = "<!-- variables -->", "<!-- /variables -->"
GROUP_START, GROUP_END = "<!-- group-variables -->", "<!-- /group-variables -->"
# A default longer than this is left to the role's README.
_SHORT_DEFAULT = 40


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return "`" + text.replace("|", "\\|") + "`" if text != "" else '`""`'


def variables_table(role: str) -> str:
    """The Markdown table of a role's variables (name, type, default, description)."""
    options = _options(role)
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


def _options(role: str) -> dict[str, Any]:
    specs = yaml.safe_load((ROLES / role / "meta" / "argument_specs.yml").read_text())
    return dict(specs["argument_specs"]["main"]["options"])


def group_roles(playbooks: Path = REPO / "playbooks") -> dict[str, list[str]]:
    """{inventory group: the roles the playbooks apply to it, in order}, in the order of site.yml."""
    groups: dict[str, list[str]] = {}
    site = yaml.safe_load((playbooks / "site.yml").read_text())
    for entry in site:
        for play in yaml.safe_load((playbooks / entry["ansible.builtin.import_playbook"]).read_text()):
            roles = groups.setdefault(play["hosts"], [])
            for role in play.get("roles", []):
                name = role if isinstance(role, str) else role["role"]
                if name not in roles:
                    roles.append(name)
    return groups


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


def _required(spec: dict[str, Any]) -> str:
    if spec.get("required"):
        return "**yes**"
    nested = [k for k, v in (spec.get("options") or {}).items() if (v or {}).get("required")]
    return "no; an entry needs " + ", ".join(f"`{k}`" for k in nested) if nested else "no"


def group_tables() -> str:
    """Per inventory group: each role it gets (linked to its README) and that role's variables."""
    out: list[str] = []
    for group, roles in group_roles().items():
        links = ", ".join(f"[{r}](../roles/{r}/README.md)" for r in roles)
        out += [f"### Group `{group}`", "", f"Roles, in order: {links}.", ""]
        out += ["| Variable | Role | Type | Required | Default | Meaning |", "|---|---|---|---|---|---|"]
        for role in roles:
            for name, spec in _options(role).items():
                kind = spec.get("type", "str") + (f" of {spec['elements']}" if spec.get("elements") else "")
                default = spec.get("default", "")
                cell = _cell(default)
                if len(cell) > _SHORT_DEFAULT:
                    cell = f"[see README](../roles/{role}/README.md)"
                meaning = _first_sentence(str(spec.get("description", "")))
                if spec.get("choices"):
                    meaning += " One of " + ", ".join(f"`{c}`" for c in spec["choices"]) + "."
                if spec.get("no_log"):
                    meaning += " Secret: a `vault_` variable."
                meaning = meaning.replace("|", "\\|")
                out.append(f"| `{name}` | [{role}](../roles/{role}/README.md) | {kind} | {_required(spec)} | {cell} | {meaning} |")
        out.append("")
    return "\n".join(out).rstrip("\n")


def _replace(text: str, start: str, end: str, body: str) -> str | None:
    if start not in text or end not in text:
        return None
    head, rest = text.split(start, 1)
    return f"{head}{start}\n{body}\n{end}{rest.split(end, 1)[1]}"


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
    if not args.roles and GITOPS_DOC.exists():
        text = GITOPS_DOC.read_text()
        new = _replace(text, GROUP_START, GROUP_END, group_tables())
        if new is None:
            print(f"{GITOPS_DOC}: no {GROUP_START} ... {GROUP_END} markers", file=sys.stderr)
            stale.append("docs/gitops.md")
        elif new != text:
            stale.append("docs/gitops.md")
            if not args.check:
                GITOPS_DOC.write_text(new)
    if args.check and stale:
        print("stale variable tables (run scripts/role_readme.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
