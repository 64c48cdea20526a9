"""What each operation of the HTTP API answers, as JSON Schema: the response half of the OpenAPI
document (:mod:`.openapi`; the request half comes from each operation's cerberus schema).

:data:`DATA_TYPES` describes each data type an operation answers (the ``data_type`` of its
:class:`~fetchml_agent.service.calls.Result`); :data:`ANSWERS` says, per operation, which status
codes carry which type. A test keeps this table covering every operation with a route, and
schemathesis checks real answers against it. Objects list the keys every answer has; more keys may
come (``additionalProperties``), so an answer can grow without breaking its schema.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ANSWERS", "DATA_TYPES", "ERROR", "MESSAGE"]


def _obj(required: tuple[str, ...] = (), **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": list(required), "properties": props}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


S = {"type": "string"}
I = {"type": "integer"}  # noqa: E741
N = {"type": "number"}
B = {"type": "boolean"}
O = {"type": "object"}  # noqa: E741
S0 = {"type": ["string", "null"]}
I0 = {"type": ["integer", "null"]}
N0 = {"type": ["number", "null"]}


def _list(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item}


STATUS = {"type": "string", "enum": ["starting", "running", "stopping", "stopped", "failed", "missing"]}
RESOURCES = _obj(("cpu", "memory", "memory_mb", "gpu", "disk"), cpu=N0, memory=S0, memory_mb=I0, gpu=I, disk=S0)

#: The error envelope of every non-2xx answer (fetchml_agent/errors.py, FetchmlError.to_dict).
ERROR = _obj(("error", "code", "message"), error=S, code=I, message=S, details=S)
MESSAGE = _obj(("message",), message=S)

DATA_TYPES: dict[str, dict[str, Any]] = {
    "workspace": _obj(
        ("id", "name", "owner", "status", "message", "url", "path", "runtime", "resources", "limits",
         "limits_enforced", "password_protected", "created_at", "updated_at"),
        id=S, name=S, owner=S, status=STATUS, message=S, url=S0, path=S, port=I0, runtime=S, image=S0,
        resources=_ref("Resources"), limits=O, limits_enforced=B, password_protected=B, experiment=S0,
        access=_list(O), created_at=N, updated_at=N, started_at=N0),
    "jupyter_services": _obj(("services",), services=_list(_obj(
        ("id", "name", "workspace", "status", "url", "owner", "runtime", "created_at"),
        id=S, name=S, workspace=S, status=STATUS, url=S0, owner=S, port=I0, runtime=S, created_at=N))),
    "workspace_status": _obj(("name", "id", "status", "message", "url"), name=S, id=S, status=STATUS, message=S,
                             url=S0, stats=O),
    "workspace_stats": _obj(("name", "resources", "limits"), name=S, resources=_ref("Resources"), limits=O),
    "workspace_limits": _obj(("name", "resources", "limits"), name=S, resources=_ref("Resources"), limits=O),
    "agent_status": _obj(("agent", "runtime", "workspaces"), agent=_obj(("version", "uptime_s", "user", "role")),
                         runtime=_obj(("name",), name=S), workspaces=O),
    "audit_log": _obj(("events",), workspace=S0, workspace_id=S0, events=_list(_obj(
        ("id", "ts", "user", "action", "outcome"), id=I, ts=N, user=S, action=S, workspace=S0, outcome=S))),
    "workspace_logs": _obj(("name", "lines"), name=S, lines=_list(S)),
    "git": _obj(("name", "exit_code", "output"), name=S, exit_code=I, output=S),
    "notebook_versions": _obj(("notebook",), notebook=S),
    "optimize": _obj(("name", "kernels", "idle_kernels", "shut_down", "advice"), name=S, stats=O, kernels=I,
                     idle_kernels=_list(S), shut_down=_list(S), advice=_list(S)),
    "package_install": _obj(("workspace",), workspace=S),
    "package_uninstall": O,
    "package_list": _obj(("packages",), packages=_list(O)),
    "package_check": _obj(("decision", "rule", "reason", "spec"), decision=S, package=S0, rule=S, reason=S,
                          spec=S, workspace=S0),
    "package_check_list": O,
    "package_cache": _obj(("message", "workspace"), message=S, workspace=S),
    "security_scan": O,
    "package_request": _obj(("message",), message=S),
    "package_requests": _obj(("requests", "mine"), requests=_list(O), mine=B),
    "image": _obj(("image",), image=S),
    "access": _obj(("workspace", "role"), workspace=S, role=S, user=S, team=S),
    "experiment_link": O,
    "run": _obj(("id", "status"), id=S, status=S),
    "runs": _obj(("runs", "total"), runs=_list(_obj(("id", "status"), id=S, status=S)), total=I),
    "sync": O,
    "workspace_metadata": O,
    "workspace_export": O,
    "sessions": _obj(("sessions",), sessions=_list(_obj(("id", "user"), id=S, user=S, workspace=S))),
    "mfa_enrollment": _obj(("user", "uri", "secret"), user=S, uri=S, secret=S),
    "mfa_confirmed": _obj(("user", "enrolled", "recovery_codes"), user=S, enrolled=B, recovery_codes=_list(S)),
    "mfa_status": _obj(("user", "enrolled"), user=S, enrolled=B, pending=B, recovery_codes_left=I),
    "mfa_elevation": _obj(("user", "until"), user=S, until=N),
    "audit_verify": _obj(("ok", "checked"), ok=B, checked=I, first_bad={"type": ["object", "null"]}),
    "audit_verify_export": _obj(("ok", "checked", "events"), ok=B, checked=I, events=I),
    "retention": O,
    "user_export": _obj(("user", "sections"), user=S, generated_at=N, sections=O),
    "user_erase": _obj(("pseudonym",), pseudonym=S),
    "workspace_history": _obj(
        ("name", "since", "until", "step_s", "series", "events", "summary"), name=S, workspace_id=S, since=N, until=N,
        step_s=I, interval_s=N0, series=_list(_obj(("t", "n"), t=N, n=I, cpu_cores=N0, memory_bytes=N0,
                                                    memory_limit_bytes=N0, gpu_utilization=N0, disk_bytes=N0)),
        events=_list(_obj(("ts", "kind", "details"), ts=N, kind=S, details=O)), summary=O),
    "workspace_report": _obj(("name", "format", "generated_at"), name=S,
                             format={"type": "string", "enum": ["html", "text", "json"]}, generated_at=N, content=S,
                             report=O),
}

#: Per operation: {status code: data type (a tuple: any of them), or ``None`` for ``{"message": ...}``}.
ANSWERS: dict[str, dict[int, str | tuple[str, ...] | None]] = {
    "create_workspace": {201: "workspace"},
    "start_jupyter": {200: "workspace"},
    "stop_jupyter": {200: None},
    "list_jupyter": {200: "jupyter_services"},
    "workspace_info": {200: "workspace"},
    "workspace_status": {200: "workspace_status"},
    "restart_workspace": {200: "workspace"},
    "delete_workspace": {200: None},
    "workspace_stats": {200: "workspace_stats"},
    "workspace_limits": {200: "workspace_limits"},
    "agent_status": {200: "agent_status"},
    "audit_log": {200: "audit_log"},
    "scale_workspace": {200: "workspace"},
    "reset_workspace": {200: "workspace"},
    "workspace_logs": {200: "workspace_logs"},
    "workspace_git": {200: "git"},
    "notebook_version": {200: "notebook_versions"},
    "optimize_workspace": {200: "optimize"},
    "install_package": {200: "package_install"},
    "list_packages": {200: "package_list"},
    "check_package": {200: ("package_check", "package_check_list")},
    "clear_cache": {200: "package_cache"},
    "security_scan": {200: "security_scan"},
    "request_package": {200: "package_request"},
    "review_requests": {200: "package_requests"},
    "approve_request": {200: "package_request"},
    "deny_request": {200: "package_request"},
    "uninstall_package": {200: "package_uninstall"},
    "build_image": {200: "image"},
    "link_experiment": {200: "experiment_link", 201: "experiment_link"},
    "queue_run": {201: "run"},
    "sync_workspace": {200: "sync"},
    "workspace_metadata": {200: "workspace_metadata"},
    "export_workspace": {200: "workspace_export"},
    "cancel_run": {200: "run"},
    "run_status": {200: "runs"},
    "run_info": {200: "run"},
    "grant_access": {200: "access"},
    "share_workspace": {200: "access"},
    "revoke_access": {200: None},
    "sessions_list": {200: "sessions"},
    "session_end": {200: None},
    "mfa_enroll": {200: "mfa_enrollment"},
    "mfa_confirm": {200: "mfa_confirmed"},
    "mfa_status": {200: "mfa_status"},
    "mfa_reset": {200: None},
    "mfa_elevate": {200: "mfa_elevation"},
    "workspace_password": {200: None},
    "audit_verify": {200: "audit_verify"},
    "audit_verify_export": {200: "audit_verify_export"},
    "retention": {200: "retention"},
    "user_export": {200: "user_export"},
    "user_erase": {200: "user_erase"},
    "workspace_history": {200: "workspace_history"},
    "workspace_report": {200: "workspace_report"},
}

#: Shared components besides the data types.
COMPONENTS: dict[str, dict[str, Any]] = {"Error": ERROR, "Message": MESSAGE, "Resources": RESOURCES}
