"""An asyncio wrapper around python-nomad, plus the blocking queries python-nomad lacks.

Every call runs python-nomad (``requests``) through :func:`fetchml_agent.aio.run_blocking` inside
:func:`~fetchml_agent.nomad.errors.map_nomad_errors`, so callers only ever see project errors.

Deliberate differences from ``nomad.Nomad()``:

* TLS verification is on unless ``nomad.tls.verify`` is false (python-nomad defaults to off);
  ``nomad.tls.ca`` is used as the CA bundle, ``cert``/``key`` as the client certificate.
* Nothing is read from the environment (python-nomad falls back to ``NOMAD_ADDR``,
  ``NOMAD_TOKEN``, ...); the settings are the only source, and proxies are not used.
* Variables get the namespace explicitly (python-nomad does not add it to ``/v1/var``).
* Blocking queries (``?index=&wait=``) go through python-nomad's generic ``request()`` with a
  client timeout longer than the wait, and return Nomad's ``X-Nomad-Index`` with the body.
  Each parks a thread until Nomad answers (up to the wait), so they run on the client's own
  pool of up to ``LONG_POLLS`` threads: parked queries of concurrent creates never hold up
  other calls queued on the default thread pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import requests
from nomad import api as nomad_api
from requests.adapters import HTTPAdapter

from fetchml_agent.aio import run_blocking
from fetchml_agent.errors import NotFound
from fetchml_agent.nomad.errors import map_nomad_errors
from fetchml_agent.nomad.schema import NomadSettings

__all__ = ["LONG_POLLS", "Blocking", "NomadClient"]

T = TypeVar("T")
Blocking = tuple[Any, int]  # (decoded body, X-Nomad-Index)
LONG_POLLS = 64  # blocking queries in flight at once (threads, made on demand)


class NomadClient:
    """One Nomad API client for one set of settings. Safe to share across tasks."""

    def __init__(self, settings: NomadSettings) -> None:
        self.settings = settings
        self.address = settings.address
        session = requests.Session()
        session.trust_env = False
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=LONG_POLLS + 32)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        self._session = session
        verify: bool | str = bool(settings.tls_verify)
        if settings.tls_verify and settings.tls_ca:
            verify = settings.tls_ca
        cert = (settings.tls_cert, settings.tls_key) if settings.tls_cert and settings.tls_key else ()
        kwargs = {
            "address": settings.address,
            "namespace": settings.namespace,
            "token": settings.token,
            "timeout": settings.http_timeout,
            "version": "v1",
            "verify": verify,
            "cert": cert,
            "region": settings.region,
            "session": session,
        }
        self._jobs = nomad_api.Jobs(**kwargs)
        self._job = nomad_api.Job(**kwargs)
        self._allocation = nomad_api.Allocation(**kwargs)
        self._allocations = nomad_api.Allocations(**kwargs)
        self._evaluation = nomad_api.Evaluation(**kwargs)
        self._client = nomad_api.Client(**kwargs)
        self._variable = nomad_api.Variable(**kwargs)
        self._validate = nomad_api.Validate(**kwargs)
        self._nodes = nomad_api.Nodes(**kwargs)
        self._status = nomad_api.Status(**kwargs)
        self._long_polls = ThreadPoolExecutor(max_workers=LONG_POLLS, thread_name_prefix="nomad-poll")

    def close(self) -> None:
        self._long_polls.shutdown(wait=False, cancel_futures=True)
        self._session.close()

    async def _call(self, action: str, fn: Callable[..., T], *args: Any, what: str = "", **kw: Any) -> T:
        with map_nomad_errors(action, self.address, what):
            return await run_blocking(fn, *args, **kw)

    async def _blocking(
        self,
        action: str,
        requester: Any,
        path: tuple[str, ...],
        params: dict[str, Any],
        index: int | None,
        wait: float | None,
        what: str = "",
    ) -> Blocking:
        params = {k: v for k, v in params.items() if v is not None}
        timeout = self.settings.http_timeout
        if index is not None and wait:
            params["index"] = int(index)
            params["wait"] = f"{int(wait * 1000)}ms"
            # Nomad adds up to wait/16 of jitter; the HTTP timeout must outlast both.
            timeout = wait + wait / 16 + self.settings.http_timeout

        def call() -> Blocking:
            resp = requester.request(*path, method="get", params=params, timeout=timeout)
            return resp.json(), int(resp.headers.get("X-Nomad-Index", "0") or 0)

        with map_nomad_errors(action, self.address, what):
            if "index" in params:  # parks its thread until Nomad answers: not on the default pool
                return await asyncio.get_running_loop().run_in_executor(self._long_polls, call)
            return await run_blocking(call)

    # -- status ----------------------------------------------------------------------------

    async def leader(self) -> str:
        """The Raft leader's address; fails with BackendUnavailable when Nomad is down."""
        return await self._call("report its leader", self._status.leader.get_leader)

    # -- jobs ------------------------------------------------------------------------------

    async def validate_job(self, job: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/validate/job``: ``{"ValidationErrors": [...], "Error": "", "Warnings": ""}``."""

        def call() -> dict[str, Any]:
            return self._validate.validate_job(job).json()

        return await self._call("validate a job", call)

    async def register_job(self, job: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/jobs`` with ``{"Job": ...}``; returns ``{EvalID, JobModifyIndex, Warnings, ...}``."""
        job_id = job["Job"]["ID"]
        return await self._call(f"register job {job_id}", self._jobs.register_job, job)

    async def get_job(self, job_id: str) -> dict[str, Any]:
        """The full job; :class:`NotFound` when Nomad does not know it."""
        return await self._call(f"read job {job_id}", self._job.get_job, job_id, what=f"job {job_id}")

    async def find_job(self, job_id: str) -> dict[str, Any] | None:
        """The full job, or ``None`` when Nomad does not know it."""
        try:
            return await self.get_job(job_id)
        except NotFound:
            return None

    async def list_jobs(self, prefix: str) -> list[dict[str, Any]]:
        """Job stubs whose ID starts with ``prefix``, with their ``Meta``."""
        return await self._call(f"list jobs {prefix}*", self._jobs.get_jobs, prefix=prefix, meta=True)

    async def deregister_job(self, job_id: str, purge: bool = False) -> dict[str, Any]:
        """Stop (and with ``purge`` forget) a job. An unknown job is not an error (Nomad: 200)."""
        return await self._call(
            f"stop job {job_id}", self._job.deregister_job, job_id, purge=True if purge else None
        )

    async def job_allocations(
        self, job_id: str, index: int | None = None, wait: float | None = None
    ) -> Blocking:
        """Allocation stubs of a job (``[]`` for an unknown job), blocking when ``index`` is given."""
        return await self._blocking(
            f"list allocations of job {job_id}",
            self._job,
            (job_id, "allocations"),
            {"all": "true"},
            index,
            wait,
        )

    # -- evaluations and allocations -------------------------------------------------------

    async def get_evaluation(
        self, eval_id: str, index: int | None = None, wait: float | None = None
    ) -> Blocking:
        return await self._blocking(
            f"read evaluation {eval_id}",
            self._evaluation,
            (eval_id,),
            {},
            index,
            wait,
            what=f"evaluation {eval_id}",
        )

    async def get_allocation(
        self, alloc_id: str, index: int | None = None, wait: float | None = None
    ) -> Blocking:
        return await self._blocking(
            f"read allocation {alloc_id}",
            self._allocation,
            (alloc_id,),
            {},
            index,
            wait,
            what=f"allocation {alloc_id}",
        )

    async def list_allocations(
        self,
        filter_: str | None = None,
        resources: bool = False,
        task_states: bool = True,
        index: int | None = None,
        wait: float | None = None,
        namespace: str | None = None,
    ) -> Blocking:
        """Allocation stubs in the namespace (``namespace``: another one, ``*`` for all) matching a
        Nomad filter expression."""
        params: dict[str, Any] = {
            "filter": filter_,
            "resources": "true" if resources else None,
            "task_states": None if task_states else "false",
            "namespace": namespace,
        }
        return await self._blocking("list allocations", self._allocations, (), params, index, wait)

    async def allocation_stats(self, alloc_id: str) -> dict[str, Any]:
        return await self._call(
            f"read the resource usage of allocation {alloc_id}",
            self._client.allocation.read_allocation_stats,
            alloc_id,
            what=f"allocation {alloc_id}",
        )

    async def restart_allocation(self, alloc_id: str) -> None:
        await self._call(
            f"restart allocation {alloc_id}",
            self._client.allocation.restart_allocation,
            alloc_id,
            what=f"allocation {alloc_id}",
        )

    async def list_files(self, alloc_id: str, path: str) -> list[dict[str, Any]]:
        """``/v1/client/fs/ls``: ``[{Name, IsDir, Size, FileMode, ModTime, ContentType}]``."""
        return await self._call(
            f"list {path} in allocation {alloc_id}",
            self._client.ls.list_files,
            alloc_id,
            path,
            what=f"{path} in allocation {alloc_id}",
        )

    async def read_file(self, alloc_id: str, path: str) -> bytes:
        """``/v1/client/fs/cat`` as bytes (python-nomad's ``read_file`` decodes to text)."""

        def call() -> bytes:
            return self._client.cat.request(alloc_id, method="get", params={"path": path}).content

        return await self._call(
            f"read {path} in allocation {alloc_id}", call, what=f"{path} in allocation {alloc_id}"
        )

    async def list_nodes(self) -> list[dict[str, Any]]:
        return await self._call("list nodes", self._nodes.get_nodes, resources=True)

    # -- variables -------------------------------------------------------------------------

    async def put_variable(self, path: str, items: dict[str, str]) -> dict[str, Any]:
        """Create or overwrite the Variable at ``path`` in the configured namespace."""
        ns = self.settings.namespace
        body = {"Namespace": ns, "Path": path, "Items": items}
        return await self._call(
            f"write variable {path}", self._variable.create_variable, path, body, namespace=ns
        )

    async def delete_variable(self, path: str) -> None:
        """Delete the Variable at ``path``; a missing Variable is not an error."""
        ns = self.settings.namespace

        def call() -> None:
            self._variable.delete_variable(path, namespace=ns)

        try:
            await self._call(f"delete variable {path}", call, what=f"variable {path}")
        except NotFound:
            return

    async def get_variable(self, path: str) -> dict[str, Any]:
        ns = self.settings.namespace
        return await self._call(
            f"read variable {path}", self._variable.get_variable, path, namespace=ns, what=f"variable {path}"
        )
