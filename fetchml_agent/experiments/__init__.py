"""Experiments: named sets of notebook and script runs queued from workspaces.

The map (each module's docstring says more):

- :mod:`.config` — the ``experiment-config.yaml`` schema (a run's notebook, parameters, timeout,
  retries, GPUs) and the agent's ``experiments:`` section;
- :mod:`.records` — experiments, links, runs, metrics and sync history as rows, and their queries;
- :mod:`.files` — which workspace files are code and configuration, hashing, the run snapshot;
- :mod:`.remote` — the same files for a workspace the agent reaches only through its workload
  (docker volumes, Nomad allocations): tar streams through ``runtime.exec``;
- :mod:`.runner` — the detached process that executes one run (papermill for notebooks) and
  writes its result to files, so that an agent restarted in between still learns the outcome;
- :mod:`.executor` — the agent's side: the bounded worker pool, launching, watching, cancelling,
  adopting after a restart, recording results;
- :mod:`.results` — a run's snapshot where the backend reads it, its result document, the files
  it leaves;
- :mod:`.environment` — a run's packages: the workspace's lock recorded with the snapshot, and
  what ``ml status`` shows of the run's environment step;
- :mod:`.env_step` — that step, copied into the snapshot and run with the image's Python before
  the notebook (standard library only, never imported by the agent);
- :mod:`.sync` — workspace ↔ experiment file sync with its conflict rule;
- :mod:`.metadata` — the workspace metadata document and its JSON/CSV export.

Process trees (liveness by pid and start time, memory, killing) are :mod:`fetchml_agent.procs`; the
operations ``ml jupyter queue|sync|link|...`` call are :mod:`fetchml_agent.service.experiments`.

This package must stay cheap to import: :mod:`.runner` imports it inside a workspace's Python.
"""

from __future__ import annotations

__all__: list[str] = []
