"""How the agent tells its own workspace server from whatever else answers on the port.

A readiness probe that takes any answer for "started" is fooled by another server on the same
port (a JupyterLab that failed to bind, a port taken between the agent's check and the bind).
The agent asks ``GET /fetchml/server-proof?nonce=N`` (no credential needed) and this server
answers :func:`server_proof` of its own credential (Jupyter's token, which the agent chose): only
the server that holds it can answer right, and the credential itself never leaves it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

__all__ = ["PROOF_PATH", "install", "server_proof"]

#: Relative to the server's base URL.
PROOF_PATH = "fetchml/server-proof"
_MAX_NONCE = 128


def server_proof(credential: str, nonce: str) -> str:
    """The proof that a server holds ``credential``, for the agent's ``nonce`` (hex HMAC-SHA256)."""
    return hmac.new(credential.encode(), b"fetchml-server-proof:" + nonce.encode(), hashlib.sha256).hexdigest()


def install(serverapp: Any, credential: str) -> None:
    """Add the proof handler to ``serverapp``'s web app (no authentication: it reveals nothing)."""
    from jupyter_server.utils import url_path_join
    from tornado import web

    class ProofHandler(web.RequestHandler):
        def get(self) -> None:
            nonce = self.get_query_argument("nonce", "")
            if not nonce or len(nonce) > _MAX_NONCE:
                raise web.HTTPError(400, f"nonce: 1 to {_MAX_NONCE} characters")
            self.set_header("Content-Type", "application/json")
            self.set_header("Cache-Control", "no-store")
            self.finish(json.dumps({"proof": server_proof(credential, nonce)}))

    base = serverapp.web_app.settings.get("base_url", "/")
    serverapp.web_app.add_handlers(".*$", [(url_path_join(base, PROOF_PATH), ProofHandler)])
