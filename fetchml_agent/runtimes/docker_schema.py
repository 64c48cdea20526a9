"""The ``docker:`` section of agent.yaml (cerberus), read by ``runtime: docker``.

Kept apart from :mod:`fetchml_agent.runtimes.docker` so that validating a configuration never
imports the docker SDK. Every key has a default; a minimal section is ``docker: {}``::

    docker:
      socket: unix:///var/run/docker.sock
      image: fetchml/workspace:0.1.0        # default workspace image (images/build.sh)
      allowed_images: [fetchml/*]           # what --image may name (null: anything on the host)
      allowed_bases: [fetchml/workspace]    # what `ml jupyter build --base` may name
      index: 172.17.0.1:9101                # where containers reach the agent's package index
      dns: []                               # resolvers a workspace may query
      allow: [{addr: 10.0.0.0/8, port: 443, proto: tcp}]   # more destinations
      data_volume: null                     # shared data: a docker volume's name or a host directory
      data_mount: /data                     # where it appears: read-write in workspaces, read-only in runs
"""

from __future__ import annotations

from typing import Any

from fetchml_agent import __version__
from fetchml_agent.runtimes.base import DATA_MOUNT_SCHEMA

__all__ = ["DEFAULT_IMAGE", "DOCKER_SECTION_SCHEMA"]

DEFAULT_IMAGE = f"fetchml/workspace:{__version__}"

_IMAGES = {"type": "list", "nullable": True, "default": None, "schema": {"type": "string", "empty": False}}

DOCKER_SECTION_SCHEMA: dict[str, Any] = {
    "type": "dict",
    "default": {},
    "schema": {
        "socket": {"type": "string", "default": "unix:///var/run/docker.sock", "empty": False},
        "image": {"type": "string", "default": DEFAULT_IMAGE, "empty": False},
        "allowed_images": _IMAGES,
        "allowed_bases": {**_IMAGES, "default": ["fetchml/workspace"]},
        "prefix": {"type": "string", "default": "fetchml", "regex": r"^[a-z0-9][a-z0-9_.-]{0,30}$"},
        "publish_addr": {"type": "string", "default": "127.0.0.1", "empty": False},
        # "ADDR:PORT", or ":PORT" / null for the gateway of Docker's default bridge (and the
        # agent's own port): the agent must listen there too.
        "index": {
            "type": "string",
            "nullable": True,
            "default": None,
            "regex": r"^(\[[0-9A-Fa-f:]+\]|[0-9.]*):\d{1,5}$",
        },
        "dns": {"type": "list", "default": [], "schema": {"type": "string"}},
        "allow": {
            "type": "list",
            "default": [],
            "schema": {
                "type": "dict",
                "schema": {
                    "addr": {"type": "string", "required": True, "empty": False},
                    "port": {"type": "integer", "nullable": True, "default": None, "min": 1, "max": 65535},
                    "proto": {"type": "string", "default": "tcp", "allowed": ["tcp", "udp"]},
                },
            },
        },
        "firewall_table": {
            "type": "string",
            "default": "fetchml_docker",
            "regex": r"^[A-Za-z][A-Za-z0-9_]{0,31}$",
        },
        "log_rate": {
            "type": "string",
            "default": "10/minute",
            "regex": r"^[1-9][0-9]*/(second|minute|hour|day)$",
        },
        "subnet_pool": {"type": "string", "default": "10.213.0.0/16"},
        "subnet_prefix": {"type": "integer", "default": 28, "min": 16, "max": 29},
        "gpus": {"type": "list", "nullable": True, "default": None, "schema": {"type": "integer", "min": 0}},
        "pids_limit": {"type": "integer", "nullable": True, "default": 4096, "min": 16},
        "start_timeout": {"type": "number", "default": 120, "min": 1},
        # The shared data volume (docs/experiments.md): a docker volume's name, or an absolute
        # host directory bound in; mounted at data_mount read-write in workspaces, read-only in runs.
        "data_volume": {"type": "string", "nullable": True, "default": None,
                        "regex": r"^(/[A-Za-z0-9._/-]*|[A-Za-z0-9][A-Za-z0-9_.-]{0,127})$"},
        "data_mount": DATA_MOUNT_SCHEMA,
    },
}
