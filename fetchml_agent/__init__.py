"""FetchML Jupyter: secure, isolated Jupyter workspaces on GPU hosts.

The package holds the agent (``fetchml-agent``), its client library and the ``ml`` command.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
