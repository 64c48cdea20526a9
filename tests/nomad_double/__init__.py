"""A Nomad HTTP API double for the tests (no Nomad binary can be installed here).

``NomadDouble`` serves Nomad's API on 127.0.0.1 from an in-process model of a cluster;
``DoubleNode``, ``DoubleGPU`` and ``DoubleImage`` describe its client nodes, their GPUs and the
images its docker driver knows. See ``server.py`` for what it mimics and how it fails,
``cluster.py`` for its scheduler, event stream and the limits of its docker driver, ``devices.py``
for GPUs as the NVIDIA device plugin fingerprints them, and ``contract.py`` for the check of every
exchange against Nomad's OpenAPI description.
"""

from __future__ import annotations

from .cluster import DoubleImage, DoubleNode
from .devices import DoubleGPU
from .server import NomadDouble

__all__ = ["DoubleGPU", "DoubleImage", "DoubleNode", "NomadDouble"]
