"""Ansible inventory plugin ``nomad_nodes``: hosts from Nomad's node list (see DOCUMENTATION)."""

# ruff: noqa: E402  (Ansible reads DOCUMENTATION, EXAMPLES and RETURN before the imports)
from __future__ import annotations

DOCUMENTATION = r"""
---
name: nomad_nodes
short_description: Nomad client nodes as an inventory
description:
  - Reads C(GET /v1/nodes) and C(GET /v1/node/:id) from a Nomad server and adds one host per node.
  - "Groups: C(nomad_dc_<datacenter>), C(nomad_pool_<node pool>), C(nomad_class_<node class>) (nodes
    without a class are in C(nomad_class_none)), C(nomad_status_<ready|down|initializing|disconnected>),
    and C(gpu) for nodes that fingerprint C(nvidia/gpu) devices."
  - Host variables C(nomad_node_id), C(nomad_datacenter), C(nomad_node_pool), C(nomad_node_class),
    C(nomad_status), C(nomad_eligible), C(nomad_drain), C(nomad_version), C(nomad_attributes) (Nomad's
    flat attribute map), C(nomad_meta), C(nomad_gpus) (one entry per GPU type as the NVIDIA device
    plugin fingerprints it, a model or a MIG device such as C(NVIDIA H100 80GB HBM3 MIG 3g.40gb), with
    count, healthy, free, memory, MIG profile and instance IDs), C(nomad_gpus_free) (free GPUs per type)
    and C(ansible_host) (the node's address).
  - "Free GPUs are the healthy instances that no live allocation holds, read from
    C(GET /v1/node/:id/allocations) for nodes with GPUs (set O(free_gpus=false) to skip that request)."
  - "The inventory file must end in C(.nomad.yml) or C(.nomad.yaml) and name C(plugin: nomad_nodes)
    (C(plugin: fetchml.platform.nomad_nodes) from the collection); enable the plugin under that name in
    C([inventory] enable_plugins) of ansible.cfg."
  - Supports C(compose), C(groups) and C(keyed_groups) like the C(constructed) plugin.
version_added: "0.1.0"
author: FetchML
extends_documentation_fragment:
  - constructed
options:
  plugin:
    description: The name of this plugin, C(nomad_nodes) or, from the collection, C(fetchml.platform.nomad_nodes).
    required: true
    choices: [nomad_nodes, fetchml.platform.nomad_nodes]
  address:
    description: URL of a Nomad agent's HTTP API.
    type: str
    default: http://127.0.0.1:4646
    env:
      - name: NOMAD_ADDR
  token:
    description: ACL token with C(node:read); sent as C(X-Nomad-Token). Keep it in a vault or in C(NOMAD_TOKEN).
    type: str
    env:
      - name: NOMAD_TOKEN
  region:
    description: Nomad region to query (the agent's own when unset).
    type: str
    env:
      - name: NOMAD_REGION
  ca_cert:
    description: CA bundle that signed the Nomad servers' certificates.
    type: path
    env:
      - name: NOMAD_CACERT
  client_cert:
    description: Client certificate for mutual TLS (Nomad's C(verify_https_client)).
    type: path
    env:
      - name: NOMAD_CLIENT_CERT
  client_key:
    description: Key of C(client_cert).
    type: path
    env:
      - name: NOMAD_CLIENT_KEY
  validate_certs:
    description: Verify the server's certificate. Turn off only for a throw-away test cluster.
    type: bool
    default: true
  timeout:
    description: Seconds to wait for each HTTP request.
    type: int
    default: 10
  filter:
    description: A Nomad filter expression passed to C(/v1/nodes), e.g. C(Datacenter == "dc1").
    type: str
  statuses:
    description: Node statuses to include; nodes in other states are left out.
    type: list
    elements: str
    default: [ready, initializing, down, disconnected]
  free_gpus:
    description: Count the free GPUs of each node (one more request per node with GPUs).
    type: bool
    default: true
  host_name:
    description: How to name hosts; C(name) is the node's name, C(id) its UUID.
    type: str
    choices: [name, id]
    default: name
"""

EXAMPLES = r"""
# inventories/production/cluster.nomad.yml
plugin: nomad_nodes
address: https://nomad.example.internal:4646
ca_cert: /etc/fetchml/nomad-ca.pem
statuses: [ready]
keyed_groups:
  - key: nomad_attributes['cpu.arch']
    prefix: arch
"""

import json
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlencode

from ansible.errors import AnsibleError, AnsibleParserError
from ansible.module_utils.urls import open_url
from ansible.plugins.inventory import BaseInventoryPlugin, Constructable

# GPUs as Nomad fingerprints them, and which are free, have one definition: the agent's (the
# repository or collection root is two levels up, and carries fetchml_agent/: galaxy.yml).
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
from fetchml_agent.nomad.devices import device_groups, used_device_ids

__all__ = ["InventoryModule", "gpu_groups_of", "host_vars_of"]

_GROUP_SAFE = re.compile(r"[^A-Za-z0-9_]")
# The names an inventory file may give in `plugin:`: this repository's, and the collection's.
_NAMES = ("nomad_nodes", "fetchml.platform.nomad_nodes")


def _group(prefix: str, value: str | None) -> str:
    return f"{prefix}_{_GROUP_SAFE.sub('_', value or 'none').lower()}"


def _attr_value(attr: dict[str, Any]) -> Any:
    """Nomad's typed ``Attribute`` (``{"Int": 81559, "Unit": "MiB"}``) as a plain value."""
    for key in ("String", "Int", "Float", "Bool"):
        if attr.get(key) is not None:
            return attr[key]
    return None


def gpu_groups_of(node: dict[str, Any], allocs: Iterable[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """NVIDIA GPU device groups of a full Node: type (a model, or a MIG device with its profile),
    count, healthy count, memory, instance IDs and, with the node's allocations, how many are free
    (healthy and held by no live allocation; ``None`` when not counted)."""
    used = used_device_ids(allocs) if allocs is not None else None
    gpus = []
    for dev in device_groups(node):
        instances = dev.get("Instances") or []
        attrs = dev.get("Attributes") or {}
        memory = attrs.get("memory") or {}
        name = str(dev.get("Name") or "")
        healthy = [i for i in instances if i.get("Healthy")]
        gpus.append(
            {
                "model": name,
                "mig_profile": name.partition(" MIG ")[2] or None,
                "count": len(instances),
                "healthy": len(healthy),
                "free": None if used is None else sum(1 for i in healthy if i.get("ID") not in used),
                "memory_mib": _attr_value(memory) if memory.get("Unit", "MiB") == "MiB" else None,
                "driver_version": _attr_value(attrs.get("driver_version") or {}),
                "ids": [i.get("ID") for i in instances],
            }
        )
    return gpus


def host_vars_of(node: dict[str, Any], allocs: Iterable[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The host variables of one full Node object (``allocs``: its allocations, to count free GPUs)."""
    attributes = node.get("Attributes") or {}
    address = attributes.get("unique.network.ip-address") or node.get("HTTPAddr", "").rsplit(":", 1)[0]
    hv: dict[str, Any] = {
        "nomad_node_id": node["ID"],
        "nomad_node_name": node.get("Name"),
        "nomad_datacenter": node.get("Datacenter"),
        "nomad_node_pool": node.get("NodePool") or "default",
        "nomad_node_class": node.get("NodeClass") or "",
        "nomad_status": node.get("Status"),
        "nomad_eligible": node.get("SchedulingEligibility") == "eligible",
        "nomad_drain": bool(node.get("Drain")),
        "nomad_version": attributes.get("nomad.version"),
        "nomad_attributes": attributes,
        "nomad_meta": node.get("Meta") or {},
        "nomad_gpus": gpu_groups_of(node, allocs),
    }
    hv["nomad_gpus_free"] = {g["model"]: g["free"] for g in hv["nomad_gpus"] if g["free"] is not None}
    if address:
        hv["ansible_host"] = address
    return hv


class InventoryModule(BaseInventoryPlugin, Constructable):
    """Builds the inventory from a Nomad cluster's node list."""

    NAME = "nomad_nodes"

    def verify_file(self, path: str) -> bool:
        return super().verify_file(path) and path.endswith((".nomad.yml", ".nomad.yaml"))

    def _get(self, path: str, params: dict[str, Any] | None = None) -> tuple[Any, dict[str, str]]:
        base = self.get_option("address").rstrip("/")
        query = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        if self.get_option("region"):
            query["region"] = self.get_option("region")
        url = f"{base}{path}" + (f"?{urlencode(query)}" if query else "")
        headers = {"Accept": "application/json"}
        if self.get_option("token"):
            headers["X-Nomad-Token"] = self.get_option("token")
        try:
            resp = open_url(
                url,
                headers=headers,
                timeout=self.get_option("timeout"),
                validate_certs=self.get_option("validate_certs"),
                ca_path=self.get_option("ca_cert"),
                client_cert=self.get_option("client_cert"),
                client_key=self.get_option("client_key"),
                use_proxy=False,
            )
            body = resp.read()
            resp_headers = {k.lower(): v for k, v in resp.headers.items()}
        except HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace").strip()
            hint = " (check the ACL token: it needs node:read)" if exc.code == 403 else ""
            raise AnsibleError(f"Nomad at {base} answered {exc.code} to GET {path}: {detail}{hint}") from None
        except (URLError, OSError) as exc:
            raise AnsibleError(
                f"cannot reach Nomad at {base}: {getattr(exc, 'reason', exc)}; set `address` or NOMAD_ADDR"
            ) from None
        try:
            return json.loads(body), resp_headers
        except ValueError:
            raise AnsibleError(
                f"Nomad at {base} answered GET {path} with something that is not JSON"
            ) from None

    def _list_nodes(self) -> list[dict[str, Any]]:
        nodes: list[dict[str, Any]] = []
        token = None
        while True:
            page, headers = self._get("/v1/nodes", {"filter": self.get_option("filter"), "next_token": token})
            if not isinstance(page, list):
                raise AnsibleError("Nomad's /v1/nodes did not answer a list")
            nodes.extend(page)
            token = headers.get("x-nomad-nexttoken")
            if not token:
                return nodes

    def parse(self, inventory: Any, loader: Any, path: str, cache: bool = True) -> None:
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        if self.get_option("plugin") not in _NAMES:
            raise AnsibleParserError(f"{path}: plugin must be {' or '.join(_NAMES)}")
        statuses = set(self.get_option("statuses"))
        strict = self.get_option("strict")
        for stub in self._list_nodes():
            if stub.get("Status") not in statuses:
                continue
            node, _ = self._get(f"/v1/node/{quote(stub['ID'], safe='')}")
            allocs = None
            if self.get_option("free_gpus") and device_groups(node):
                allocs, _ = self._get(f"/v1/node/{quote(stub['ID'], safe='')}/allocations")
            hv = host_vars_of(node, allocs)
            host = node["ID"] if self.get_option("host_name") == "id" else (node.get("Name") or node["ID"])
            self.inventory.add_host(host)
            for key, value in hv.items():
                self.inventory.set_variable(host, key, value)
            groups = [
                _group("nomad_dc", hv["nomad_datacenter"]),
                _group("nomad_pool", hv["nomad_node_pool"]),
                _group("nomad_class", hv["nomad_node_class"]),
                _group("nomad_status", hv["nomad_status"]),
            ]
            if hv["nomad_gpus"]:
                groups.append("gpu")
            for group in groups:
                self.inventory.add_group(group)
                self.inventory.add_child(group, host)
            self._set_composite_vars(self.get_option("compose"), hv, host, strict=strict)
            self._add_host_to_composed_groups(self.get_option("groups"), hv, host, strict=strict)
            self._add_host_to_keyed_groups(self.get_option("keyed_groups"), hv, host, strict=strict)
