#!/usr/bin/env python3
"""Check every inventory's variables against the roles' argument specs (the GitOps gate of CI).

    scripts/check_inventories.py [INVENTORY_DIR ...]     (default: every directory in inventories/)

The schema is built from ``roles/*/meta/argument_specs.yml`` (the ``main`` entry point of each role),
so the roles' own specs are the one description of their variables. Each group_vars/host_vars file
and each variable block of ``hosts.yml`` is validated with cerberus:

- a key that no role declares (a typo) is an error, with the closest known name suggested;
- types, ``choices`` and nested ``options`` are checked; a value that is a Jinja2 expression or an
  ansible-vault secret is taken as it will be at run time and only its key is checked;
- a variable a spec marks ``no_log: true`` must not hold a secret in clear: it must be a vault value
  or an expression (usually ``"{{ vault_... }}"``);
- group_vars/host_vars files must name a group/host of the inventory (a misspelled file name would
  silently apply to nothing);
- a file encrypted whole with ansible-vault is decrypted with ``--vault-password-file`` and checked like
  the others (its values are secrets, so they count as vault values); without a password its keys are
  not checked and the run says so.

Variables that the fetchml_agent role hands to agent.yaml as whole sections (``fetchml_agent_nomad``,
``fetchml_agent_package_management``, ...) are checked against the agent's own schema of that section
(:func:`agent_section_schemas`), so a key the agent would refuse at start fails here first. So are
``fetchml_agent_users``: an ``api_key_verifier`` must be 64 hex digits, an ``api_key`` a vault
value, and an ``api_key_sha256`` (a working credential in the inventory) is refused with the way to
replace it.

Besides the roles' variables an inventory may set Ansible's connection variables (``ansible_*`` in
:data:`CONNECTION_VARS`) and ``vault_*`` variables, which hold secrets and must be vault-encrypted.
Every error names the file, the host or group, and the key; a value outside a spec's ``choices`` is
reported with the allowed values, a wrong type with the value found. Exits 1 when there is any error.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cerberus import Validator, errors

__all__ = [
    "CONNECTION_VARS",
    "agent_section_schemas",
    "Finding",
    "check_inventory",
    "load_role_specs",
    "main",
    "schema_from_specs",
]

REPO = Path(__file__).resolve().parents[1]

CONNECTION_VARS = {
    "ansible_host": "string",
    "ansible_port": "integer",
    "ansible_user": "string",
    "ansible_connection": "string",
    "ansible_python_interpreter": "string",
    "ansible_become": "boolean",
    "ansible_become_method": "string",
    "ansible_become_user": "string",
    "ansible_ssh_private_key_file": "string",
    "ansible_ssh_common_args": "string",
    "ansible_ssh_extra_args": "string",
}

_TYPES = {
    "str": "string",
    "path": "string",
    "int": "integer",
    "float": "number",
    "bool": "boolean",
    "list": "list",
    "dict": "dict",
}


def agent_section_schemas() -> dict[str, dict[str, Any]]:
    """The agent's cerberus schemas of the agent.yaml sections that role variables carry whole."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from fetchml_agent.auth import LEGACY_KEY_FIELD, VERIFIER_FIELD
    from fetchml_agent.config import SCHEMA
    from fetchml_agent.nomad.schema import NOMAD_CONFIG_SCHEMA
    from fetchml_agent.policy.schema import AGENT_SECTION_SCHEMA
    from fetchml_agent.runtimes.docker_schema import DOCKER_SECTION_SCHEMA

    # The role merges fetchml_agent_nomad_token into the section as `token`.
    nomad = {k: v for k, v in NOMAD_CONFIG_SCHEMA.items() if k != "token"}
    # The role's users: the agent's, with api_key (from a vault) as the alternative to the verifier
    # (that one of the two is there, the role's asserts check: a vault value is opaque here).
    users = copy.deepcopy(SCHEMA["users"])
    user = users["schema"]["schema"]
    user[VERIFIER_FIELD] = {k: v for k, v in user[VERIFIER_FIELD].items() if k != "required"}
    user["api_key"] = {"type": "string", "empty": False, "secret": True}
    user[LEGACY_KEY_FIELD] = {"legacy_key": True}
    return {
        "fetchml_agent_package_management": AGENT_SECTION_SCHEMA,
        "workspace_images_package_management": AGENT_SECTION_SCHEMA,
        "fetchml_agent_nomad": {"type": "dict", "schema": nomad},
        "fetchml_agent_docker": DOCKER_SECTION_SCHEMA,
        "fetchml_agent_local": SCHEMA["local"],
        "fetchml_agent_package_index": SCHEMA["package_index"],
        "fetchml_agent_limits": SCHEMA["limits"],
        "fetchml_agent_webhooks": SCHEMA["webhooks"],
        "fetchml_agent_teams": SCHEMA["teams"],
        "fetchml_agent_users": users,
    }


class _Vaulted(str):
    """An ``!vault`` value: a secret whose clear text is not known here."""


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("!vault", lambda loader, node: _Vaulted(loader.construct_scalar(node)))
_Loader.add_constructor("!unsafe", lambda loader, node: str(loader.construct_scalar(node)))


def _is_deferred(value: Any) -> bool:
    """A value only known at run time: a vault secret or a Jinja2 expression."""
    return isinstance(value, _Vaulted) or (isinstance(value, str) and ("{{" in value or "{%" in value))


class _Messages(errors.BasicErrorHandler):  # type: ignore[misc]
    """cerberus' messages, with the allowed values of a choice and the value of a wrong type."""

    def _format_message(self, field: Any, error: Any) -> str:
        if error.code == errors.UNALLOWED_VALUE.code:
            return f"unallowed value {error.value} (allowed: {', '.join(map(str, error.constraint))})"
        if error.code == errors.UNALLOWED_VALUES.code:
            return f"unallowed values {', '.join(map(str, error.info[0]))} (allowed: {', '.join(map(str, error.constraint))})"
        if error.code == errors.BAD_TYPE.code:
            kinds = error.constraint if isinstance(error.constraint, list) else [error.constraint]
            return f"must be of {' or '.join(kinds)} type, got {error.value!r}"
        return str(super()._format_message(field, error))


class _InventoryValidator(Validator):  # type: ignore[misc]
    def _validate_type(self, data_type: Any, field: str, value: Any) -> None:
        """{'type': ['string', 'list'], 'check_with': 'type'}"""
        if _is_deferred(value):
            self._drop_remaining_rules()
            return
        super()._validate_type(data_type, field, value)

    def _validate_legacy_key(self, legacy: bool, field: str, value: Any) -> None:
        """{'type': 'boolean'}"""
        from fetchml_agent.auth import LEGACY_KEY_REFUSAL

        if legacy:
            self._error(
                field,
                f"{LEGACY_KEY_REFUSAL}: write api_key_verifier (fetchml-agent hash-key KEY), or api_key from a vault",
            )

    def _validate_secret(self, secret: bool, field: str, value: Any) -> None:
        """{'type': 'boolean'}"""
        if secret and value not in (None, "") and not _is_deferred(value):
            self._error(
                field,
                "holds a secret in clear: encrypt it with ansible-vault or point it at a vault_ variable",
            )


def _option_schema(spec: dict[str, Any]) -> dict[str, Any]:
    rule: dict[str, Any] = {"nullable": not spec.get("required", False)}
    kind = spec.get("type", "str")
    if kind in _TYPES:
        rule["type"] = _TYPES[kind]
    if "choices" in spec:
        rule["allowed"] = spec["choices"]
    if spec.get("no_log"):
        rule["secret"] = True
    nested = spec.get("options")
    if kind == "dict" and nested:
        rule["schema"] = schema_from_specs(nested)
    elif kind == "list":
        element = spec.get("elements")
        if element == "dict" and nested:
            rule["schema"] = {"type": "dict", "schema": schema_from_specs(nested)}
        elif element in _TYPES:
            rule["schema"] = {"type": _TYPES[element]}
    return rule


def schema_from_specs(options: dict[str, Any]) -> dict[str, Any]:
    """A cerberus schema from argument-spec ``options`` (types, choices, nested options, no_log)."""
    return {name: _option_schema(spec or {}) for name, spec in options.items()}


def load_role_specs(roles_dir: Path = REPO / "roles") -> dict[str, tuple[str, dict[str, Any]]]:
    """Every role's ``main`` options: {variable: (role, option spec)}. A variable declared twice is an error."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for path in sorted(roles_dir.glob("*/meta/argument_specs.yml")):
        role = path.parent.parent.name
        specs = yaml.safe_load(path.read_text()) or {}
        options = ((specs.get("argument_specs") or {}).get("main") or {}).get("options") or {}
        for name, spec in options.items():
            if name in found:
                raise SystemExit(f"{path}: {name} is already declared by role {found[name][0]}")
            found[name] = (role, spec or {})
    return found


@dataclass(frozen=True)
class Finding:
    """One problem: where (file, and the host or group) and what (key, message)."""

    file: str
    scope: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.scope}: {self.key}: {self.message}"


def _flatten(errors: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    for key, items in errors.items():
        path = f"{prefix}[{key}]" if isinstance(key, int) else (f"{prefix}.{key}" if prefix else str(key))
        for item in items:
            if isinstance(item, dict):
                yield from _flatten(item, path)
            else:
                yield path, str(item)


class _Checker:
    def __init__(self, specs: dict[str, tuple[str, dict[str, Any]]]) -> None:
        self.known = sorted(specs)
        schema = schema_from_specs({name: spec for name, (_, spec) in specs.items()})
        for name, section in agent_section_schemas().items():
            if name in schema:
                schema[name] = {**section, "nullable": True}
        for name, kind in CONNECTION_VARS.items():
            schema[name] = {"type": kind}
        self.validator = _InventoryValidator(schema, allow_unknown=False, error_handler=_Messages)

    def check(self, data: Any, file: str, scope: str) -> list[Finding]:
        if data is None:
            return []
        if not isinstance(data, dict):
            return [Finding(file, scope, "(file)", "must be a mapping of variable names to values")]
        findings: list[Finding] = []
        plain: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(key, str) and key.startswith("vault_"):
                if not isinstance(value, _Vaulted):
                    findings.append(
                        Finding(
                            file,
                            scope,
                            key,
                            "vault_ variables hold secrets: encrypt the value with ansible-vault",
                        )
                    )
            else:
                plain[key] = value
        if not self.validator.validate(plain):
            for key, message in _flatten(self.validator.errors):
                if message == "unknown field" and ("." in key or "[" in key):
                    message = "unknown key (not in the role's options or the agent's schema of this section)"
                elif message == "unknown field":
                    close = difflib.get_close_matches(key, self.known + list(CONNECTION_VARS), n=1)
                    message = "no role declares this variable" + (
                        f" (did you mean {close[0]}?)" if close else ""
                    )
                findings.append(Finding(file, scope, key, message))
        return findings


_VAULT_HEADER = "$ANSIBLE_VAULT;"


class _Encrypted:
    """A vars file encrypted whole with ansible-vault, which no password was given for."""


def _vault_decryptor(password_file: Path) -> Any:
    """``text -> clear text`` with ansible-vault, the password read as Ansible reads it (a script is run)."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.parsing.vault import VaultLib, get_file_vault_secret

    secret = get_file_vault_secret(filename=str(password_file), loader=DataLoader())
    secret.load()
    vault = VaultLib([("default", secret)])
    return lambda text: vault.decrypt(text).decode()


def _vaulted_values(data: Any) -> Any:
    """Every string of a decrypted file is a secret: treat it as an ``!vault`` value."""
    if isinstance(data, dict):
        return {k: _vaulted_values(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_vaulted_values(v) for v in data]
    return _Vaulted(data) if isinstance(data, str) else data


def _load(path: Path, decrypt: Any = None) -> Any:
    text = path.read_text()
    if text.lstrip().startswith(_VAULT_HEADER):
        if decrypt is None:
            return _Encrypted()
        return _vaulted_values(yaml.load(decrypt(text), Loader=_Loader))
    return yaml.load(text, Loader=_Loader)


def _vars_files(base: Path) -> Iterator[tuple[str, Path]]:
    """(name, file) for ``<base>/<name>.yml`` and every file of ``<base>/<name>/``."""
    if not base.is_dir():
        return
    for entry in sorted(base.iterdir()):
        if entry.is_dir():
            for f in sorted(entry.rglob("*")):
                if f.is_file() and f.suffix in (".yml", ".yaml", ".json", "") and not f.name.startswith("."):
                    yield entry.name, f
        elif entry.suffix in (".yml", ".yaml", ".json"):
            yield entry.stem, entry


def _walk_hosts_yml(
    node: Any, group: str, groups: set[str], hosts: set[str], blocks: list[tuple[str, Any]]
) -> None:
    groups.add(group)
    if not isinstance(node, dict):
        return
    if "vars" in node:
        blocks.append((f"group {group}", node["vars"]))
    for host, hvars in (node.get("hosts") or {}).items():
        hosts.add(host)
        if hvars:
            blocks.append((f"host {host}", hvars))
    for child, sub in (node.get("children") or {}).items():
        _walk_hosts_yml(sub or {}, child, groups, hosts, blocks)


def check_inventory(
    inventory: Path,
    specs: dict[str, tuple[str, dict[str, Any]]] | None = None,
    vault_password_file: Path | None = None,
    skipped: list[str] | None = None,
) -> list[Finding]:
    """All findings for one inventory directory (``hosts.yml``, ``group_vars/``, ``host_vars/``).

    Files encrypted with ansible-vault are decrypted with ``vault_password_file``; without one their
    paths are appended to ``skipped`` (when given) and their keys are not checked.
    """
    checker = _Checker(specs if specs is not None else load_role_specs())
    decrypt = _vault_decryptor(vault_password_file) if vault_password_file else None
    findings: list[Finding] = []
    groups: set[str] = {"all", "ungrouped"}
    hosts: set[str] = set()
    hosts_files = [p for p in (inventory / "hosts.yml", inventory / "hosts.yaml") if p.exists()]
    if not hosts_files:
        return [Finding(str(inventory), "inventory", "hosts.yml", "missing: every inventory has a hosts.yml")]
    for hosts_file in hosts_files:
        rel = _rel(hosts_file)
        blocks: list[tuple[str, Any]] = []
        for top, node in (_load(hosts_file) or {}).items():
            _walk_hosts_yml(node or {}, top, groups, hosts, blocks)
        for scope, data in blocks:
            findings += checker.check(data, rel, scope)
    for kind, names, label in (("group_vars", groups, "group"), ("host_vars", hosts, "host")):
        for name, path in _vars_files(inventory / kind):
            rel = _rel(path)
            if name not in names:
                close = difflib.get_close_matches(name, sorted(names), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                findings.append(
                    Finding(rel, f"{label} {name}", "(file name)", f"no such {label} in the inventory{hint}")
                )
                continue
            data = _load(path, decrypt)
            if isinstance(data, _Encrypted):
                if skipped is not None:
                    skipped.append(rel)
                continue
            findings += checker.check(data, rel, f"{label} {name}")
    return findings


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "inventories", nargs="*", type=Path, help="inventory directories (default: inventories/*)"
    )
    parser.add_argument(
        "--vault-password-file",
        type=Path,
        help="decrypt vars files encrypted with ansible-vault (a file, or a script that prints the password)",
    )
    args = parser.parse_args(argv)
    inventories = args.inventories or sorted(p for p in (REPO / "inventories").iterdir() if p.is_dir())
    specs = load_role_specs()
    total = 0
    for inventory in inventories:
        skipped: list[str] = []
        findings = check_inventory(inventory, specs, args.vault_password_file, skipped)
        for finding in findings:
            print(finding, file=sys.stderr)
        for rel in skipped:
            print(f"{rel}: encrypted with ansible-vault, not checked (give --vault-password-file)")
        total += len(findings)
        print(f"{_rel(inventory)}: {'OK' if not findings else f'{len(findings)} error(s)'}")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
