"""Linking (before Jupyter Server builds its configurables) and loading (after its web app exists)."""

from __future__ import annotations

import logging
from typing import Any

from . import state
from .agent import FetchmlUser

__all__ = ["link", "load", "start"]

log = logging.getLogger("fetchml_jupyter")


def link(serverapp: Any) -> None:
    """Take the agent's settings out of the environment and install the identity provider, the
    authorizer and the kernel connection class (Jupyter Server creates them after linking)."""
    if not state.configure():
        serverapp.log.warning(
            "fetchml_jupyter: %s is not set: no agent to ask, Jupyter's own authentication stays in force",
            state.URL_ENV)
        return
    from .authorizer import FetchmlAuthorizer
    from .identity import FetchmlIdentityProvider
    from .kernels import FetchmlKernelConnection

    serverapp.identity_provider_class = FetchmlIdentityProvider
    serverapp.authorizer_class = FetchmlAuthorizer
    # Reading the trait here would compute its default too early (it needs the gateway config):
    # replace it unless the configuration names a class of its own.
    if "kernel_websocket_connection_class" not in serverapp.config.get("ServerApp", {}):
        serverapp.kernel_websocket_connection_class = FetchmlKernelConnection
    serverapp.log.info("fetchml_jupyter: access decided by the agent at %s", state._url)


def load(serverapp: Any) -> None:
    """Start the watcher, the audit feed and the activity reports; guard live collaboration; answer
    the agent's readiness probe (:mod:`fetchml_jupyter.probe`)."""
    if not state.active():
        return
    from .activity import Activity
    from .probe import install as install_probe

    install_probe(serverapp, state.credential())
    from .audit import CONTENTS_SCHEMA, KERNEL_SCHEMA, Auditor
    from .authorizer import install_settings_guard
    from .collaboration import install_guard
    from .watcher import Watcher

    auditor = Auditor(root_dir=str(getattr(serverapp, "root_dir", "") or ""))
    watcher = Watcher()
    state.set_services(auditor, watcher, Activity(serverapp))
    logger = serverapp.event_logger
    for schema, listener in ((CONTENTS_SCHEMA, auditor.on_contents), (KERNEL_SCHEMA, auditor.on_kernel)):
        try:
            logger.add_listener(schema_id=schema, listener=listener)
        except Exception as exc:  # a Jupyter Server without that schema: that part is not audited
            serverapp.log.warning("fetchml_jupyter: cannot listen to %s: %s", schema, exc)
    settings = serverapp.web_app.settings
    original = settings.get("log_function")

    def log_function(handler: Any) -> None:
        try:
            auditor.on_request_end(handler)
        finally:
            if original is not None:
                original(handler)

    settings["log_function"] = log_function
    settings["page_config_hook"] = _page_config_hook(settings.get("page_config_hook"))
    if not install_guard():
        serverapp.log.info("fetchml_jupyter: jupyter-collaboration is not installed: nothing to guard")
    install_settings_guard()
    install_terminal_activity()


def install_terminal_activity() -> None:
    """Keystrokes into a terminal are a person at work (docs/capacity.md): jupyter_server_terminals
    has no hook for them, so its socket's ``on_message`` is wrapped, as the collaboration guard does."""
    try:
        from jupyter_server_terminals.handlers import TermSocket
    except ImportError:
        return
    if getattr(TermSocket.on_message, "_fetchml_activity", False):
        return
    original = TermSocket.on_message

    async def on_message(self: Any, message: Any) -> None:
        if isinstance(message, str) and message.startswith('["stdin"'):
            state.note_person(getattr(self, "_jupyter_current_user", None), "terminal")
        await original(self, message)

    on_message._fetchml_activity = True  # type: ignore[attr-defined]
    TermSocket.on_message = on_message  # type: ignore[method-assign]


def _page_config_hook(original: Any) -> Any:
    """JupyterLab's page, fitted to the person: a frontend told that terminals exist polls
    ``/api/terminals`` every few seconds, which answers 403 to anyone below editor (a console
    error each time); for them the page says there are none, as for a server without terminals."""

    def hook(handler: Any, page_config: dict[str, Any]) -> dict[str, Any]:
        if original is not None:
            page_config = original(handler, page_config)
        user = handler.current_user
        if isinstance(user, FetchmlUser) and not user.allows("read", "terminals"):
            page_config["terminalsAvailable"] = False
        return page_config

    return hook


async def start(serverapp: Any) -> None:
    """Once the event loop runs: the once-a-second audit flush and connection re-check."""
    if state.active() and state._auditor is not None and state._watcher is not None:
        state._auditor.start()
        state._watcher.start()
        if state._activity is not None:
            state._activity.start()
