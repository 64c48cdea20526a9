"""``fetchml``: what notebook and script code uses to report to its experiment run.

Importable in every workspace's Python (standard library only, no side effects on import)::

    from fetchml import log_metric, parameters
    lr = parameters().get("lr", 0.01)       # scripts; notebooks get parameters injected by papermill
    log_metric("loss", 0.12, step=3)

Inside a run queued with ``ml jupyter queue`` the run's executor sets ``FETCHML_METRICS_FILE``
and each call appends one JSON line to it, which the agent records with the run. Outside a run
(an interactive notebook) nothing is recorded: the call warns once and returns the record.
Files a run writes under ``outputs/`` (see :func:`outputs_dir`) are kept with the run.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import time
import warnings
from pathlib import Path
from typing import Any

__all__ = [
    "ENV_METRICS_FILE",
    "in_run",
    "log_metric",
    "log_metrics",
    "outputs_dir",
    "parameters",
    "run_id",
    "__version__",
]

__version__ = "0.1.0"

ENV_METRICS_FILE = "FETCHML_METRICS_FILE"
_ENV_RUN_ID = "FETCHML_RUN_ID"
_ENV_PARAMETERS = "FETCHML_PARAMETERS"
_ENV_PARAMETERS_FILE = "FETCHML_PARAMETERS_FILE"  # runs on Nomad: a JSON file instead of the variable
_ENV_OUTPUTS = "FETCHML_OUTPUTS_DIR"
_ENV_ATTEMPT = "FETCHML_ATTEMPT"
_MAX_NAME = 200
_warned = False


def in_run() -> bool:
    """True inside a run started by the agent (metrics are recorded)."""
    return bool(os.environ.get(ENV_METRICS_FILE))


def run_id() -> str | None:
    """The id of the run this code executes in (``run-…``), or ``None`` outside a run."""
    return os.environ.get(_ENV_RUN_ID) or None


def parameters() -> dict[str, Any]:
    """The run's parameters (``-p key=value`` and the config's ``parameters:``); ``{}`` outside a run."""
    raw = os.environ.get(_ENV_PARAMETERS)
    if not raw and os.environ.get(_ENV_PARAMETERS_FILE):
        raw = Path(os.environ[_ENV_PARAMETERS_FILE]).read_text()
    return dict(json.loads(raw)) if raw else {}


def outputs_dir() -> Path:
    """Where to write files that should be kept with the run (``outputs/`` of the run's directory)."""
    path = Path(os.environ.get(_ENV_OUTPUTS) or "outputs")
    path.mkdir(parents=True, exist_ok=True)
    return path


def log_metric(name: str, value: float, step: int | None = None) -> dict[str, Any]:
    """Record ``value`` of metric ``name`` (at ``step``) for the current run and return the record.

    ``name``: a non-empty string of at most 200 characters; ``value``: a real number (NaN and
    infinities are recorded as null with their text); ``step``: a whole number or ``None``.
    Raises TypeError/ValueError for anything else, so a typo fails where it is made.
    """
    if not isinstance(name, str) or not name or len(name) > _MAX_NAME:
        raise ValueError(f"log_metric: name must be a non-empty string of at most {_MAX_NAME} characters, got {name!r}")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"log_metric({name!r}): value must be a real number, got {type(value).__name__}")
    if step is not None and (isinstance(step, bool) or not isinstance(step, numbers.Integral)):
        raise TypeError(f"log_metric({name!r}): step must be a whole number or None, got {step!r}")
    number = float(value)
    record: dict[str, Any] = {
        "name": name,
        "value": number if math.isfinite(number) else None,
        "step": None if step is None else int(step),
        "ts": time.time(),
        "attempt": int(os.environ.get(_ENV_ATTEMPT) or 1),
    }
    if not math.isfinite(number):
        record["text"] = repr(number)
    path = os.environ.get(ENV_METRICS_FILE)
    if not path:
        global _warned
        if not _warned:
            _warned = True
            warnings.warn("fetchml.log_metric: not inside a run queued by `ml jupyter queue`; metrics are not recorded",
                          stacklevel=2)
        return record
    line = (json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8")
    # One write with O_APPEND: lines from several processes of one run never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return record


def log_metrics(metrics: dict[str, float], step: int | None = None) -> list[dict[str, Any]]:
    """:func:`log_metric` for each ``name: value`` of ``metrics``."""
    return [log_metric(k, v, step) for k, v in metrics.items()]
