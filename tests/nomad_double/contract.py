"""Nomad's own OpenAPI description as the double's contract: every request and answer checked.

``openapi/openapi.yaml`` is HashiCorp's description of Nomad's HTTP API (``openapi/README.md``
says where it comes from and its licence). :meth:`Contract.check` finds the operation of each
request the double serves and checks the request (method, query parameters, JSON body) and the
answer (status, content type, JSON body) against it; every mismatch goes to ``violations``, and
the fixtures fail the test that caused it (``fixtures.py``).

The spec is read as Nomad writes JSON (Go's ``encoding/json`` over its structs), and more
strictly than it is written:

* an object holds only the fields its schema names (the spec allows any): a field the double
  invents or the agent misspells is a mismatch (Nomad would drop a misspelt one silently);
* a slice, map or pointer may be ``null``: Go writes nil that way, the spec never says nullable;
* a request that breaks the spec counts only when the double accepted it (2xx): tests send bad
  requests on purpose, and Nomad refuses them as the double does.

Where Nomad's real behaviour, read from its source, differs from the spec, :data:`DEVIATIONS`
says so and names the file of hashicorp/nomad that shows it. Nothing else is excused.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft4Validator
from jsonschema.exceptions import ValidationError

__all__ = ["DEVIATIONS", "Contract", "Deviation", "component", "schema_errors", "spec", "zero"]

SPEC = Path(__file__).with_name("openapi") / "openapi.yaml"
_GO_BOOL = {"1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False"}


@dataclass(frozen=True)
class Deviation:
    """Where Nomad differs from its spec: what it does, the hashicorp/nomad file that shows it,
    and the JSON schema of the extra field, parameter or answer (when there is one)."""

    why: str
    source: str
    schema: dict[str, Any] | None = None
    params: tuple[str, ...] = ()  # the string query parameters of an operation the spec lacks


_STR, _INT, _BOOL = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}
_STRS = {"type": "array", "items": _STR}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


# Keys: "Schema.Field" a field the spec's struct lacks; "?param" a query parameter of every
# operation, "?param METHOD /path" of one; "METHOD /path STATUS" an undeclared status;
# "METHOD /path" an operation the spec lacks (its schema is the 2xx answer's).
DEVIATIONS: dict[str, Deviation] = {
    # -- query parameters ---------------------------------------------------------------------
    "?index": Deviation(
        "blocking queries read `index` from the query string; the spec declares a header",
        "command/agent/http.go (parseWait)",
        _INT,
    ),
    "?filter": Deviation("every read takes a go-bexpr `filter`", "command/agent/http.go (parseFilter)", _STR),
    "?namespace": Deviation("every request takes it", "command/agent/http.go (parseNamespace)", _STR),
    "?region": Deviation("every request takes it", "command/agent/http.go (parseRegion)", _STR),
    "?meta GET /jobs": Deviation(
        "`meta=true` adds each job's Meta to the stubs (Nomad 1.6)",
        "command/agent/job_endpoint.go (jobListRequest)",
        _BOOL,
    ),
    # -- methods, statuses -------------------------------------------------------------------
    "PUT /jobs": Deviation("PUT is taken as POST", "command/agent/job_endpoint.go (JobsRequest)"),
    "PUT /job/{jobName}": Deviation("PUT is taken as POST", "command/agent/job_endpoint.go (jobCRUD)"),
    "PUT /validate/job": Deviation(
        "PUT is taken as POST", "command/agent/job_endpoint.go (ValidateJobRequest)"
    ),
    "GET /job/{jobName} 404": Deviation("`job not found`", "command/agent/job_endpoint.go (jobQuery)"),
    "GET /job/{jobName}/summary 404": Deviation(
        "`job not found`", "command/agent/job_endpoint.go (jobSummaryRequest)"
    ),
    "GET /allocation/{allocID} 404": Deviation(
        "`alloc not found`", "command/agent/alloc_endpoint.go (AllocSpecificRequest)"
    ),
    "POST /allocation/{allocID}/stop 404": Deviation(
        "`allocation not found`", "command/agent/alloc_endpoint.go (allocStop)"
    ),
    "GET /evaluation/{evalID} 404": Deviation(
        "`eval not found`", "command/agent/eval_endpoint.go (evalQuery)"
    ),
    "GET /node/{nodeId} 404": Deviation("`node not found`", "command/agent/node_endpoint.go (nodeQuery)"),
    "GET /var/{path} 404": Deviation(
        "`variable not found`", "command/agent/variable_endpoint.go (variableQuery)"
    ),
    "PUT /var/{path} 409": Deviation(
        "a failed check-and-set answers 409 with the current variable as JSON",
        "command/agent/variable_endpoint.go (variableUpsert)",
        _ref("VariableMetadata"),
    ),
    "DELETE /var/{path} 409": Deviation(
        "a failed check-and-set answers 409 with the current variable as JSON",
        "command/agent/variable_endpoint.go (variableDelete)",
        _ref("VariableMetadata"),
    ),
    "DELETE /var/{path} 204": Deviation(
        "a delete answers 204 No Content (the spec: 200); it reads no body (the spec: one is required)",
        "command/agent/variable_endpoint.go (variableDelete)",
    ),
    # -- fields on the wire that the spec's structs lack ---------------------------------------
    "Job.NodePool": Deviation("node pools (Nomad 1.6) postdate the spec", "api/jobs.go (Job)", _STR),
    "RestartPolicy.RenderTemplates": Deviation(
        "re-render templates on restart (Nomad 1.5)", "api/tasks.go (RestartPolicy)", _BOOL
    ),
    "JobListStub.NodePool": Deviation("node pools", "nomad/structs/structs.go (JobListStub)", _STR),
    "JobListStub.Multiregion": Deviation(
        "the server's stub has it", "nomad/structs/structs.go (JobListStub)", _ref("Multiregion")
    ),
    "JobListStub.Meta": Deviation(
        "with `meta=true`, when the job has any (omitempty)",
        "nomad/structs/structs.go (JobListStub)",
        {"type": "object", "additionalProperties": _STR},
    ),
    "NodeListStub.NodePool": Deviation("node pools (Nomad 1.6)", "api/nodes.go (NodeListStub)", _STR),
    "Node.NodePool": Deviation("node pools (Nomad 1.6)", "api/nodes.go (Node)", _STR),
    "JobRegisterResponse.Index": Deviation(
        "the server writes its QueryMeta (`Index`); the api struct's LastIndex comes from a header",
        "nomad/structs/structs.go (JobRegisterResponse, QueryMeta)",
        _INT,
    ),
    "JobDeregisterResponse.Index": Deviation(
        "the server writes its QueryMeta (`Index`)", "nomad/structs/structs.go (JobDeregisterResponse)", _INT
    ),
    "JobDeregisterResponse.VolumeEvalID": Deviation(
        "dynamic host volumes (Nomad 1.10)", "nomad/structs/structs.go (JobDeregisterResponse)", _STR
    ),
    "JobDeregisterResponse.VolumeEvalIndex": Deviation(
        "dynamic host volumes (Nomad 1.10)", "nomad/structs/structs.go (JobDeregisterResponse)", _INT
    ),
    "Allocation.NetworkStatus": Deviation(
        "the allocation's network (bridge address)",
        "api/allocations.go (Allocation)",
        _ref("AllocNetworkStatus"),
    ),
    "AllocationListStub.NextAllocation": Deviation(
        "the replacement allocation", "api/allocations.go (AllocationListStub)", _STR
    ),
    "AllocatedResources.TaskLifecycles": Deviation(
        "each task's lifecycle hook", "nomad/structs/structs.go (AllocatedResources)", {"type": "object"}
    ),
    "AllocatedCpuResources.ReservedCores": Deviation(
        "the cores reserved for `resources.cores`",
        "nomad/structs/structs.go (AllocatedCpuResources)",
        {"type": "array", "items": _INT},
    ),
    "AllocationMetric.NodesInPool": Deviation(
        "nodes in the job's node pool (Nomad 1.6)", "api/allocations.go (AllocationMetric)", _INT
    ),
    "Evaluation.LeaderACL": Deviation(
        "the server's struct has it", "nomad/structs/eval.go (Evaluation)", _STR
    ),
    # -- operations the spec lacks (client endpoints, the event stream) -------------------------
    "GET /client/allocation/{allocID}/stats": Deviation(
        "client endpoint, not in the spec; the client's own structs",
        "client/structs/structs.go (AllocResourceUsage)",
        _ref("AllocResourceUsage"),
        ("task",),
    ),
    "POST /client/allocation/{allocID}/restart": Deviation(
        "client endpoint, not in the spec; answers `{}`",
        "command/agent/alloc_endpoint.go (allocRestart)",
        {"type": "object"},
    ),
    "GET /client/fs/ls/{allocID}": Deviation(
        "client endpoint, not in the spec",
        "api/fs.go (AllocFileInfo)",
        {"type": "array", "items": _ref("AllocFileInfo")},
        ("path",),
    ),
    "GET /client/fs/stat/{allocID}": Deviation(
        "client endpoint, not in the spec", "api/fs.go (AllocFileInfo)", _ref("AllocFileInfo"), ("path",)
    ),
    "GET /client/fs/cat/{allocID}": Deviation(
        "client endpoint, not in the spec: the file's raw bytes",
        "command/agent/fs_endpoint.go (FileCatRequest)",
        params=("path",),
    ),
    "GET /event/stream": Deviation(
        "not in the spec: newline-delimited JSON frames, `{}` heartbeats",
        "command/agent/event_endpoint.go, nomad/structs/event.go",
        _ref("Events"),
        ("index", "topic"),
    ),
}
for _path in ("/client/allocation/{allocID}/restart",):
    DEVIATIONS[f"PUT {_path}"] = Deviation("PUT is taken as POST", DEVIATIONS[f"POST {_path}"].source)
for _path in ("/client/fs/ls/{allocID}", "/client/fs/stat/{allocID}", "/client/fs/cat/{allocID}"):
    for _status in (403, 404, 500):
        DEVIATIONS[f"GET {_path} {_status}"] = Deviation(
            "client filesystem errors: outside the alloc dir or secrets (403), missing (404)",
            "client/fs_endpoint.go",
        )
for _op in ("GET /client/allocation/{allocID}/stats", "POST /client/allocation/{allocID}/restart"):
    for _status in (404, 500):
        DEVIATIONS[f"{_op} {_status}"] = Deviation(
            "unknown allocation (404), allocation not running (500)", "client/alloc_endpoint.go"
        )
for _status in (400, 403, 404, 405, 500):
    DEVIATIONS[f"GET /event/stream {_status}"] = Deviation(
        "bad index or topic (400), no capability for a topic (403), Nomad before 1.0 (404), RPC failure (500)",
        "command/agent/event_endpoint.go, nomad/event_endpoint.go (validateNsOp)",
    )

# Schemas of the operations the spec lacks, written from the Go structs named in DEVIATIONS (and
# the exec WebSocket's client frames: plugins/drivers/proto/driver.pb.go ExecTaskStreamingRequestMsg).
_EXTRA_SCHEMAS = yaml.safe_load(
    """
MemoryStats:
  properties: {RSS: {type: integer}, Cache: {type: integer}, Swap: {type: integer},
    MappedFile: {type: integer}, Usage: {type: integer}, MaxUsage: {type: integer},
    KernelUsage: {type: integer}, KernelMaxUsage: {type: integer},
    Measured: {type: array, items: {type: string}}}
CpuStats:
  properties: {SystemMode: {type: number}, UserMode: {type: number}, TotalTicks: {type: number},
    ThrottledPeriods: {type: integer}, ThrottledTime: {type: integer}, Percent: {type: number},
    Measured: {type: array, items: {type: string}}}
StatValue:
  properties: {FloatNumeratorVal: {type: number}, FloatDenominatorVal: {type: number},
    IntNumeratorVal: {type: integer}, IntDenominatorVal: {type: integer},
    StringVal: {type: string}, BoolVal: {type: boolean}, Unit: {type: string}, Desc: {type: string}}
StatObject:
  properties:
    Nested: {type: object, additionalProperties: {$ref: '#/components/schemas/StatObject'}}
    Attributes: {type: object, additionalProperties: {$ref: '#/components/schemas/StatValue'}}
DeviceStats:
  properties: {Summary: {$ref: '#/components/schemas/StatValue'},
    Stats: {$ref: '#/components/schemas/StatObject'}, Timestamp: {type: string}}
DeviceGroupStats:
  properties: {Vendor: {type: string}, Type: {type: string}, Name: {type: string},
    InstanceStats: {type: object, additionalProperties: {$ref: '#/components/schemas/DeviceStats'}}}
ResourceUsage:
  properties: {MemoryStats: {$ref: '#/components/schemas/MemoryStats'},
    CpuStats: {$ref: '#/components/schemas/CpuStats'},
    DeviceStats: {type: array, items: {$ref: '#/components/schemas/DeviceGroupStats'}}}
TaskResourceUsage:
  properties: {ResourceUsage: {$ref: '#/components/schemas/ResourceUsage'}, Timestamp: {type: integer},
    Pids: {type: object, additionalProperties: {$ref: '#/components/schemas/ResourceUsage'}}}
AllocResourceUsage:
  properties: {ResourceUsage: {$ref: '#/components/schemas/ResourceUsage'}, Timestamp: {type: integer},
    Tasks: {type: object, additionalProperties: {$ref: '#/components/schemas/TaskResourceUsage'}}}
ExecStreamingInput:
  properties:
    stdin: {type: object, additionalProperties: false,
      properties: {data: {type: string, format: byte}, close: {type: boolean}}}
    tty_size: {type: object, additionalProperties: false,
      properties: {height: {type: integer}, width: {type: integer}}}
AllocRestartRequest:
  properties: {TaskName: {type: string}, AllTasks: {type: boolean}}
AllocFileInfo:
  properties: {Name: {type: string}, IsDir: {type: boolean}, Size: {type: integer},
    FileMode: {type: string}, ModTime: {type: string}, ContentType: {type: string}}
AllocNetworkStatus:
  properties: {InterfaceName: {type: string}, Address: {type: string}, AddressIPv6: {type: string},
    DNS: {$ref: '#/components/schemas/DNSConfig'}}
Event:
  required: [Topic, Type, Key, Namespace, FilterKeys, Index, Payload]
  properties: {Topic: {type: string}, Type: {type: string}, Key: {type: string},
    Namespace: {type: string}, FilterKeys: {type: array, items: {type: string}},
    Index: {type: integer, minimum: 0}, Payload: {type: object}}
Events:
  required: [Index, Events]
  properties: {Index: {type: integer, minimum: 1},
    Events: {type: array, minItems: 1, items: {$ref: '#/components/schemas/Event'}}}
"""
)


#: The event stream's topics whose payload is one object of the spec, held under the topic's name.
EVENT_PAYLOADS = ("Job", "Allocation", "Evaluation", "Deployment", "Node")


@functools.cache
def spec() -> dict[str, Any]:
    """The vendored spec, parsed once per process."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SPEC.open() as f:
        return yaml.load(f, Loader=loader)


@functools.cache
def component(name: str) -> dict[str, Any]:
    """The spec's schema ``name`` (or one of this module's), with the fields of DEVIATIONS added."""
    schemas = spec()["components"]["schemas"]
    schema = dict(schemas[name] if name in schemas else _EXTRA_SCHEMAS[name])
    extra = {k.split(".", 1)[1]: d.schema for k, d in DEVIATIONS.items() if k.startswith(f"{name}.")}
    if extra:
        schema["properties"] = {**(schema.get("properties") or {}), **extra}
    return schema


def zero(name: str, **values: Any) -> dict[str, Any]:
    """The JSON Go writes for a zero-valued struct ``name``, with ``values`` set: "" for strings,
    0 and false, the zero time for timestamps, null for slices, maps and pointers."""
    out: dict[str, Any] = {}
    for field, schema in (component(name).get("properties") or {}).items():
        kind = schema.get("type")
        if kind == "string":
            out[field] = "0001-01-01T00:00:00Z" if schema.get("format") == "date-time" else ""
        else:
            out[field] = {"integer": 0, "number": 0.0, "boolean": False}.get(kind or "")
    unknown = set(values) - set(out)
    if unknown:
        raise KeyError(f"{name} has no field {sorted(unknown)}")
    return {**out, **values}


def _go_json(schema: Any, top: bool = True) -> Any:
    """An OpenAPI 3.0 schema as Go writes it: nil may be null, no fields beyond the struct's."""
    if isinstance(schema, list):
        return [_go_json(s, False) for s in schema]
    if not isinstance(schema, dict):
        return schema
    nil = ("items", "additionalProperties")
    out = {k: _go_json(v, k not in nil) for k, v in schema.items() if k not in ("format", "properties")}
    if "properties" in schema:
        out["properties"] = {k: _go_json(v, False) for k, v in schema["properties"].items()}
        out.setdefault("additionalProperties", False)
    if top:
        return out
    if "$ref" in out:
        return {"anyOf": [{"type": "null"}, out]}
    if out.get("type") in ("object", "array"):
        out["type"] = [out["type"], "null"]
    return out


@functools.cache
def _root() -> dict[str, Any]:
    names = [*spec()["components"]["schemas"], *_EXTRA_SCHEMAS]
    return {"components": {"schemas": {n: _go_json({"type": "object", **component(n)}) for n in names}}}


@functools.cache
def _validator(schema_json: str) -> Draft4Validator:
    return Draft4Validator({**json.loads(schema_json), **_root()})


def _leaves(errors: Iterable[ValidationError]) -> Iterator[ValidationError]:
    """The errors that say what is wrong, not that "null" did not match either."""
    for e in errors:
        if e.context:
            yield from _leaves(e.context)
        elif not (e.validator == "type" and e.validator_value == "null"):
            yield e


def schema_errors(instance: Any, schema: dict[str, Any]) -> list[str]:
    """Where ``instance`` breaks ``schema`` (a spec schema or a ``$ref`` into its components)."""
    v = _validator(json.dumps(schema, sort_keys=True))
    out = []
    for e in _leaves(v.iter_errors(instance)):
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path)
        out.append(f"{where.lstrip('.') or 'body'}: {e.message[:300]}")
    return sorted(set(out))


@functools.cache
def _operations() -> list[tuple[re.Pattern[str], str, int]]:
    """(regex, template, literal length) of every path of the spec and of DEVIATIONS."""
    paths = set(spec()["paths"])
    paths |= {k.split()[1] for k in DEVIATIONS if k.split()[0].isupper() and len(k.split()) == 2}
    out = []
    for template in paths:
        rx = re.sub(r"\\\{path\\\}", "(.+)", re.escape(template))
        rx = re.sub(r"\\\{[A-Za-z]+\\\}", "([^/]+)", rx)
        out.append((re.compile(f"^{rx}$"), template, len(re.sub(r"\{[^}]+\}", "", template))))
    return sorted(out, key=lambda t: -t[2])


def _params(op: dict[str, Any]) -> dict[str, dict[str, Any]]:
    declared = spec()["components"]["parameters"]
    out = {}
    for p in op.get("parameters") or []:
        p = declared[p["$ref"].rsplit("/", 1)[1]] if "$ref" in p else p
        if p["in"] == "query":
            out[p["name"]] = p["schema"]
    return out


class Contract:
    """Checks what passes through the double; ``violations`` holds one line per mismatch."""

    def __init__(self) -> None:
        self.violations: list[str] = []
        self.excused: set[str] = set()  # the DEVIATIONS keys that excused something

    def _deviation(self, key: str) -> Deviation | None:
        dev = DEVIATIONS.get(key)
        if dev is not None:
            self.excused.add(key)
        return dev

    def check(
        self,
        method: str,
        raw_path: str,
        query: list[tuple[str, str]],
        body: bytes,
        status: int,
        content_type: str,
        answer: bytes | None,
    ) -> list[str]:
        """Check one exchange (``answer`` None: streamed, checked elsewhere); returns the problems."""
        problems = list(
            self._problems(method, raw_path.removeprefix("/v1"), query, body, status, content_type, answer)
        )
        if problems:
            self.violations.append(f"{method} {raw_path} -> {status}: " + "; ".join(problems))
        return problems

    def check_value(self, what: str, instance: Any, schema_name: str) -> None:
        """Check one JSON value (an event stream frame, ...) against a component schema."""
        problems = schema_errors(instance, _ref(schema_name))
        if problems:
            self.violations.append(f"{what}: " + "; ".join(problems))

    def check_frame(self, what: str, frame: Any) -> None:
        """Check one event stream frame: its envelope (``Events``), and each event's payload
        against the spec's schema of the object it carries, which the payload holds under the
        topic's name (nomad/structs/event.go: JobEvent, AllocationEvent, EvaluationEvent,
        DeploymentEvent, NodeStreamEvent); the same schemas the blocking endpoints answer with."""
        problems = schema_errors(frame, _ref("Events"))
        for i, event in enumerate(frame.get("Events") or [] if isinstance(frame, dict) else []):
            topic = event.get("Topic") if isinstance(event, dict) else None
            if topic not in EVENT_PAYLOADS:
                continue
            payload = event.get("Payload") or {}
            if topic not in payload:
                problems.append(f"Events[{i}].Payload: no {topic} (a {topic} event carries one)")
                continue
            problems += [f"Events[{i}].Payload.{topic}.{p}" for p in schema_errors(payload[topic], _ref(topic))]
        if problems:
            self.violations.append(f"{what}: " + "; ".join(problems))

    def _problems(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        body: bytes,
        status: int,
        content_type: str,
        answer: bytes | None,
    ) -> Iterator[str]:
        template = next((t for rx, t, _ in _operations() if rx.match(path)), None)
        if template is None:
            yield "no such path in Nomad's API"
            return
        ops = spec()["paths"].get(template, {})
        op = ops.get(method.lower())
        extra = self._deviation(f"{method} {template}")
        if op is None and method == "PUT" and extra is not None:
            op = ops.get("post")
        if op is None and extra is None:
            if status != 405:  # Nomad's answer to a method a path does not take
                yield f"Nomad's spec has no {method} {template}"
            elif not content_type.startswith("text/plain"):
                yield f"Nomad answers errors as text/plain, not {content_type or 'nothing'}"
            return
        op = op or {}
        accepted = 200 <= status < 300
        if accepted:
            yield from self._request_problems(method, template, op, query, body)
        responses = op.get("responses") or {}
        declared = str(status) in responses or (extra is not None and accepted and not responses)
        excused = self._deviation(f"{method} {template} {status}")
        if not declared and excused is None:
            yield f"status {status} is not one Nomad answers here"
            return
        if not accepted and status != 409:
            if not content_type.startswith("text/plain"):
                yield f"Nomad answers errors as text/plain, not {content_type or 'nothing'}"
            return
        dev = excused or extra
        schema = dev.schema if dev is not None else None
        if schema is None:
            content = (responses.get(str(status)) or {}).get("$ref")
            if content:
                resp = spec()["components"]["responses"][content.rsplit("/", 1)[1]]
                schema = ((resp.get("content") or {}).get("application/json") or {}).get("schema")
        if answer is None or schema is None:
            return
        if not content_type.startswith("application/json"):
            yield f"a JSON answer with content type {content_type!r}"
            return
        try:
            data = json.loads(answer)
        except ValueError:
            yield "the answer is not JSON"
            return
        for problem in schema_errors(data, schema):
            yield f"answer {problem}"

    def _request_problems(
        self, method: str, template: str, op: dict[str, Any], query: list[tuple[str, str]], body: bytes
    ) -> Iterator[str]:
        params = _params(op)
        outside = DEVIATIONS.get(f"{method} {template}")
        params.update({p: _STR for p in outside.params} if outside else {})
        for name, value in query:
            schema = params.get(name)
            if schema is None:
                dev = self._deviation(f"?{name} {method} {template}") or self._deviation(f"?{name}")
                schema = dev.schema if dev else None
            if schema is None:
                yield f"query parameter {name!r} is not one Nomad reads here"
            elif schema.get("type") == "boolean" and value not in _GO_BOOL:
                yield f"query parameter {name}={value!r} is not a Go bool"
            elif schema.get("type") == "integer" and not re.fullmatch(r"-?\d+", value):
                yield f"query parameter {name}={value!r} is not an integer"
        request_body = op.get("requestBody")
        if request_body and "$ref" in request_body:
            request_body = spec()["components"]["requestBodies"][request_body["$ref"].rsplit("/", 1)[1]]
        if not request_body or (method == "DELETE" and self._deviation(f"DELETE {template} 204")):
            return
        if not body.strip():
            if request_body.get("required"):
                yield "the request has no body"
            return
        try:
            data = json.loads(body)
        except ValueError:
            yield "the request body is not JSON"
            return
        schema = request_body["content"]["application/json"]["schema"]
        for problem in schema_errors(data, schema):
            yield f"request {problem}"
