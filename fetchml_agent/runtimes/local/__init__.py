"""The ``local`` runtime: one JupyterLab child process per workspace; nothing else to install.

Each workspace gets:
- its own Python environment: a venv under ``DATA_DIR/envs/<id>`` created without pip, which sees
  the agent's own packages (JupyterLab, ipykernel, papermill, pip) through a ``.pth`` line *after*
  its own site-packages, so what one workspace installs shadows the base and is invisible to others;
- installers pointed at the workspace's own package index: the agent's ``PIP_INDEX_URL``/``UV_*``/
  ``CONDARC`` variables come from ``spec.env``; none of the agent's own ``PIP_*``, ``UV_*`` or
  ``CONDA*`` settings leak in, and the files named by ``PIP_CONFIG_FILE`` and ``CONDARC`` are also
  copied into the venv (pip's and conda's per-environment config), so unsetting a variable in a
  notebook does not send pip back to the host's configuration;
- its own session (``start_new_session``), so it survives an agent restart and is adopted;
- a server bound to 127.0.0.1 with a token (``JUPYTER_TOKEN``, never on the command line) or a
  hashed password in a 0600 config file;
- CPU/memory limits through :class:`~fetchml_agent.runtimes.cgroups.Cgroups` where the host allows.
"""

from __future__ import annotations

from .env import create_workspace_env
from .runtime import LocalRuntime

__all__ = ["LocalRuntime", "create_workspace_env"]
