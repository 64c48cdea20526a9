"""The OpenAPI document: valid 3.1, generated from the routes the server serves (all of them and
nothing else), requests from the cerberus schemas, an answer declared for every operation."""

from __future__ import annotations

import re

from openapi_spec_validator import validate

from fetchml_agent.server.api_schemas import ANSWERS, DATA_TYPES
from fetchml_agent.server.openapi import OPENAPI_PATH, build_openapi, cerberus_to_json_schema
from fetchml_agent.service import ROUTES, load_operations

SERVER_OWN = {"/api/v1/health", OPENAPI_PATH, "/metrics"}


def test_the_document_is_valid_openapi_3_1_and_describes_exactly_the_routes() -> None:
    load_operations()
    doc = build_openapi("0.1.0")
    validate(doc)
    assert doc["openapi"] == "3.1.0"
    served = {(path, method.lower()) for method, path, _ in ROUTES}
    described = {(path, method) for path, methods in doc["paths"].items() for method in methods
                 if path not in SERVER_OWN}
    assert described == served
    ids = [op["operationId"] for methods in doc["paths"].values() for op in methods.values()]
    assert len(ids) == len(set(ids))


def test_every_routed_operation_declares_its_answer() -> None:
    load_operations()
    routed = {op.name for _, _, op in ROUTES}
    assert routed <= set(ANSWERS), sorted(routed - set(ANSWERS))
    named = {t for a in ANSWERS.values() for v in a.values() if v for t in ((v,) if isinstance(v, str) else v)}
    assert named <= set(DATA_TYPES)


def test_requests_come_from_the_cerberus_schemas() -> None:
    load_operations()
    doc = build_openapi("0.1.0")
    create = doc["paths"]["/api/v1/jupyter/workspaces"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert create["required"] == ["name"] and create["properties"]["cpu"]["type"] == ["number", "string", "null"]
    history = doc["paths"]["/api/v1/jupyter/workspaces/{name}/history"]["get"]
    params = {p["name"]: p for p in history["parameters"]}
    assert params["name"]["in"] == "path" and params["name"]["required"] is True
    assert params["points"]["schema"] == {"type": "integer", "minimum": 10, "maximum": 5000, "default": 500}
    assert history["responses"]["default"]["content"]["application/json"]["schema"]["$ref"].endswith("/Error")
    assert history["x-opcode"] == "0x61"


def test_cerberus_rules_as_json_schema() -> None:
    rule = {"type": "list", "required": True, "minlength": 1, "schema": {"type": "string", "regex": "[a-z]+"}}
    assert cerberus_to_json_schema(rule) == {"type": "array", "minItems": 1,
                                             "items": {"type": "string", "pattern": "^(?:[a-z]+)$"}}
    assert cerberus_to_json_schema({"type": "string", "allowed": ["a", "b"], "nullable": True, "default": None}) == {
        "type": ["string", "null"], "enum": ["a", "b", None]}
    nested = cerberus_to_json_schema({"type": "dict", "schema": {"id": {"type": "integer", "required": True}}})
    assert nested == {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"],
                      "additionalProperties": False}
    assert re.match(cerberus_to_json_schema({"type": "string", "regex": "^x$"})["pattern"], "x")
