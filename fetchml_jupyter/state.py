"""The extension's process-wide state: the agent link, the resolver, the auditor, the watcher.

Configured once at link time (:func:`configure`) from the environment, which it then cleans;
everything else reaches the pieces through the accessors here.
"""

from __future__ import annotations

import contextvars
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tornado import web

    from .activity import Activity
    from .agent import FetchmlUser, Resolver
    from .audit import Auditor
    from .watcher import Watcher

__all__ = ["PEER_ALIASES_ENV", "REQUEST", "URL_ENV", "active", "configure", "configure_credential", "note_person", "note_request",
           "parse_aliases", "peer_address", "resolver"]

URL_ENV = "FETCHML_ACCESS_URL"
CA_ENV = "FETCHML_ACCESS_CA"
# Set by a runtime whose published port reaches the server from an address of its own: a
# comma-separated list of ``SEEN=MEANS`` pairs, e.g. the docker runtime's ``10.213.0.1=127.0.0.1``
# (a connection from the workspace network's gateway came through the port published on the
# host's loopback). The server reports ``MEANS`` as the peer; the agent's rules do the rest.
PEER_ALIASES_ENV = "FETCHML_ACCESS_PEER_ALIASES"
# Jupyter's token is the server's credential; FETCHML_SERVER_CREDENTIAL may name it instead.
CREDENTIAL_ENVS = ("FETCHML_SERVER_CREDENTIAL", "JUPYTER_TOKEN")

# The request being served (handler, user): set when the user is known, so that events Jupyter
# Server emits while serving it (contents, kernel actions) are attributed to that person.
REQUEST: contextvars.ContextVar[tuple[Any, Any] | None] = contextvars.ContextVar("fetchml_request", default=None)

_url: str = ""
_ca: str | None = None
_credential: str = ""
_resolver: Resolver | None = None
_auditor: Auditor | None = None
_watcher: Watcher | None = None
_activity: Activity | None = None
_label = "this workspace"
_aliases: dict[str, str] = {}


def configure(environ: Any = os.environ) -> bool:
    """Read and remove the agent's settings from the environment. True when an agent is set."""
    global _url, _ca, _credential, _label, _aliases
    _url = environ.pop(URL_ENV, "") or ""
    _ca = environ.pop(CA_ENV, None)
    _aliases = parse_aliases(environ.pop(PEER_ALIASES_ENV, "") or "")
    if not _url:  # no agent: Jupyter's own token stays in force, so it stays where Jupyter reads it
        return False
    for name in CREDENTIAL_ENVS:
        value = environ.pop(name, None)
        if value and not _credential:
            _credential = value
    _label = environ.get("FETCHML_WORKSPACE") or _label
    return bool(_url)


def parse_aliases(text: str) -> dict[str, str]:
    """``"10.213.0.1=127.0.0.1,..."`` → ``{"10.213.0.1": "127.0.0.1"}`` (malformed pairs skipped)."""
    pairs = (item.split("=", 1) for item in text.split(",") if item.count("=") == 1)
    return {seen.strip(): means.strip() for seen, means in pairs if seen.strip() and means.strip()}


def peer_address(remote_ip: str) -> str:
    """The address to report for a connection from ``remote_ip`` (see :data:`PEER_ALIASES_ENV`)."""
    return _aliases.get(remote_ip, remote_ip)


def configure_credential(token: str) -> None:
    """A credential from Jupyter's config (``IdentityProvider.token``), when none came by env."""
    global _credential
    if token and not _credential:
        _credential = token


def credential() -> str:
    return _credential


def active() -> bool:
    return bool(_url and _credential)


def workspace_label() -> str:
    return _label


def learn_label(name: Any) -> None:
    """The workspace's name as the agent's answers give it: a server started before it had an
    owner (a warm pool member) has no ``FETCHML_WORKSPACE`` to read it from."""
    global _label
    if isinstance(name, str) and name and len(name) <= 63:
        _label = name


def resolver() -> Resolver:
    global _resolver
    if _resolver is None:
        from .agent import AgentClient, Resolver

        _resolver = Resolver(AgentClient(_url, _credential, _ca))
    return _resolver


def set_services(auditor: Auditor, watcher: Watcher, activity: Activity | None = None) -> None:
    global _auditor, _watcher, _activity
    _auditor, _watcher, _activity = auditor, watcher, activity


def activity() -> Activity | None:
    return _activity


def note_person(user: Any, kind: str, msg_type: str | None = None) -> None:
    """A person (not the server's own credential) did something on an open connection."""
    if _activity is None or getattr(user, "kind", "") == "server" or not getattr(user, "username", ""):
        return
    if kind == "kernel":
        _activity.note_kernel_message(user.username, msg_type)
    else:
        _activity.note(user.username, kind)


def auditor() -> Auditor | None:
    return _auditor


def note_request(handler: web.RequestHandler, user: FetchmlUser, credential: str, peer: str, forwarded: str) -> None:
    REQUEST.set((handler, user))
    if _watcher is not None:
        _watcher.track(handler, user, credential, peer, forwarded)
    if _activity is not None and getattr(user, "kind", "") != "server":
        _activity.note_request(handler, user.username)
