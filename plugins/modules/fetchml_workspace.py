#!/usr/bin/python
"""Ansible module ``fetchml_workspace``: a Jupyter workspace through the agent's HTTP API."""

# ruff: noqa: E402  (Ansible reads DOCUMENTATION, EXAMPLES and RETURN before the imports)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: fetchml_workspace
short_description: Create or delete a FetchML Jupyter workspace through the agent's HTTP API
description:
  - Makes sure a workspace exists (C(state=present)) or does not (C(state=absent)) by calling the
    agent's C(/api/v1/jupyter/workspaces) endpoints, authenticated with the API key as a bearer token.
  - Idempotent; supports check mode (nothing is sent but the read) and diff mode.
  - An existing workspace whose resources or image differ from the task is not changed behind its
    users' backs; the module fails and names the differences, unless C(recreate=true).
version_added: "0.1.0"
author: FetchML
options:
  name:
    description: Workspace name.
    type: str
    required: true
  state:
    description: Whether the workspace should exist.
    type: str
    choices: [present, absent]
    default: present
  agent_url:
    description:
      - The agent, as C(http(s)://host:port); a C(ws://host:port/ws) URL as the C(ml) CLI takes it is
        accepted too. Falls back to C(FETCHML_SERVER).
    type: str
    required: true
  api_key:
    description: API key of a user allowed to manage the workspace. Falls back to C(FETCHML_API_KEY).
    type: str
    required: true
  resources:
    description: Resources of the workspace, as C(ml jupyter create) takes them.
    type: dict
    suboptions:
      cpu:
        description: CPU cores (C(4), C(0.5)).
        type: float
      memory:
        description: Memory such as C(8g) or C(512m).
        type: str
      gpu:
        description: Number of GPUs.
        type: int
      disk:
        description: Disk such as C(20g).
        type: str
  image:
    description: Container image of the workspace (the agent's default when unset).
    type: str
  template:
    description: Name of a workspace template on the agent, used when the workspace is created.
    type: str
  experiment:
    description: Experiment ID to link the workspace to when it is created.
    type: str
  security:
    description:
      - Workspace C(security:) settings (trusted_channels, blocked_packages, approval_required,
        allowlist); they can only tighten the agent's policy. Sent when the workspace is created.
    type: dict
  recreate:
    description: Delete and create again a workspace whose resources or image differ. Stops it.
    type: bool
    default: false
  validate_certs:
    description: Verify the agent's TLS certificate.
    type: bool
    default: true
  ca_path:
    description: CA bundle that signed the agent's certificate.
    type: path
  timeout:
    description: Seconds to wait for each request.
    type: int
    default: 60
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
"""

EXAMPLES = r"""
- name: Give the team a GPU workspace.
  fetchml_workspace:
    name: vision-team
    agent_url: https://agent.example.internal:8443
    api_key: "{{ vault_fetchml_admin_api_key }}"
    resources: {cpu: 8, memory: 32g, gpu: 1}
    image: jupyter/scipy-notebook:latest

- name: Remove it.
  fetchml_workspace:
    name: vision-team
    state: absent
    agent_url: https://agent.example.internal:8443
    api_key: "{{ vault_fetchml_admin_api_key }}"
"""

RETURN = r"""
workspace:
  description: The workspace as the agent describes it after the task (empty when absent).
  returned: always
  type: dict
  sample: {"name": "vision-team", "status": "running", "resources": {"cpu": 8, "memory": "32g", "gpu": 1}}
differences:
  description: The fields that differed from the task, each with its current and wanted value.
  returned: when the workspace existed
  type: dict
"""

import json
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from ansible.module_utils.basic import AnsibleModule, env_fallback
from ansible.module_utils.urls import fetch_url

# module_utils from ansible.cfg's path in this repository, or from the collection (fetchml.platform).
try:
    from ansible.module_utils.fetchml_units import parse_cpu, parse_size_mb
except ImportError:
    from ansible_collections.fetchml.platform.plugins.module_utils.fetchml_units import (
        parse_cpu,
        parse_size_mb,
    )

__all__ = ["agent_base_url", "differences", "error_message", "main"]

_API = "/api/v1/jupyter/workspaces"


class _AgentError(Exception):
    pass


def agent_base_url(url: str) -> str:
    """``ws://h:p/ws`` → ``http://h:p``; ``https://h:p/`` → ``https://h:p``."""
    parts = urlsplit(url.strip())
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"agent_url must look like https://host:port, got {url!r}")
    path = parts.path.rstrip("/")
    if path.endswith("/ws"):
        path = path[: -len("/ws")]
    return urlunsplit((scheme, parts.netloc, path, "", ""))


_HINTS = {"auth_failed": "the api_key is not known to the agent", "permission_denied": "the api_key's user may not do this"}


def error_message(status: int, data: Any) -> str:
    """What to tell the user about a failed call.

    The agent answers every error with one envelope (``fetchml_agent/errors.py``, ``to_dict``):
    ``{"error": "auth_failed", "code": 2, "message": "...", "details": "..."}`` plus typed fields
    (``package``, ``rule``...): ``message`` is the sentence for a person, ``details`` what was
    tried, ``error`` the code's name. A body that is not the envelope (a proxy's error page) is
    shown as it came.
    """
    if not isinstance(data, dict) or not isinstance(data.get("message"), str):
        hint = {401: "auth_failed", 403: "permission_denied"}.get(status)
        return f"{data}" + (f" ({_HINTS[hint]})" if hint else "")
    text = data["message"]
    if data.get("details"):
        text += f" ({data['details']})"
    if data.get("error") in _HINTS:
        text += f" ({_HINTS[data['error']]})"
    return text


def _normalized(resources: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (resources or {}).items():
        if value is None:
            continue
        if key == "cpu":
            out[key] = parse_cpu(value, "resources.cpu")
        elif key in ("memory", "disk"):
            out[key] = parse_size_mb(value, f"resources.{key}")
        elif key == "gpu":
            out[key] = int(value)
        else:
            out[key] = value
    return out


def differences(current: dict[str, Any], wanted: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Fields the task sets that differ on the agent; sizes and CPUs compared as numbers."""
    diff: dict[str, dict[str, Any]] = {}
    have = _normalized(current.get("resources"))
    for key, value in _normalized(wanted.get("resources")).items():
        if have.get(key, 0 if key == "gpu" else None) != value:
            diff[f"resources.{key}"] = {
                "current": (current.get("resources") or {}).get(key),
                "wanted": wanted["resources"][key],
            }
    if wanted.get("image") and current.get("image") != wanted["image"]:
        diff["image"] = {"current": current.get("image"), "wanted": wanted["image"]}
    return diff


class _Agent:
    def __init__(self, module: AnsibleModule, base: str) -> None:
        self.module = module
        self.base = base
        self.headers = {
            "Authorization": f"Bearer {module.params['api_key']}",
            "Accept": "application/json",
            "Content-Type": "application/json",
        }

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        resp, info = fetch_url(
            self.module,
            self.base + path,
            data=json.dumps(body) if body is not None else None,
            headers=self.headers,
            method=method,
            timeout=self.module.params["timeout"],
            ca_path=self.module.params["ca_path"],
        )
        status = info.get("status", -1)
        # On an HTTP error fetch_url has read the answer into info["body"] already (and hands back
        # the spent HTTPError as ``resp``): the error envelope is there.
        if "body" in info:
            raw = info["body"]
        else:
            raw = resp.read() if resp is not None else b""
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        if status == -1:
            raise _AgentError(f"cannot reach the agent at {self.base}: {info.get('msg')}")
        return status, data

    def fail_for(self, action: str, status: int, data: Any) -> None:
        raise _AgentError(f"{action}: the agent answered {status}: {error_message(status, data)}")


def _workspace(data: Any) -> dict[str, Any]:
    if isinstance(data, dict) and isinstance(data.get("workspace"), dict):
        return data["workspace"]
    return data if isinstance(data, dict) else {}


def _run(module: AnsibleModule) -> dict[str, Any]:
    p = module.params
    try:
        base = agent_base_url(p["agent_url"])
        wanted_resources = {k: v for k, v in (p["resources"] or {}).items() if v is not None}
        _normalized(wanted_resources)  # fail early on "8 gigs"
    except ValueError as exc:
        raise _AgentError(str(exc)) from None
    agent = _Agent(module, base)
    path = f"{_API}/{quote(p['name'], safe='')}"
    status, data = agent.call("GET", path)
    if status == 404:
        current = None
    elif status == 200:
        current = _workspace(data)
    else:
        agent.fail_for(f"reading workspace {p['name']!r}", status, data)

    wanted: dict[str, Any] = {"name": p["name"]}
    if wanted_resources:
        wanted["resources"] = wanted_resources
    for key in ("image", "template", "experiment", "security"):
        if p[key] is not None:
            wanted[key] = p[key]

    result: dict[str, Any] = {"changed": False, "workspace": current or {}}
    if p["state"] == "absent":
        if current is None:
            return result
        result.update(changed=True, workspace={}, diff={"before": current, "after": {}})
        if not module.check_mode:
            status, data = agent.call("DELETE", path)
            if status not in (200, 202, 204, 404):
                agent.fail_for(f"deleting workspace {p['name']!r}", status, data)
        return result

    if current is not None:
        diff = differences(current, wanted)
        result["differences"] = diff
        if not diff:
            return result
        if not p["recreate"]:
            listed = "; ".join(f"{k} is {v['current']!r}, wanted {v['wanted']!r}" for k, v in diff.items())
            raise _AgentError(
                f"workspace {p['name']!r} exists and differs: {listed}. Set recreate=true to delete and "
                "create it again (this stops it), or change it with `ml jupyter scale`."
            )
    result.update(changed=True, diff={"before": current or {}, "after": wanted}, workspace=wanted)
    if module.check_mode:
        return result
    if current is not None:
        status, data = agent.call("DELETE", path)
        if status not in (200, 202, 204, 404):
            agent.fail_for(f"deleting workspace {p['name']!r} to recreate it", status, data)
    status, data = agent.call("POST", _API, wanted)
    if status not in (200, 201, 202):
        agent.fail_for(f"creating workspace {p['name']!r}", status, data)
    result["workspace"] = _workspace(data) or wanted
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            agent_url=dict(type="str", required=True, fallback=(env_fallback, ["FETCHML_SERVER"])),
            api_key=dict(
                type="str", required=True, no_log=True, fallback=(env_fallback, ["FETCHML_API_KEY"])
            ),
            resources=dict(
                type="dict",
                options=dict(
                    cpu=dict(type="float"),
                    memory=dict(type="str"),
                    gpu=dict(type="int"),
                    disk=dict(type="str"),
                ),
            ),
            image=dict(type="str"),
            template=dict(type="str"),
            experiment=dict(type="str"),
            security=dict(type="dict"),
            recreate=dict(type="bool", default=False),
            validate_certs=dict(type="bool", default=True),
            ca_path=dict(type="path"),
            timeout=dict(type="int", default=60),
        ),
        supports_check_mode=True,
    )
    try:
        result = _run(module)
    except _AgentError as exc:
        module.fail_json(msg=str(exc))
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
