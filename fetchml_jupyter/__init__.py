"""``fetchml_jupyter``: the Jupyter Server extension that makes a workspace's JupyterLab follow the
agent's roles. Shipped by FetchML Jupyter and enabled in every workspace (local, docker, Nomad).

It imports nothing from ``fetchml_agent`` (the workspace image does not have the agent): only the
standard library and what Jupyter Server brings (tornado, jupyter_events). At link time it takes
the agent's address (``FETCHML_ACCESS_URL``) and the server's own credential (Jupyter's token,
from ``JUPYTER_TOKEN`` or ``IdentityProvider.token``) out of the environment, so that kernels and
terminals never inherit them, and installs:

- :class:`~fetchml_jupyter.identity.FetchmlIdentityProvider`: who a request comes from (a personal
  token in ``?token=`` or ``Authorization: token``, or the session cookie it set), asked of the
  agent and cached for at most a second;
- :class:`~fetchml_jupyter.authorizer.FetchmlAuthorizer`: what they may do, from the pairs the
  agent's answer allows; a refusal is a 403 naming the role needed;
- :class:`~fetchml_jupyter.kernels.FetchmlKernelConnection`: kernel executions audited (who,
  which notebook, when, how long; never the code);
- a watcher that re-checks open WebSocket connections every second and closes revoked ones;
- the audit feed: Jupyter Server's own events (contents, kernel actions) batched to the agent;
- a guard on the collaboration WebSocket (jupyter-collaboration) so a viewer edits nothing.

Without ``FETCHML_ACCESS_URL`` it installs nothing and says so: Jupyter's own token stays in force.
"""

from __future__ import annotations

from typing import Any

__all__ = ["__version__"]

__version__ = "0.1.0"

#: :class:`fetchml_jupyter.ipc.IpcKernelManager` by name (``MappingKernelManager.kernel_manager_class``),
#: and what its suffix adds to the configured socket prefix (``-`` and 8 hex digits).
IPC_KERNEL_MANAGER = "fetchml_jupyter.ipc.IpcKernelManager"
IPC_SUFFIX_LEN = 9


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "fetchml_jupyter"}]


def _link_jupyter_server_extension(serverapp: Any) -> None:
    from .extension import link

    link(serverapp)


def _load_jupyter_server_extension(serverapp: Any) -> None:
    from .extension import load

    load(serverapp)


async def _start_jupyter_server_extension(serverapp: Any) -> None:
    from .extension import start

    await start(serverapp)


# The server extensions every workspace enables (the workspace image's config and the local
# runtime's both read this): this one, live collaboration and what it needs, terminals, and the
# language-server bridge that JupyterLab's frontend asks for (without it every page load logs a
# failed /lsp/status).
SERVER_EXTENSIONS: dict[str, bool] = {
    "fetchml_jupyter": True,
    "jupyter_server_ydoc": True,
    "jupyter_server_fileid": True,
    "jupyter_server_terminals": True,
    "jupyter_lsp": True,
}
