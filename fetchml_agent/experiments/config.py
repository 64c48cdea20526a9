"""What a run is asked to do (``experiment-config.yaml``) and how the agent runs them (``experiments:``).

An experiment config, all keys optional::

    experiment: my-experiment      # --experiment wins
    notebook: train.ipynb          # or  script: train.py   (--notebook/--script win)
    parameters: {lr: 0.01}         # -p key=value wins, key by key
    timeout: 30m                   # per attempt: seconds, or 90s / 30m / 2h / 1h30m
    retries: 2                     # further attempts after a failed one (a timeout is a failure)
    kernel: python3                # notebooks: the kernel (default: the notebook's own, else python3)
    resources: {gpu: 1}            # GPUs for the run (default: the workspace's GPU count)

:func:`validate_run_config` checks it with cerberus; the error names the file and every bad key.
:data:`AGENT_SECTION_SCHEMA` is the agent.yaml ``experiments:`` section (``cpu_workers``: how many
CPU-only runs execute at once, default 1; GPU runs take one GPU each per GPU asked for;
``warm_runner_idle_s``: how long a workspace's warm runner — a process of its environment with
papermill already imported, which starts runs fast — waits for the next run, default 600, 0 off).
"""

from __future__ import annotations

import re
from typing import Any

from cerberus import Validator

from ..errors import InvalidArgument
from ..settings import format_errors

__all__ = [
    "AGENT_SECTION_SCHEMA",
    "EXPERIMENT_ID",
    "RUN_CONFIG_SCHEMA",
    "parse_duration",
    "validate_experiment_id",
    "validate_run_config",
]

EXPERIMENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*$")
MAX_RETRIES = 10


def parse_duration(value: Any, key: str = "timeout") -> float:
    """Seconds from ``90``, ``"90"``, ``"90s"``, ``"30m"``, ``"2h"``, ``"1h30m"``; raise naming ``key``."""
    if isinstance(value, bool):
        raise InvalidArgument(f"{key}: expected seconds or a duration like 30m, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = _DURATION.match(str(value))
        if not m or not any(m.groups()):
            raise InvalidArgument(f"{key}: expected seconds or a duration like 90s, 30m, 2h, got {value!r}")
        h, mins, s = (float(g) if g else 0.0 for g in m.groups())
        seconds = h * 3600 + mins * 60 + s
    if seconds <= 0:
        raise InvalidArgument(f"{key}: must be more than 0 seconds, got {value!r}")
    return seconds


def _duration_ok(field: str, value: Any, error: Any) -> None:
    if value is None:
        return
    try:
        parse_duration(value, field)
    except InvalidArgument:
        error(field, "must be seconds or a duration like 90s, 30m, 2h")


def _id_ok(field: str, value: Any, error: Any) -> None:
    if not EXPERIMENT_ID.match(str(value)):
        error(field, "must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit")


RUN_CONFIG_SCHEMA: dict[str, Any] = {
    "experiment": {"type": "string", "check_with": _id_ok},
    "notebook": {"type": "string", "empty": False, "excludes": "script"},
    "script": {"type": "string", "empty": False, "excludes": "notebook"},
    "parameters": {"type": "dict", "keysrules": {"type": "string", "regex": r"^[A-Za-z_][A-Za-z0-9_]*$"}},
    "timeout": {"type": ["number", "string"], "nullable": True, "check_with": _duration_ok},
    "retries": {"type": "integer", "min": 0, "max": MAX_RETRIES},
    # A kernelspec name as Jupyter allows it (it becomes an argument of papermill's command line).
    "kernel": {"type": "string", "empty": False, "regex": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
    "resources": {
        "type": "dict",
        "schema": {"gpu": {"type": "integer", "min": 0}},
    },
}

AGENT_SECTION_SCHEMA: dict[str, Any] = {
    "type": "dict",
    "default": {},
    "schema": {
        "cpu_workers": {"type": "integer", "min": 1, "max": 256, "default": 1},
        "default_timeout": {"type": ["number", "string"], "nullable": True, "default": None, "check_with": _duration_ok},
        "cancel_grace": {"type": "number", "min": 0, "default": 5},
        "snapshot_max_file_mb": {"type": "integer", "min": 1, "default": 10},
        "run_data_max_mb": {"type": "integer", "min": 0, "default": 100},
        "warm_runner_idle_s": {"type": "number", "min": 0, "default": 600},
    },
}


def validate_experiment_id(value: Any) -> str:
    if not isinstance(value, str) or not EXPERIMENT_ID.match(value):
        raise InvalidArgument(
            f"invalid experiment id {value!r}",
            "use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit (e.g. exp-123)",
        )
    return value


def validate_run_config(doc: Any, source: str = "experiment config") -> dict[str, Any]:
    """The validated config (unknown keys refused); raise InvalidArgument naming ``source`` and keys."""
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise InvalidArgument(f"{source}: the top level must be a mapping of keys")
    v = Validator(RUN_CONFIG_SCHEMA)
    if not v.validate(doc):
        lines = format_errors(v.errors)
        raise InvalidArgument(f"{source}: " + "; ".join(lines), "allowed keys: " + ", ".join(RUN_CONFIG_SCHEMA))
    out = dict(v.document)
    if out.get("timeout") is not None:
        out["timeout"] = parse_duration(out["timeout"])
    return out
