"""Bind the agent's listening sockets before anything else starts.

The agent binds ``listen`` first and only then opens its store, adopts workspaces and says that it
is serving: a second agent on a busy port stops at once with one clear message naming ``listen``,
instead of starting up, logging "serving" and failing inside the server.
"""

from __future__ import annotations

import errno
import socket

from ..settings import ConfigError

__all__ = ["bind_listeners"]


def _hint(code: int | None, where: str) -> str:
    if code == errno.EADDRINUSE:
        return f"another program (perhaps another fetchml-agent) listens there: stop it, or change listen in {where}"
    if code == errno.EACCES:
        return f"ports below 1024 need privileges: choose a higher port in listen in {where}"
    if code == errno.EADDRNOTAVAIL:
        return f"this host has no such address: change the host part of listen in {where}"
    return f"check listen in {where}"


def bind_listeners(host: str, port: int, *, config_name: str = "agent.yaml") -> list[socket.socket]:
    """Bound (not yet listening) TCP sockets for every address ``host`` resolves to.

    The sockets are created with ``IPPROTO_TCP`` so that asyncio sets ``TCP_NODELAY`` on the
    connections it accepts from them (it does so only for sockets that name the protocol).

    Raises:
        ConfigError: the address cannot be resolved or bound; the message names ``listen``.
    """
    try:
        infos = socket.getaddrinfo(host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port} (listen in {config_name}): {exc.strerror}", _hint(None, config_name)
        ) from None
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port} (listen in {config_name}): {exc.strerror or exc}",
            _hint(exc.errno, config_name),
        ) from None
    return sockets
