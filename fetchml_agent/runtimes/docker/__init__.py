"""The docker runtime: one container per workspace on this host, each on a network of its own.

A workspace ``NAME`` owns, all named with the runtime's ``prefix`` (default ``fetchml``) and
labelled ``io.fetchml.instance=<prefix>`` so that :meth:`DockerRuntime.discover` adopts them
after an agent restart:

- the container ``<prefix>-NAME`` from the workspace image: non-root user, every capability
  dropped, ``no-new-privileges``, an init process, ``--cpu``/``--memory`` as hard cgroup limits
  (NanoCpus; Memory with no swap beyond it), ``--gpu N`` as N GPUs by device request;
  JupyterLab's port published on ``publish_addr`` (loopback by default) only;
- the volume ``<prefix>-NAME-work`` mounted at the image's work directory (kept by stop,
  removed by :meth:`~DockerRuntime.remove`);
- the bridge network ``<prefix>-NAME`` (its own /28 from ``subnet_pool``, interface
  ``fml<hash>``, no inter-container traffic), whose egress the host firewall
  (:mod:`fetchml_agent.netpolicy`, table ``inet <table>``) limits to the agent's package index,
  DNS and the allowlist. The firewall is installed before the network exists and the start fails
  when it cannot be: a workspace never runs unfiltered.

Why a published loopback port and not an ``--internal`` network: Docker publishes no port of a
container on an internal network, and an internal network still reaches every service on the
host; the nftables table closes both the host and the forward path instead, so the user reaches
JupyterLab at ``http://127.0.0.1:PORT/`` with no proxy in the agent to keep alive.

An experiment run is a container of its own, ``<prefix>-run-<run id>`` (the workspace's image and
network, the same hardening and limits, the run's GPUs), labelled with the run's id and not with a
workspace id, so that it is never adopted as a workspace; see :meth:`DockerRuntime.submit_run`.

A stopped workspace keeps its container, so packages installed into it survive stop/start; the
container is recreated (and says so in progress) when the image, resources, environment or token
changed. Docker SDK calls run in threads, off the event loop.

Modules: :mod:`.common` (labels, names, the SDK's errors, the runtime's state), :mod:`.network`,
:mod:`.images`, :mod:`.runs`, :mod:`.stats`, :mod:`.execs` and :mod:`.runtime` (the lifecycle).
"""


from __future__ import annotations

from ..base import PackageCheck
from ..docker_schema import DEFAULT_IMAGE
from .common import LABEL, image_allowed, rewrite_loopback_urls
from .runtime import DockerRuntime

__all__ = ["DEFAULT_IMAGE", "DockerRuntime", "LABEL", "PackageCheck", "image_allowed", "rewrite_loopback_urls"]
