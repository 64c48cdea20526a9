"""``GET /api/v1/openapi.json``: the HTTP API described as OpenAPI 3.1, from the operation registry.

One source: every path comes from :data:`fetchml_agent.service.ROUTES`, the table the server
serves (plus the few endpoints the server adds itself: health, this document, ``/metrics``), so a
route that exists is described and nothing else is. A request's parameters and body come from the
operation's cerberus schema (:func:`cerberus_to_json_schema`); answers from
:mod:`.api_schemas`; every error answer is the error envelope (``default``). The document is built
once per agent and served without a key (it holds no secret), like ``/api/v1/health``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..service import ROUTES, Operation
from ..service.context import AgentContext
from .api_schemas import ANSWERS, COMPONENTS, DATA_TYPES

__all__ = ["OPENAPI_PATH", "build_openapi", "cerberus_to_json_schema", "openapi_endpoint"]

OPENAPI_PATH = "/api/v1/openapi.json"
_BODY_METHODS = ("POST", "PUT", "PATCH")
_TYPES = {"string": "string", "integer": "integer", "number": "number", "float": "number", "boolean": "boolean",
          "list": "array", "dict": "object"}
_PARAM = re.compile(r"{([A-Za-z_][A-Za-z0-9_]*)}")


def _types(rule: dict[str, Any]) -> list[str]:
    declared = rule.get("type")
    names = declared if isinstance(declared, list) else ([declared] if declared else [])
    out: list[str] = []
    for n in names:
        t = _TYPES.get(n)
        if t is not None and t not in out:
            out.append(t)
    return out


def _pattern(regex: str) -> str:
    """Cerberus matches a regex against the whole value; JSON Schema searches."""
    return regex if regex.startswith("^") and regex.endswith("$") else f"^(?:{regex})$"


def cerberus_to_json_schema(rule: dict[str, Any]) -> dict[str, Any]:
    """One cerberus rule as JSON Schema (2020-12, as OpenAPI 3.1 uses)."""
    out: dict[str, Any] = {}
    types = _types(rule)
    if rule.get("nullable"):
        types = [*types, "null"] if types else []
    if types:
        out["type"] = types[0] if len(types) == 1 else types
    if "allowed" in rule:
        out["enum"] = list(rule["allowed"]) + ([None] if rule.get("nullable") else [])
    if "min" in rule:
        out["minimum"] = rule["min"]
    if "max" in rule:
        out["maximum"] = rule["max"]
    array = "array" in types
    string = "string" in types
    if "minlength" in rule:
        out["minItems" if array else "minLength"] = rule["minlength"]
    if "maxlength" in rule:
        out["maxItems" if array else "maxLength"] = rule["maxlength"]
    if rule.get("empty") is False and string and not array:
        out.setdefault("minLength", 1)
    if "regex" in rule and string:
        out["pattern"] = _pattern(rule["regex"])
    if "default" in rule and rule["default"] is not None:
        out["default"] = rule["default"]
    sub = rule.get("schema")
    if isinstance(sub, dict) and sub:
        if array:
            out["items"] = cerberus_to_json_schema(sub)
        elif "object" in types:
            out.update(_object(sub, bool(rule.get("allow_unknown", False))))
    elif "object" in types:
        out["additionalProperties"] = True
    return out


def _object(schema: dict[str, Any], allow_unknown: bool = True) -> dict[str, Any]:
    props = {k: cerberus_to_json_schema(v) for k, v in schema.items()}
    required = sorted(k for k, v in schema.items() if v.get("required"))
    out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": allow_unknown}
    if required:
        out["required"] = required
    return out


def _scalar(rule: dict[str, Any]) -> bool:
    return bool(_types(rule)) and not set(_types(rule)) & {"array", "object"}


def _answers(op: Operation) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status, data_type in ANSWERS[op.name].items():
        if data_type is None:
            schema: dict[str, Any] = {"$ref": "#/components/schemas/Message"}
        elif isinstance(data_type, tuple):
            schema = {"anyOf": [{"$ref": f"#/components/schemas/{t}"} for t in data_type]}
        else:
            schema = {"$ref": f"#/components/schemas/{data_type}"}
        out[str(status)] = {"description": "success" if data_type is None else f"data `{data_type}`",
                            "content": {"application/json": {"schema": schema}}}
    out["default"] = {"description": "an error: the envelope of docs/protocol.md's error table",
                      "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return out


def _operation(method: str, path: str, op: Operation, operation_ids: set[str]) -> dict[str, Any]:
    schema = op.schema or {}
    in_path = _PARAM.findall(path)
    params: list[dict[str, Any]] = [
        {"name": p, "in": "path", "required": True,
         "schema": {**cerberus_to_json_schema(schema.get(p, {"type": "string"})), "type": "string"}}
        for p in in_path]
    doc: dict[str, Any] = {}
    rest = {k: v for k, v in schema.items() if k not in in_path}
    if method in _BODY_METHODS:
        if rest:
            doc["requestBody"] = {"required": any(v.get("required") for v in rest.values()),
                                  "content": {"application/json": {"schema": _object(rest)}}}
    else:
        for k, v in rest.items():
            if _scalar(v):
                params.append({"name": k, "in": "query", "required": bool(v.get("required")),
                               "schema": cerberus_to_json_schema(v)})
    op_id = op.name if op.name not in operation_ids else f"{op.name}_{method.lower()}_{len(operation_ids)}"
    operation_ids.add(op_id)
    summary = (op.handler.__doc__ or op.name.replace("_", " ")).strip().splitlines()[0]
    doc.update({"operationId": op_id, "summary": summary, "tags": [_tag(path)],
                "x-opcode": f"0x{int(op.opcode):02X}", "responses": _answers(op)})
    if params:
        doc["parameters"] = params
    return doc


def _tag(path: str) -> str:
    parts = [p for p in path.split("/") if p and not p.startswith("{")][2:]
    if parts[:1] == ["jupyter"]:
        parts = parts[1:]
    return parts[0] if parts else "agent"


def build_openapi(version: str) -> dict[str, Any]:
    """The OpenAPI document of the registered routes."""
    paths: dict[str, dict[str, Any]] = {}
    ids: set[str] = set()
    for method, path, op in ROUTES:
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, op, ids)
    paths["/api/v1/health"] = {"get": {
        "operationId": "health", "summary": "Liveness: the agent answers (no key needed)", "tags": ["agent"],
        "security": [], "responses": {"200": {"description": "the agent runs", "content": {"application/json": {
            "schema": {"type": "object", "required": ["status", "version", "runtime"],
                       "properties": {"status": {"type": "string"}, "version": {"type": "string"},
                                      "runtime": {"type": "string"}}}}}}}}}
    paths[OPENAPI_PATH] = {"get": {
        "operationId": "openapi", "summary": "This document", "tags": ["agent"], "security": [],
        "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {
            "schema": {"type": "object"}}}}}}}
    paths["/metrics"] = {"get": {
        "operationId": "metrics", "summary": "Prometheus metrics (the scrape key or an admin's key)",
        "tags": ["agent"], "responses": {
            "200": {"description": "the Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}},
            "default": {"description": "an error", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Error"}}}}}}}
    schemas = {**COMPONENTS, **DATA_TYPES}
    return {
        "openapi": "3.1.0",
        "info": {"title": "FetchML Jupyter agent", "version": version,
                 "description": "The agent's HTTP API: the same operations as the binary protocol on /ws "
                                "(x-opcode names each one's opcode). Errors answer the error envelope with "
                                "the HTTP status of docs/protocol.md's error table."},
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": schemas, "securitySchemes": {
            "apiKey": {"type": "http", "scheme": "bearer", "description": "an API key (fetchml-agent new-key)"}}},
        "security": [{"apiKey": []}],
    }


def openapi_endpoint(agent: AgentContext) -> Any:
    body: list[bytes] = []

    async def endpoint(request: Request) -> Response:
        if not body:
            body.append(json.dumps(build_openapi(agent.version), separators=(",", ":")).encode())
        return Response(body[0], media_type="application/json")

    return endpoint
