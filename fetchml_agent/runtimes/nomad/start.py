"""Starting a workspace: render, write its secret Variable and register, follow the evaluation
and the allocation, wait for Jupyter (see the package docstring)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from ...errors import (
    BackendError,
    Timeout,
)
from ...nomad.render import (
    WorkspaceJobRequest,
    jupyter_secret_items,
    secret_variable_path,
)
from ..base import (
    Progress,
    Started,
    WorkspaceSpec,
)
from .common import (
    _MAX_WAIT,
    _TERMINAL,
    WORKSPACE_TASK,
    NomadBase,
    _current_alloc,
    _event_text,
    _no_progress,
    _task_cause,
    _url_from_ports,
)


class StartMixin(NomadBase):
    """Starting a workspace's service job, up to Jupyter answering (see :meth:`start`)."""

    async def start(self, spec: WorkspaceSpec, progress: Progress | None = None) -> Started:
        """Start ``spec`` as a Nomad service job and return once Jupyter answers (see module doc)."""
        progress = progress or _no_progress
        job_id, eval_id, alloc, url = await self._launch(spec, progress)
        try:
            await self._wait_ready(alloc["ID"], url, spec.token, f"workspace {spec.name}")
            await progress("ready")
        except BaseException:
            await asyncio.shield(self._cleanup(job_id))
            raise
        task_res = ((alloc.get("AllocatedResources") or {}).get("Tasks") or {}).get(WORKSPACE_TASK) or {}
        state = {
            "job_id": job_id,
            "alloc_id": alloc["ID"],
            "eval_id": eval_id,
            "namespace": self.settings.namespace,
            "url": url,
            "node_id": alloc.get("NodeID"),
            "memory_mb": (task_res.get("Memory") or {}).get("MemoryMB"),
        }
        return Started(
            state=state,
            url=url,
            limits={
                "enforced": True,
                "how": "Nomad docker driver: cgroup cpu/memory limits and device reservation",
            },
        )

    async def _launch(self, spec: WorkspaceSpec, progress: Progress) -> tuple[str, str, dict[str, Any], str]:
        """:meth:`start` up to a running allocation with an address (Jupyter's readiness aside):
        render, write the secret Variable and register the job, follow the evaluation and the
        allocation. Returns ``(job_id, eval_id, full allocation, Jupyter's URL)``; on failure
        nothing of it stays in Nomad. This is the agent's own work per create, the part
        benchmarks/bench_nomad.py measures.
        """
        job = self.renderer.workspace(
            WorkspaceJobRequest(
                name=spec.name,
                workspace_id=spec.id,
                owner=spec.owner,
                image=spec.image,
                resources=spec.resources,
                env=spec.env,
                # the agent's own fetchml.* labels are the job's fetchml_* meta already
                labels={k: v for k, v in spec.labels.items() if not k.startswith("fetchml.")},
            ),
            gpu_types=await self._gpu_type_names() if spec.resources.gpu_type else None,
        )
        self._assert_no_secret(job, spec.token, spec.password_hash)
        job_id = job["Job"]["ID"]
        what = f"workspace {spec.name}"
        eval_id, eval_index = await self._register_with_secret(
            job, jupyter_secret_items(spec.token, spec.password_hash)
        )
        try:
            await progress("placing")
            await self._wait_evaluation(
                eval_id, time.monotonic() + self.settings.start_timeout, what, eval_index, job=job["Job"]
            )
            alloc = await self._follow_allocation(job_id, eval_id, WORKSPACE_TASK, progress, what)
            url = _url_from_ports(((alloc.get("AllocatedResources") or {}).get("Shared") or {}).get("Ports"))
            if url is None:
                raise BackendError(
                    f"Nomad allocated no http port for {what}", details=f"allocation {alloc['ID']}"
                )
        except BaseException:
            await asyncio.shield(self._cleanup(job_id))
            raise
        return job_id, eval_id, alloc, url

    async def _register_with_secret(self, job: dict[str, Any], items: dict[str, str]) -> tuple[str, int]:
        """Write the job's secret Variable and register the job at the same time.

        They need no order: Nomad's scheduler places a job without reading Variables, and the
        task's template blocks until ``nomad/jobs/<job>`` exists (Nomad shows "Missing:
        nomad.var.block(...)" meanwhile), so Jupyter never starts without its secret. When one
        of the two fails (or the caller is cancelled), the other is undone once both have
        landed: a job Nomad rejected leaves whatever job Nomad had under this ID and only our
        Variable goes; a Variable that could not be written purges the job just registered.
        Returns :meth:`_register`'s ``(eval_id, eval_index)``; raises the register error first.
        """
        job_id = job["Job"]["ID"]
        both = asyncio.gather(
            self.client.put_variable(secret_variable_path(job_id), items),
            self._register(job),
            return_exceptions=True,
        )
        try:
            written, registered = await asyncio.shield(both)
        except asyncio.CancelledError:
            await asyncio.shield(self._undo_register_with_secret(both, job_id))
            raise
        if isinstance(registered, BaseException) or isinstance(written, BaseException):
            await asyncio.shield(self._undo_register_with_secret(both, job_id))
            raise registered if isinstance(registered, BaseException) else written
        return registered

    async def _undo_register_with_secret(self, both: asyncio.Future[list[Any]], job_id: str) -> None:
        _written, registered = await both
        await self._cleanup(job_id, purge_job=not isinstance(registered, BaseException))

    async def _follow_allocation(
        self, job_id: str, eval_id: str, task: str, progress: Progress, what: str
    ) -> dict[str, Any]:
        """Follow the allocation of ``eval_id`` with blocking queries until its task runs,
        reporting ``pulling image`` and ``starting``; raise with Nomad's cause if it fails.

        The allocation is found in the job's allocation list, then that one allocation is read
        (blocking while it is pending), so what returns is the full running allocation, with
        its ports and resources.
        """
        s = self.settings
        deadline = time.monotonic() + s.start_timeout
        phase = "placing"
        index = 0
        alloc_id: str | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Timeout(*self._phase_timeout(phase, what))
            wait = min(_MAX_WAIT, remaining) if index else None
            if alloc_id is None:
                allocs, index = await self.client.job_allocations(job_id, index or None, wait)
                found = _current_alloc(allocs, eval_id)
                if found is None:
                    continue
                alloc, full, alloc_id = found, False, found["ID"]
            else:
                alloc, index = await self.client.get_allocation(alloc_id, index or None, wait)
                full = True
            events = ((alloc.get("TaskStates") or {}).get(task) or {}).get("Events") or []
            for event in events:
                kind = event.get("Type")
                if kind == "Driver" and "Downloading image" in _event_text(event) and phase == "placing":
                    phase = "pulling image"
                    deadline = time.monotonic() + s.pull_timeout
                    await progress("pulling image")
                elif kind == "Started" and phase != "starting":
                    phase = "starting"
                    deadline = time.monotonic() + s.start_timeout
                    await progress("starting")
                elif kind == "Driver Failure":
                    text = _event_text(event)
                    if "Failed to pull" in text or "pull" in text.lower():
                        raise BackendError(
                            f"the image for {what} could not be pulled: {text}",
                            details="check the image name, the registry and its credentials",
                        )
                    raise BackendError(f"the docker driver could not start {what}: {text}")
            status = alloc.get("ClientStatus")
            if status == "running":
                if full:
                    return alloc
                index = 0  # the list's stub has no ports: read the allocation itself, now
                continue
            if status in _TERMINAL or alloc.get("DesiredStatus") != "run":
                raise BackendError(
                    f"{what} stopped while starting: {_task_cause(alloc, task)}",
                    details=f"allocation {alloc['ID']} is {status}",
                )

    def _phase_timeout(self, phase: str, what: str) -> tuple[str, str]:
        s = self.settings
        if phase == "pulling image":
            return (
                f"the image for {what} was not pulled within {s.pull_timeout:g} s",
                "raise nomad.pull_timeout or pre-pull the image on the clients",
            )
        if phase == "starting":
            return (
                f"{what} started but Jupyter did not answer within {s.start_timeout:g} s",
                "see the task's logs in Nomad; raise nomad.start_timeout for slow images",
            )
        return (
            f"{what} did not start within {s.start_timeout:g} s",
            "the task may wait for its Nomad Variable or a host volume; check `nomad alloc status`",
        )

    async def _wait_ready(self, alloc_id: str, url: str, token: str, what: str) -> None:
        """Poll Jupyter's ``/api/status`` with the workspace token until it answers 200."""
        deadline = time.monotonic() + self.settings.start_timeout
        delay = 0.1
        next_check = time.monotonic() + 2.0
        while True:
            try:
                resp = await self.http.get(url + "api/status", headers={"Authorization": f"token {token}"})
                if resp.status_code == 200:
                    return
                if resp.status_code == 403:
                    raise BackendError(
                        f"Jupyter in {what} refused the workspace token",
                        details="the secrets file from the Nomad Variable was not applied",
                    )
            except httpx.HTTPError:
                pass
            now = time.monotonic()
            if now >= deadline:
                raise Timeout(*self._phase_timeout("starting", what))
            if now >= next_check:
                next_check = now + 2.0
                alloc, _ = await self.client.get_allocation(alloc_id)
                if alloc.get("ClientStatus") != "running" or alloc.get("DesiredStatus") != "run":
                    raise BackendError(
                        f"{what} stopped before Jupyter answered: {_task_cause(alloc, WORKSPACE_TASK)}"
                    )
            await asyncio.sleep(min(delay, max(0.0, deadline - now)))
            delay = min(1.0, delay * 1.5)

