"""The ``nomad`` runtime: each workspace is a Nomad service job, each experiment run a batch job.

Implements :class:`~fetchml_agent.runtimes.base.Runtime` (and the run backend and package-index
reach of the contract) over Nomad's HTTP API (python-nomad via
:class:`~fetchml_agent.nomad.client.NomadClient`, the exec WebSocket via
:func:`~fetchml_agent.nomad.exec.alloc_exec`), in four modules: :mod:`.common` (reading
allocations and evaluations, registering jobs), :mod:`.start` (a workspace's start),
:mod:`.runs` (experiment runs as batch jobs) and :mod:`.runtime` (the rest of the lifecycle).

Lifecycle of a workspace:

``start``
    validate and render the ``jupyter-workspace`` job (refusing disallowed images, volumes and
    resources before anything reaches Nomad), write Jupyter's token/password hash to the Nomad
    Variable ``nomad/jobs/<job>`` (never into the job spec) and register the job, both at once
    (the task's template waits for the Variable), then follow the evaluation and the allocation
    with blocking queries, reporting ``placing``, ``pulling image``, ``starting`` and ``ready``.
    Each phase has its own deadline: ``start_timeout`` for placement, ``pull_timeout`` from the
    first "Downloading image" event, ``start_timeout`` again from the task's start until Jupyter
    answers ``GET /api/status`` with the workspace token at the allocation's address and port.
    A job Nomad rejects raises :class:`InvalidArgument` with the messages of Nomad's
    ``/v1/validate/job`` (asked only then). Placement failures raise
    :class:`InsufficientResources` naming the cause (no node with a free GPU, not enough memory,
    port conflict, a volume no node has); an image that cannot be pulled raises
    :class:`BackendError`; a deadline raises :class:`Timeout`. On any failure the job is purged
    and the Variable deleted.
``stop``
    deregisters the job (Nomad sends the task's KillSignal, SIGTERM, then SIGKILL after
    KillTimeout) and waits for the allocation to end; the Variable is deleted.
``remove``
    purges the job and deletes the Variable. ``restart`` restarts the allocation in place.
``discover``
    lists jobs named ``<job_prefix>ws-*`` whose meta says ``fetchml_kind=workspace`` and returns
    their states, so a new agent process adopts what runs.

Runtime state (what the store persists): ``{"job_id", "alloc_id", "eval_id", "namespace", "url",
"node_id", "memory_mb"}``.

Package installs (``exec``) run inside the allocation; pip there reaches the agent's package
index at :meth:`NomadRuntime.index_base_url` (``nomad.agent_url``, or the index-only listener
``nomad.index``), never the agent's loopback.
"""

from __future__ import annotations

from .common import placement_cause
from .runtime import NomadRuntime

__all__ = ["NomadRuntime", "placement_cause"]
