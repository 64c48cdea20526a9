"""JupyterLab's settings inside a workspace container.

The server listens on all interfaces of the container on port 8888: the container's own network
and the host firewall decide who reaches it (the runtime publishes it on the host's loopback).
Secrets arrive in the environment and are taken out of it here, so that kernels and terminals,
which inherit the server's environment, do not see them.
"""

import os

c = get_config()  # type: ignore[name-defined]  # noqa: F821 - provided by traitlets

c.ServerApp.ip = "0.0.0.0"
c.ServerApp.port = 8888
c.ServerApp.port_retries = 0
c.ServerApp.open_browser = False
c.ServerApp.root_dir = "/home/fetchml/work"
c.ServerApp.allow_remote_access = True

# fetchml_jupyter decides access with the agent (docs/access.md); the others bring live
# collaboration and terminals. The one list lives in the fetchml_jupyter package.
from fetchml_jupyter import SERVER_EXTENSIONS  # noqa: E402

c.ServerApp.jpserver_extensions.update(SERVER_EXTENSIONS)

# The server's own credential towards the agent (fetchml_jupyter reads it from here).
_token = os.environ.pop("JUPYTER_TOKEN", None)
if _token is not None:
    c.IdentityProvider.token = _token
_password = os.environ.pop("FETCHML_JUPYTER_PASSWORD_HASH", None)
if _password:
    c.PasswordIdentityProvider.hashed_password = _password

# Kernels: the kernelspec python3 (the kernel environment's Python) only, never a kernel of the
# server's own environment.
c.KernelSpecManager.ensure_native_kernel = False
