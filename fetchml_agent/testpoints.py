"""Pause points for the crash-consistency tests, and nothing else.

``FETCHML_TEST_PAUSE_AT=STEP`` (read from the agent's environment) makes the agent stop dead at the
named step: it writes ``STEP`` to the file named by ``FETCHML_TEST_PAUSE_FILE`` and then blocks
its own event loop, so a test can ``kill -9`` it exactly there
(tests/integration/test_crash_consistency.py). Unset, :func:`pause_point` is a dictionary
lookup. The steps (:data:`STEPS`) are the points between two writes that a crash may separate.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["PAUSE_AT", "PAUSE_FILE", "STEPS", "pause_point"]

PAUSE_AT = "FETCHML_TEST_PAUSE_AT"
PAUSE_FILE = "FETCHML_TEST_PAUSE_FILE"

STEPS = (
    "create.recorded",    # the row is written (``starting``), nothing is started yet
    "start.spawned",      # the local runtime spawned JupyterLab; it is not recorded yet
    "start.ready",        # the runtime says ready; the row does not say ``running`` yet
    "stop.stopping",      # the row says ``stopping``; the server still runs
    "restart.stopped",    # a restart stopped the server and has not started the next one
    "delete.stopped",     # a delete stopped the server; the row and the files are still there
    "delete.removed",     # a delete removed the runtime's resources; the row is still there
)


def pause_point(step: str) -> None:
    if os.environ.get(PAUSE_AT) != step:
        return
    marker = os.environ.get(PAUSE_FILE)
    if marker:  # whole or not at all: the test reads it as soon as the name exists
        tmp = Path(marker + ".tmp")
        tmp.write_text(step)
        tmp.replace(marker)
    while True:  # the test kills the agent here
        time.sleep(3600)
