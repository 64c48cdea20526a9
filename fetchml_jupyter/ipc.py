"""Kernels over Unix sockets with a socket-name prefix of their own.

With ``KernelManager.transport = ipc`` (the local runtime's isolated workspaces), jupyter_client
names a kernel's five sockets ``<ip>-1`` … ``<ip>-5``, taking the first numbers whose files do not
exist yet. The files appear only once the kernel has started and bound them, so two kernels
started at once in one server chose the same names, and the second kernel could not bind (or a
client reached the wrong kernel). :class:`IpcKernelManager` gives every kernel manager a random
suffix of its own (``<ip>-<8 hex>-N``) once, before its first connection file; a restart keeps it.
"""

from __future__ import annotations

import secrets
from typing import Any

from jupyter_server.services.kernels.kernelmanager import ServerKernelManager

from . import IPC_SUFFIX_LEN

__all__ = ["IpcKernelManager"]


class IpcKernelManager(ServerKernelManager):  # type: ignore[misc]
    _fetchml_prefixed = False

    def write_connection_file(self, **kwargs: Any) -> None:
        if self.transport == "ipc" and not self._fetchml_prefixed:
            self.ip = f"{self.ip}-{secrets.token_hex((IPC_SUFFIX_LEN - 1) // 2)}"
            self._fetchml_prefixed = True
        super().write_connection_file(**kwargs)
