"""A Nomad HTTP API double for the tests (no Nomad binary can be installed here).

``NomadDouble`` serves Nomad's API on 127.0.0.1 from an in-process model of a cluster;
``DoubleNode`` and ``DoubleImage`` describe its client nodes and the images its docker driver
knows. See ``server.py`` for what it mimics and how it fails, and ``cluster.py`` for the limits
of its docker driver.
"""

from __future__ import annotations

from .cluster import DoubleImage, DoubleNode
from .server import NomadDouble

__all__ = ["DoubleImage", "DoubleNode", "NomadDouble"]
