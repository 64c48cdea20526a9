"""JSON documents as files, replaced atomically: the run directory's contract between the agent
and the runner (``job.json``, ``state.json``, ``result.json``...). Standard library only: the
runner imports this inside a workspace's Python."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["read_json", "write_json"]


def write_json(path: Path, doc: Any) -> None:
    """Replace ``path`` atomically: a reader sees the old document or the new one, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, default=str))
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    """The document at ``path``, or ``None`` when it does not exist (yet) or is not JSON."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
