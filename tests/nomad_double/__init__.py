"""A Nomad HTTP API double for the tests (no Nomad binary can be installed here).

``NomadDouble`` serves Nomad's API on 127.0.0.1 from an in-process model of a cluster;
``DoubleNode``, ``DoubleGPU`` and ``DoubleImage`` describe its client nodes, their GPUs and the
images its docker driver knows. See ``server.py`` for what it mimics and how it fails,
``cluster.py`` for its scheduler, event stream and the limits of its docker driver, ``devices.py``
for GPUs as the NVIDIA device plugin fingerprints them, and ``contract.py`` for the check of every
exchange against Nomad's OpenAPI description.

In short (starlette + uvicorn): Nomad's paths, wrapped and unwrapped bodies, nanosecond
durations, text/plain errors, 404 vs ``200 []`` vs 500, blocking queries, evaluations with
``FailedTGAllocs``, allocation lifecycles (restarts, failures, image pulls), Variables with
check-and-set, ACL tokens, the client stats/fs/restart endpoints and the exec WebSocket. It is
stricter than Nomad in one way: unknown JSON fields are refused (Nomad ignores them). Its docker
driver runs the task's command as a host process, so a real JupyterLab and papermill run; it has
no containers or network namespaces. It fails on demand: ``go_down()``, ``latency``,
``set_acl()``, ``fail_next()``, nodes without GPUs, unknown images.

Run: ``make test-nomad`` (``pytest tests/unit/nomad tests/integration/nomad``); with
``FETCHML_TEST_NOMAD_ADDR`` the same tests run against a real Nomad (``fixtures.py``), and tests
that need a knob only the double has skip with the reason.
"""

from __future__ import annotations

from .cluster import DoubleImage, DoubleNode
from .devices import DoubleGPU
from .server import NomadDouble

__all__ = ["DoubleGPU", "DoubleImage", "DoubleNode", "NomadDouble"]
