"""The Nomad HTTP API double: a real HTTP server on 127.0.0.1 shaped after Nomad's API.

Paths, bodies and status codes follow Nomad's HTTP agent (hashicorp/nomad ``command/agent/``:
``http.go``, ``job_endpoint.go``, ``alloc_endpoint.go``, ``variable_endpoint.go``,
``event_endpoint.go``, ...) and are checked against its OpenAPI description (``contract.py``):
wrapped register bodies (``{"Job": ...}``) and unwrapped reads, nanosecond durations, errors as
``text/plain`` with Nomad's wording, ``404`` for an unknown job but ``200 []`` for its allocations
and ``200`` with an empty ``EvalID`` for its deregistration, validation failures as ``500``
multierrors on register and as ``ValidationErrors`` from ``/v1/validate/job``, blocking queries
(``?index=&wait=`` with ``X-Nomad-Index``), ACL tokens (``X-Nomad-Token`` or ``Bearer``), the
Variables API with check-and-set, the client endpoints (stats, fs, restart), the exec WebSocket
with its JSON frames, and the event stream.

It can be told to fail: :meth:`NomadDouble.go_down` (connection refused until
:meth:`come_back`), ``latency`` (every request answers that much later), ACL denial
(:meth:`set_acl`), :meth:`fail_next` (the next matching requests get a given status and text),
``version`` (a Nomad whose event stream is missing or answers denials after its status line),
and the cluster itself fails as Nomad would: no node with a free GPU, an image that cannot be
pulled, a task that crashes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import socket
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from . import jobspec
from .cluster import Cluster, DoubleImage, DoubleNode, StreamEvent, dump
from .contract import Contract, zero

__all__ = ["NomadDouble"]

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h))+$")
_DUR_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
_VAR_PATH = re.compile(r"^[a-zA-Z0-9\-_~/]{1,128}$")
_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


class HTTPError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def _parse_duration(text: str) -> float:
    if not _DURATION.match(text):
        raise ValueError(text)
    return sum(float(n) * _DUR_UNIT[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text))


def _parse_bool(request: Request, name: str, status: int = 400) -> bool | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise HTTPError(
        status,
        f'Failed to parse value of "{name}" ({raw}) as a bool: strconv.ParseBool: parsing "{raw}": invalid syntax',
    )


# -- a tiny go-bexpr: selector op "value", joined by and/or, with parentheses -----------------

_TOKEN = re.compile(
    r'\s*(\(|\)|==|!=|"(?:[^"\\]|\\.)*"|not\s+matches|matches|not\s+contains|contains|and|or|[A-Za-z_][\w.]*)'
)


def _compile_filter(expr: str) -> Callable[[dict[str, Any]], bool]:
    tokens: list[str] = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            if expr[pos:].strip() == "":
                break
            raise HTTPError(
                400, f"failed to read filter expression: unexpected input at {pos}: {expr[pos:]!r}"
            )
        tokens.append(m.group(1))
        pos = m.end()
    i = 0

    def peek() -> str | None:
        return tokens[i] if i < len(tokens) else None

    def take() -> str:
        nonlocal i
        if i >= len(tokens):
            raise HTTPError(400, "failed to read filter expression: unexpected end of expression")
        i += 1
        return tokens[i - 1]

    def atom() -> Callable[[dict[str, Any]], bool]:
        if peek() == "(":
            take()
            inner = disj()
            if take() != ")":
                raise HTTPError(400, "failed to read filter expression: missing )")
            return inner
        selector = take()
        op = re.sub(r"\s+", " ", take())
        value = take()
        if not (value.startswith('"') and value.endswith('"')):
            raise HTTPError(400, f"failed to read filter expression: expected a quoted value after {op}")
        value = json.loads(value)
        path = selector.split(".")

        def get(obj: dict[str, Any]) -> Any:
            cur: Any = obj
            for part in path:
                if not isinstance(cur, dict) or part not in cur:
                    return None
                cur = cur[part]
            return cur

        if op == "==":
            return lambda o: get(o) == value
        if op == "!=":
            return lambda o: get(o) != value
        if op in ("matches", "not matches"):
            rx = re.compile(value)
            positive = op == "matches"
            return lambda o: (isinstance(get(o), str) and rx.search(get(o)) is not None) == positive
        if op in ("contains", "not contains"):
            positive = op == "contains"
            return lambda o: (value in (get(o) or [])) == positive
        raise HTTPError(400, f"failed to read filter expression: unsupported operator {op!r}")

    def conj() -> Callable[[dict[str, Any]], bool]:
        parts = [atom()]
        while peek() == "and":
            take()
            parts.append(atom())
        return lambda o: all(p(o) for p in parts)

    def disj() -> Callable[[dict[str, Any]], bool]:
        parts = [conj()]
        while peek() == "or":
            take()
            parts.append(conj())
        return lambda o: any(p(o) for p in parts)

    result = disj()
    if i != len(tokens):
        raise HTTPError(400, f"failed to read filter expression: unexpected {tokens[i]!r}")
    return result


class NomadDouble:
    """A Nomad API double served on ``127.0.0.1``; use as a context manager.

    ``acl``: ``None`` (ACLs disabled) or ``{secret: capabilities}`` where capabilities is a set of
    ``read-job``, ``submit-job``, ``read-fs``, ``alloc-exec``, ``alloc-lifecycle``,
    ``variables-read``, ``variables-write``, ``node-read`` or ``{"*"}`` (a management token).
    """

    def __init__(
        self,
        nodes: list[DoubleNode] | None = None,
        images: list[DoubleImage] | None = None,
        acl: dict[str, set[str]] | None = None,
        root: Path | None = None,
        region: str = "global",
        namespaces: tuple[str, ...] = ("default",),
        contract: bool = True,
        version: str = "1.10.0",
    ) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="nomad-double-") if root is None else None
        self.root = Path(self._tmp.name) if self._tmp else root  # type: ignore[assignment]
        self._nodes = nodes if nodes is not None else [DoubleNode("node-1")]
        self._images = images or []
        self.acl = acl
        self.region = region
        self.namespaces = set(namespaces)
        self.latency = 0.0
        self._failures: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        self.contract = Contract() if contract else None
        self.version = version
        self.event_heartbeat = 30.0  # seconds between `{}` frames (nomad/event_endpoint.go)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="nomad-double", daemon=True)
        self._server: uvicorn.Server | None = None
        self._serve_task: asyncio.Future[Any] | None = None
        self.port = 0
        self.cluster: Cluster

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> NomadDouble:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the double's loop (awaiting it if it is a coroutine)."""

        async def run() -> Any:
            result = fn(*args)
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(60)

    def start(self) -> None:
        self._thread.start()

        async def make() -> None:
            self.cluster = Cluster(self.root, self._nodes, self._images, self.region, self.version)

        self.call(make)
        self._listen()

    def _listen(self) -> None:
        if not self.port:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self.port = probe.getsockname()[1]
        # uvicorn binds the port itself: sockets handed to it lose TCP_NODELAY here, which costs
        # every keep-alive request a 40 ms delayed ACK.
        config = uvicorn.Config(
            self._app(),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws="websockets-sansio",
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._serve_task = asyncio.run_coroutine_threadsafe(server.serve(), self.loop)  # type: ignore[assignment]
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            if self._serve_task.done():  # type: ignore[union-attr]
                self._serve_task.result()  # type: ignore[union-attr]
            time.sleep(0.005)

    def go_down(self) -> None:
        """Stop listening: clients get "connection refused" until :meth:`come_back`, and the event
        streams that are open end (a Nomad that goes away drops its connections)."""
        if self._thread.is_alive() and hasattr(self, "cluster"):
            self.call(lambda: [q.put_nowait(None) for q in self.cluster.subscribers])
            self.call(self.cluster.release_waiters)  # parked blocking queries answer now
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True
            if self._serve_task is not None:
                self._serve_task.result(10)  # type: ignore[union-attr]
            self._server = None

    def come_back(self) -> None:
        self.call(lambda: setattr(self.cluster, "releasing", False))
        if self._server is None:
            self._listen()

    def close(self) -> None:
        self.go_down()
        if self._thread.is_alive():
            self.call(self.cluster.shutdown)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        if self._tmp is not None:
            self._tmp.cleanup()

    # -- knobs -----------------------------------------------------------------------------

    def set_acl(self, acl: dict[str, set[str]] | None) -> None:
        self.acl = acl

    def fail_next(self, method: str, path_regex: str, status: int, text: str, times: int = 1) -> None:
        """The next ``times`` requests matching ``method`` and ``path_regex`` answer ``status text``."""
        self._failures.append(
            {
                "method": method.upper(),
                "rx": re.compile(path_regex),
                "status": status,
                "text": text,
                "left": times,
            }
        )

    def jobs(self) -> dict[tuple[str, str], dict[str, Any]]:
        return self.call(lambda: dict(self.cluster.jobs))

    def allocations(self) -> list[dict[str, Any]]:
        return self.call(lambda: [dict(a) for a in self.cluster.allocs.values()])

    def variables(self) -> dict[tuple[str, str], dict[str, Any]]:
        return self.call(lambda: dict(self.cluster.variables))

    def add_node(self, node: DoubleNode) -> str:
        """A new client node registers (``NodeRegistration``); blocked evaluations retry."""

        async def add() -> str:
            registered = self.cluster.add_node(node)
            await self.cluster.commit("NodeRegistration", ("nodes", registered))
            await self.cluster._retry_blocked()
            return str(registered["ID"])

        return self.call(add)

    # -- HTTP plumbing ---------------------------------------------------------------------

    def _token(self, headers: Any) -> str | None:
        token = headers.get("x-nomad-token")
        if not token:
            auth = headers.get("authorization") or ""
            if auth.lower().startswith("bearer "):
                token = auth[7:].strip()
        return token or None

    def _authorize(self, token: str | None, capability: str | None) -> None:
        if self.acl is None or capability is None:
            return
        if token is None:
            raise HTTPError(403, "Permission denied")
        caps = self.acl.get(token)
        if caps is None:
            raise HTTPError(403, "ACL token not found")
        if "*" not in caps and capability not in caps:
            raise HTTPError(403, "Permission denied")

    def _inject_failure(self, request: Request) -> None:
        for f in self._failures:
            if f["left"] > 0 and f["method"] in (request.method, "*") and f["rx"].search(request.url.path):
                f["left"] -= 1
                raise HTTPError(f["status"], f["text"])

    def _namespace(self, request: Request) -> str:
        ns = request.query_params.get("namespace") or "default"
        return ns

    def _app(self) -> Starlette:
        R = self._route
        routes = [
            R("/v1/status/leader", ["GET"], self.h_leader, None),
            R("/v1/jobs", ["GET"], self.h_jobs_list, "read-job", ("jobs",)),
            R("/v1/jobs", ["PUT", "POST"], self.h_register, "submit-job"),
            R("/v1/validate/job", ["PUT", "POST"], self.h_validate, "submit-job"),
            R("/v1/job/{job_id}/allocations", ["GET"], self.h_job_allocs, "read-job", ("allocs",)),
            R("/v1/job/{job_id}/evaluations", ["GET"], self.h_job_evals, "read-job", ("evals",)),
            R("/v1/job/{job_id}/summary", ["GET"], self.h_job_summary, "read-job", ("jobs", "allocs")),
            R("/v1/job/{job_id}", ["GET"], self.h_job_get, "read-job", ("jobs",)),
            R("/v1/job/{job_id}", ["PUT", "POST"], self.h_register, "submit-job"),
            R("/v1/job/{job_id}", ["DELETE"], self.h_deregister, "submit-job"),
            R("/v1/evaluation/{eval_id}", ["GET"], self.h_eval_get, "read-job", ("evals",)),
            R("/v1/allocations", ["GET"], self.h_allocs_list, "read-job", ("allocs",)),
            R("/v1/allocation/{alloc_id}", ["GET"], self.h_alloc_get, "read-job", ("allocs",)),
            R("/v1/allocation/{alloc_id}/stop", ["PUT", "POST"], self.h_alloc_stop, "alloc-lifecycle"),
            R("/v1/client/allocation/{alloc_id}/stats", ["GET"], self.h_alloc_stats, "read-job"),
            R(
                "/v1/client/allocation/{alloc_id}/restart",
                ["PUT", "POST"],
                self.h_alloc_restart,
                "alloc-lifecycle",
            ),
            R("/v1/client/fs/ls/{alloc_id}", ["GET"], self.h_fs_ls, "read-fs"),
            R("/v1/client/fs/stat/{alloc_id}", ["GET"], self.h_fs_stat, "read-fs"),
            R("/v1/client/fs/cat/{alloc_id}", ["GET"], self.h_fs_cat, "read-fs"),
            R("/v1/nodes", ["GET"], self.h_nodes, "node-read", ("nodes",)),
            R("/v1/node/{node_id}", ["GET"], self.h_node_get, "node-read", ("nodes",)),
            R("/v1/vars", ["GET"], self.h_vars_list, "variables-read", ("vars",)),
            R("/v1/var/{path:path}", ["GET"], self.h_var_get, "variables-read", ("vars",)),
            R("/v1/var/{path:path}", ["PUT"], self.h_var_put, "variables-write"),
            R("/v1/var/{path:path}", ["DELETE"], self.h_var_delete, "variables-write"),
            Route("/v1/event/stream", self.h_event_stream, methods=["GET", "PUT", "POST", "DELETE"]),
            WebSocketRoute("/v1/client/allocation/{alloc_id}/exec", self.ws_exec),
        ]
        return Starlette(routes=routes)

    def _route(
        self,
        path: str,
        methods: list[str],
        fn: Callable[..., Awaitable[Any]],
        capability: str | None,
        tables: tuple[str, ...] | None = None,
    ) -> Route:
        async def endpoint(request: Request) -> Response:
            try:
                self.requests.append((request.method, request.url.path))
                if self.latency:
                    await asyncio.sleep(self.latency)
                self._inject_failure(request)
                self._authorize(self._token(request.headers), capability)
                ns = self._namespace(request)
                if ns not in self.namespaces and ns != "*":
                    raise HTTPError(404 if request.method == "GET" else 400, f'namespace "{ns}" not found')
                if tables is not None and "index" in request.query_params:
                    try:
                        index = int(request.query_params["index"])
                    except ValueError:
                        raise HTTPError(400, "Invalid index") from None
                    wait = 300.0
                    if "wait" in request.query_params:
                        try:
                            wait = min(_parse_duration(request.query_params["wait"]), 600.0)
                        except ValueError:
                            raise HTTPError(400, "Invalid wait time") from None
                    await self.cluster.wait(tables, index, wait, http=True)
                result = await fn(request, ns)
                if isinstance(result, Response):
                    return result
                index = max(self.cluster.table_index[t] for t in tables) if tables else self.cluster.index
                return Response(
                    dump(result),
                    media_type="application/json",
                    headers={
                        "X-Nomad-Index": str(index),
                        "X-Nomad-KnownLeader": "true",
                        "X-Nomad-LastContact": "0",
                    },
                )
            except HTTPError as exc:
                return PlainTextResponse(exc.text, status_code=exc.status)
            except jobspec.DecodeError as exc:
                return PlainTextResponse(str(exc), status_code=400)

        async def checked(request: Request) -> Response:
            response = await endpoint(request)
            if self.contract is not None:
                self.contract.check(
                    request.method,
                    request.scope["raw_path"].decode(),
                    request.query_params.multi_items(),
                    await request.body(),
                    response.status_code,
                    response.headers.get("content-type", ""),
                    getattr(response, "body", None),
                )
            return response

        return Route(path, checked, methods=methods)

    async def _body(self, request: Request, spec: str) -> dict[str, Any]:
        raw = await request.body()
        if not raw:
            raise HTTPError(400, "Request body is empty")
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise HTTPError(400, f"invalid character in request body: {exc}") from None
        return jobspec.decode(data, spec)

    # -- handlers: status and jobs ---------------------------------------------------------

    async def h_leader(self, request: Request, ns: str) -> Any:
        return "127.0.0.1:4647"

    def _job_stub(self, job: dict[str, Any], meta: bool) -> dict[str, Any]:
        """``JobListStub`` (nomad/structs/structs.go); its summary counts allocations by status."""
        states = {
            "pending": "Starting",
            "running": "Running",
            "complete": "Complete",
            "failed": "Failed",
            "lost": "Lost",
        }
        summary = {tg["Name"]: zero("TaskGroupSummary") for tg in job["TaskGroups"]}
        for a in self.cluster.job_allocs(job["Namespace"], job["ID"]):
            group = summary.setdefault(a["TaskGroup"], zero("TaskGroupSummary"))
            group[states.get(a["ClientStatus"], "Unknown")] += 1
        keys = "ID Name Namespace Datacenters NodePool Type Priority Stop Status JobModifyIndex SubmitTime"
        indexes = {"CreateIndex": job["CreateIndex"], "ModifyIndex": job["ModifyIndex"]}
        stub = zero(
            "JobListStub", **{k: job[k] for k in keys.split()}, **indexes, ParentID=job.get("ParentID") or ""
        )
        stub["JobSummary"] = zero(
            "JobSummary", JobID=job["ID"], Namespace=job["Namespace"], Summary=summary, **indexes
        )
        del stub["Meta"]  # omitempty
        if meta and job.get("Meta"):
            stub["Meta"] = job["Meta"]
        return stub

    async def h_jobs_list(self, request: Request, ns: str) -> Any:
        prefix = request.query_params.get("prefix") or ""
        meta = _parse_bool(request, "meta") or False
        jobs = [
            j
            for (jns, jid), j in sorted(self.cluster.jobs.items())
            if (ns == "*" or jns == ns) and jid.startswith(prefix)
        ]
        stubs = [self._job_stub(j, meta) for j in jobs]
        if request.query_params.get("filter"):
            match = _compile_filter(request.query_params["filter"])
            stubs = [s for s in stubs if match(s)]
        return stubs

    async def _decode_job_request(self, request: Request, spec: str) -> dict[str, Any]:
        body = await self._body(request, spec)
        job = body.get("Job")
        if not job:
            raise HTTPError(400, "Job must be specified")
        if not job.get("ID"):
            raise HTTPError(400, "Job ID hasn't been provided")
        return job

    async def h_register(self, request: Request, ns: str) -> Any:
        job = await self._decode_job_request(request, "JobRegisterRequest")
        path_id = request.path_params.get("job_id")
        if path_id is not None and path_id != job["ID"]:
            raise HTTPError(400, "Job ID does not match name")
        job_ns = job.get("Namespace") or ns
        if job_ns not in self.namespaces:
            raise HTTPError(500, f'job "{job["ID"]}" is in nonexistent namespace "{job_ns}"')
        job = jobspec.canonicalize_job(job, job_ns, self.region)
        errors = jobspec.validate_job(job)
        if errors:
            raise HTTPError(500, jobspec.multierror(errors).rstrip("\n"))
        eval_id, index, warnings = await self.cluster.register(job, job_ns)
        return {
            "EvalID": eval_id,
            "EvalCreateIndex": index,
            "JobModifyIndex": index,
            "Warnings": warnings,
            "Index": index,
            "LastContact": 0,
            "KnownLeader": True,
        }

    async def h_validate(self, request: Request, ns: str) -> Any:
        job = await self._decode_job_request(request, "JobValidateRequest")
        job = jobspec.canonicalize_job(job, job.get("Namespace") or ns, self.region)
        errors = jobspec.validate_job(job)
        return {
            "DriverConfigValidated": True,
            "ValidationErrors": errors or None,
            "Error": jobspec.multierror(errors).rstrip("\n") if errors else "",
            "Warnings": "",
        }

    def _job(self, ns: str, job_id: str) -> dict[str, Any]:
        job = self.cluster.jobs.get((ns, job_id))
        if job is None:
            raise HTTPError(404, "job not found")
        return job

    async def h_job_get(self, request: Request, ns: str) -> Any:
        return self._job(ns, request.path_params["job_id"])

    async def h_deregister(self, request: Request, ns: str) -> Any:
        purge = _parse_bool(request, "purge", status=500) or False
        _parse_bool(request, "global", status=500)
        eval_id, index = await self.cluster.deregister(ns, request.path_params["job_id"], purge)
        return {
            "EvalID": eval_id,
            "EvalCreateIndex": index,
            "JobModifyIndex": index,
            "VolumeEvalID": "",
            "VolumeEvalIndex": 0,
            "Index": index or self.cluster.index,
            "LastContact": 0,
            "KnownLeader": True,
        }

    async def h_job_allocs(self, request: Request, ns: str) -> Any:
        job_id = request.path_params["job_id"]
        _parse_bool(request, "all")
        allocs = self.cluster.job_allocs(ns, job_id)
        return [self.cluster.alloc_stub(a) for a in sorted(allocs, key=lambda a: a["CreateIndex"])]

    async def h_job_evals(self, request: Request, ns: str) -> Any:
        job_id = request.path_params["job_id"]
        return [e for e in self.cluster.evals.values() if e["JobID"] == job_id and e["Namespace"] == ns]

    async def h_job_summary(self, request: Request, ns: str) -> Any:
        return self._job_stub(self._job(ns, request.path_params["job_id"]), False)["JobSummary"]

    # -- evaluations and allocations --------------------------------------------------------

    async def h_eval_get(self, request: Request, ns: str) -> Any:
        ev = self.cluster.evals.get(request.path_params["eval_id"])
        if ev is None:
            raise HTTPError(404, "eval not found")
        return ev

    def _alloc(self, alloc_id: str) -> dict[str, Any]:
        alloc = self.cluster.allocs.get(alloc_id)
        if alloc is None:
            raise HTTPError(404, "alloc not found")
        return alloc

    async def h_allocs_list(self, request: Request, ns: str) -> Any:
        resources = _parse_bool(request, "resources") or False
        task_states = _parse_bool(request, "task_states")
        prefix = request.query_params.get("prefix") or ""
        allocs = [
            a
            for a in self.cluster.allocs.values()
            if (ns == "*" or a["Namespace"] == ns) and a["ID"].startswith(prefix)
        ]
        if request.query_params.get("filter"):
            # Nomad filters the stubs; the full allocation has every stub field but these two, so
            # filtering it gives the same answer without building stubs that are thrown away.
            match = _compile_filter(request.query_params["filter"])
            allocs = [
                a
                for a in allocs
                if match({**a, "JobType": a["Job"]["Type"], "JobVersion": a["Job"]["Version"]})
            ]
        return [
            self.cluster.alloc_stub(a, resources, task_states is not False)
            for a in sorted(allocs, key=lambda a: a["CreateIndex"])
        ]

    async def h_alloc_get(self, request: Request, ns: str) -> Any:
        return self._alloc(request.path_params["alloc_id"])

    async def h_alloc_stop(self, request: Request, ns: str) -> Any:
        alloc = self.cluster.allocs.get(request.path_params["alloc_id"])
        if alloc is None:
            raise HTTPError(404, "allocation not found")
        await self.cluster.stop_alloc(alloc["ID"], "alloc is being stopped by the user")
        return {"EvalID": "", "Index": self.cluster.index}

    def _client_alloc(self, alloc_id: str) -> dict[str, Any]:
        alloc = self.cluster.allocs.get(alloc_id)
        if alloc is None:
            raise HTTPError(404, f'Unknown allocation "{alloc_id}"')
        return alloc

    async def h_alloc_stats(self, request: Request, ns: str) -> Any:
        alloc = self._client_alloc(request.path_params["alloc_id"])
        if alloc["ClientStatus"] != "running":
            raise HTTPError(500, f"unknown allocation ID {alloc['ID']!r}: allocation is not running")
        return self.cluster.alloc_stats(alloc["ID"])

    async def h_alloc_restart(self, request: Request, ns: str) -> Any:
        alloc = self._client_alloc(request.path_params["alloc_id"])
        raw = await request.body()
        if raw:
            jobspec.decode(json.loads(raw), "AllocRestartRequest")
        if alloc["ClientStatus"] != "running":
            raise HTTPError(500, "Task not running")
        await self.cluster.restart_alloc(alloc["ID"])
        return {}

    def _fs_target(self, request: Request) -> Path:
        alloc = self._client_alloc(request.path_params["alloc_id"])
        path = request.query_params.get("path") or "/"
        try:
            target = self.cluster.fs_path(alloc["ID"], path)
        except PermissionError as exc:
            raise HTTPError(403, str(exc)) from None
        if not target.exists():
            raise HTTPError(404, f"stat {path}: no such file or directory")
        return target

    @staticmethod
    def _file_info(p: Path) -> dict[str, Any]:
        st = p.stat()
        return {
            "Name": p.name,
            "IsDir": p.is_dir(),
            "Size": st.st_size,
            "FileMode": ("d" if p.is_dir() else "-") + _mode(st.st_mode),
            "ModTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(st.st_mtime)),
            "ContentType": "" if p.is_dir() else "application/octet-stream",
        }

    async def h_fs_ls(self, request: Request, ns: str) -> Any:
        target = self._fs_target(request)
        if not target.is_dir():
            raise HTTPError(500, f"{request.query_params.get('path')}: not a directory")
        return [self._file_info(p) for p in sorted(target.iterdir())]

    async def h_fs_stat(self, request: Request, ns: str) -> Any:
        return self._file_info(self._fs_target(request))

    async def h_fs_cat(self, request: Request, ns: str) -> Any:
        target = self._fs_target(request)
        if target.is_dir():
            raise HTTPError(400, "file is a directory")
        return Response(target.read_bytes(), media_type="text/plain")

    # -- nodes -----------------------------------------------------------------------------

    async def h_nodes(self, request: Request, ns: str) -> Any:
        resources = _parse_bool(request, "resources") or False
        return [self.cluster.node_stub(n, resources) for n in self.cluster.nodes.values()]

    async def h_node_get(self, request: Request, ns: str) -> Any:
        node = self.cluster.nodes.get(request.path_params["node_id"])
        if node is None:
            raise HTTPError(404, "node not found")
        return node

    # -- variables -------------------------------------------------------------------------

    def _var_meta(self, var: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in var.items() if k != "Items"}

    async def h_vars_list(self, request: Request, ns: str) -> Any:
        prefix = request.query_params.get("prefix") or ""
        return [
            self._var_meta(v)
            for (vns, path), v in sorted(self.cluster.variables.items())
            if (ns == "*" or vns == ns) and path.startswith(prefix)
        ]

    def _check_path(self, path: str) -> str:
        if not _VAR_PATH.match(path):
            raise HTTPError(400, f'invalid path "{path}"')
        return path

    async def h_var_get(self, request: Request, ns: str) -> Any:
        var = self.cluster.variables.get((ns, self._check_path(request.path_params["path"])))
        if var is None:
            raise HTTPError(404, "variable not found")
        return var

    async def h_var_put(self, request: Request, ns: str) -> Any:
        path = self._check_path(request.path_params["path"])
        body = await self._body(request, "Variable")
        if body.get("Items") is None:
            raise HTTPError(400, "variable missing required Items object")
        if body.get("Path") and body["Path"] != path:
            raise HTTPError(400, "variable path in body does not match the URL")
        if len(json.dumps(body["Items"])) > 64 * 1024:
            raise HTTPError(400, "variables are limited to 64KiB in total size")
        ns = body.get("Namespace") or ns
        key = (ns, path)
        current = self.cluster.variables.get(key)
        cas = request.query_params.get("cas")
        if cas is not None:
            expected = int(cas)
            actual = current["ModifyIndex"] if current else 0
            if expected != actual:
                return Response(
                    dump(self._var_meta(current) if current else {}),
                    status_code=409,
                    media_type="application/json",
                )
        index = self.cluster.index + 1
        now = time.time_ns()
        var = {
            "Namespace": ns,
            "Path": path,
            "CreateIndex": current["CreateIndex"] if current else index,
            "ModifyIndex": index,
            "CreateTime": current["CreateTime"] if current else now,
            "ModifyTime": now,
            "Items": dict(body["Items"]),
        }
        self.cluster.variables[key] = var
        await self.cluster.commit("VariableUpdated", ("vars", var))
        return var

    async def h_var_delete(self, request: Request, ns: str) -> Any:
        path = self._check_path(request.path_params["path"])
        key = (ns, path)
        current = self.cluster.variables.get(key)
        cas = request.query_params.get("cas")
        if cas is not None and current is not None and int(cas) != current["ModifyIndex"]:
            return Response(dump(self._var_meta(current)), status_code=409, media_type="application/json")
        self.cluster.variables.pop(key, None)
        await self.cluster.commit("VariableUpdated", ("vars", current or {}))
        return Response(status_code=204)

    # -- the event stream --------------------------------------------------------------------

    async def h_event_stream(self, request: Request) -> Response:
        """``GET /v1/event/stream``: newline-delimited JSON, as ``command/agent/event_endpoint.go``,
        ``nomad/event_endpoint.go`` and ``nomad/stream/`` serve it.

        * ``topic=Topic[:key]`` (repeated; ``*`` and no topic mean all): an event passes when its
          ``Key`` or one of its ``FilterKeys`` is a key asked for its topic (``*``: any), and its
          namespace is the request's (``namespace``, default ``default``; ``*``: all). As in Nomad,
          an event matching two keys is sent twice, and ``*`` mixed with other keys matches nothing.
        * ``index=N``: the stream starts at the first buffered frame whose index is at least N, so
          the frame at N itself comes again; past the newest frame it replays the newest one. A
          client resuming from the last index it processed must drop what it has seen.
        * The first line is a ``{}`` heartbeat, another follows every :attr:`event_heartbeat`.
        * ACLs (``nomad/event_endpoint.go``: ``validateNsOp``): Job, Allocation, Evaluation and
          Deployment need ``read-job``, Node needs ``node-read``, all topics a management token;
          an unknown token or a missing capability is 403 ``Permission denied``. From Nomad 2.0
          (``version``) the status line is written before that check (hashicorp/nomad#27432): a
          denied stream is a 200 whose body ends at once. Before Nomad 1.0 there is no stream (404).
        """
        self.requests.append((request.method, request.url.path))
        answer = await self._event_stream(request)
        if self.contract is not None:
            self.contract.check(
                request.method,
                request.scope["raw_path"].decode(),
                request.query_params.multi_items(),
                await request.body(),
                answer.status_code,
                answer.headers.get("content-type", ""),
                getattr(answer, "body", None),
            )
        return answer

    async def _event_stream(self, request: Request) -> Response:
        if self.latency:
            await asyncio.sleep(self.latency)
        try:
            self._inject_failure(request)
        except HTTPError as exc:
            return PlainTextResponse(exc.text, status_code=exc.status)
        if tuple(int(p) for p in self.version.split(".")[:2]) < (1, 0):
            return PlainTextResponse("404 page not found\n", status_code=404)
        if request.method != "GET":
            return PlainTextResponse("Invalid method", status_code=405)
        raw_index = request.query_params.get("index") or "0"
        if not re.fullmatch(r"[+-]?\d+", raw_index):
            return PlainTextResponse(
                f'Unable to parse index: strconv.Atoi: parsing "{raw_index}": invalid syntax', status_code=400
            )
        topics: dict[str, list[str]] = {}
        for raw in request.query_params.getlist("topic") or ["*"]:
            parts = raw.split(":")
            if len(parts) > 2:
                text = f"Invalid topic query: error parsing topics: Invalid key value pair for topic, topic: {raw}"
                return PlainTextResponse(text, status_code=400)
            topics.setdefault(parts[0], []).append(parts[1] if len(parts) == 2 else "*")
        namespace = request.query_params.get("namespace") or "default"
        if self._stream_denied(self._token(request.headers), topics):
            if tuple(int(p) for p in self.version.split(".")[:2]) >= (2, 0):
                return Response(b"", media_type="application/json", headers={"Cache-Control": "no-cache"})
            return PlainTextResponse("Permission denied", status_code=403)
        index = int(raw_index)
        queue: asyncio.Queue[tuple[int, list[StreamEvent]] | None] = asyncio.Queue()
        frames = list(self.cluster.events)
        if frames and index:
            first = next((f for f in frames if f[0] >= index), frames[-1])
            frames = [f for f in frames if f[0] >= first[0]]
        for frame in frames:
            queue.put_nowait(frame)
        self.cluster.subscribers.add(queue)

        def matches(event: StreamEvent) -> list[StreamEvent]:
            if event.namespace and namespace != "*" and event.namespace != namespace:
                return []
            keys = topics.get("*", []) + topics.get(event.topic, [])
            if topics.get("*") == ["*"] or keys == ["*"]:
                return [event]
            return [event for k in keys if k in (event.key, *event.filter_keys)]

        async def lines() -> Any:
            loop = asyncio.get_running_loop()
            beat = loop.time() + self.event_heartbeat  # a ticker: beats come whatever else is sent
            try:
                yield b"{}\n"
                while True:
                    try:
                        item = await asyncio.wait_for(queue.get(), max(0.0, beat - loop.time()))
                    except TimeoutError:
                        beat += self.event_heartbeat
                        yield b"{}\n"
                        continue
                    if item is None:  # go_down(): the connection goes with the server
                        return
                    index, events = item
                    chosen = [e.json for event in events for e in matches(event)]
                    if chosen:
                        frame = f'{{"Index":{index},"Events":[{",".join(chosen)}]}}'
                        if self.contract is not None:
                            self.contract.check_frame(f"event stream frame {index}", json.loads(frame))
                        yield frame.encode() + b"\n"
            finally:
                self.cluster.subscribers.discard(queue)

        return StreamingResponse(
            lines(), media_type="application/json", headers={"Cache-Control": "no-cache"}
        )

    def _stream_denied(self, token: str | None, topics: dict[str, list[str]]) -> bool:
        if self.acl is None:
            return False
        caps = self.acl.get(token or "")
        if caps is None:
            return True
        needs = {
            "Job": "read-job",
            "Allocation": "read-job",
            "Evaluation": "read-job",
            "Deployment": "read-job",
        }
        needs["Node"] = "node-read"
        return "*" not in caps and any(needs.get(t) not in caps for t in topics)

    # -- exec ------------------------------------------------------------------------------

    async def ws_exec(self, ws: WebSocket) -> None:
        if self.latency:
            await asyncio.sleep(self.latency)
        params = ws.query_params
        token = self._token(ws.headers)
        await ws.accept()
        try:
            if params.get("ws_handshake") == "true":
                hello = json.loads(await ws.receive_text())
                if token and hello.get("auth_token") and hello["auth_token"] != token:
                    return await ws.close(1008, "auth token mismatch")
                token = hello.get("auth_token") or token
            try:
                self._authorize(token, "alloc-exec")
            except HTTPError as exc:
                return await ws.close(1008, exc.text)
            alloc = self.cluster.allocs.get(ws.path_params["alloc_id"])
            if alloc is None:
                return await ws.close(1008, "alloc not found")
            task_name = params.get("task")
            if not task_name:
                return await ws.close(1008, "missing task parameter")
            try:
                argv = json.loads(params.get("command") or "null")
            except json.JSONDecodeError:
                return await ws.close(1008, "failed to parse command as json")
            if not argv or not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
                return await ws.close(1008, "command is not present")
            task = self.cluster.tasks.get(alloc["ID"], {}).get(task_name)
            if task is None:
                return await ws.close(1008, f'unknown task name "{task_name}"')
            if task.state["State"] != "running" or alloc["ClientStatus"] != "running":
                return await ws.close(1008, f'task "{task_name}" not started yet.')
            await self._run_exec(ws, task, [self.cluster._host_view(a, task.paths) for a in argv])
        except WebSocketDisconnect:
            return

    async def _run_exec(self, ws: WebSocket, task: Any, argv: list[str]) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                env=task.env,
                cwd=task.cwd,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            return await ws.close(
                1011, f"failed to exec into task: OCI runtime exec failed: exec: {argv[0]!r}: {exc.strerror}"
            )
        send_lock = asyncio.Lock()

        async def send(frame: dict[str, Any]) -> None:
            async with send_lock:
                await ws.send_text(json.dumps(frame))

        async def pump(stream: asyncio.StreamReader, name: str) -> None:
            while True:
                chunk = await stream.read(16 * 1024)
                if not chunk:
                    await send({name: {"close": True}})
                    return
                await send({name: {"data": base64.b64encode(chunk).decode()}})

        async def feed() -> None:
            # plugins/drivers/execstreaming.go: a stdin frame with "close" closes stdin and its
            # data is dropped; {} is a heartbeat; tty_size resizes (no tty here).
            assert proc.stdin is not None
            while True:
                frame = json.loads(await ws.receive_text())
                if self.contract is not None:
                    self.contract.check_value("exec frame from the client", frame, "ExecStreamingInput")
                stdin = frame.get("stdin")
                if stdin is not None and not stdin.get("close"):
                    proc.stdin.write(base64.b64decode(stdin.get("data") or ""))
                    await proc.stdin.drain()
                elif stdin is not None:
                    proc.stdin.close()

        assert proc.stdout is not None and proc.stderr is not None
        feeder = asyncio.create_task(feed())
        try:
            await asyncio.gather(pump(proc.stdout, "stdout"), pump(proc.stderr, "stderr"))
            code = await proc.wait()
        finally:
            feeder.cancel()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        result: dict[str, Any] = {}
        if code:
            result["exit_code"] = code if code > 0 else 128 - code
        await send({"exited": True, "result": result})
        await ws.close(1000)


def _mode(mode: int) -> str:
    bits = "rwxrwxrwx"
    return "".join(b if mode & (1 << (8 - i)) else "-" for i, b in enumerate(bits))
