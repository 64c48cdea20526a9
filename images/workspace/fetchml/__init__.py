"""The ``fetchml`` helper module available in every workspace's Python.

It links notebook code to the agent's experiment tracking (``log_metric`` and friends are added by
the experiments work). Importing it has no side effects.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
