"""What the warm pool tests share (local, zygote and docker): a pool's line in `ml status`, waiting
for ready members, and a JupyterLab request with a workspace's token."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from tests.conftest import AgentProcess


def pool_status(a: AgentProcess, name: str = "default") -> dict[str, Any]:
    """Pool ``name`` as `ml status --json` shows it."""
    pools = a.ml_json("status")["capacity"]["pools"]["pools"]
    return next(p for p in pools if p["name"] == name)  # type: ignore[no-any-return]


def wait_ready(a: AgentProcess, name: str = "default", n: int = 1, timeout: float = 240) -> dict[str, Any]:
    """Pool ``name`` once it holds ``n`` ready members (the agent's log tail when it never does)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = pool_status(a, name)
        if found["ready"] >= n:
            return found
        time.sleep(0.5)
    raise AssertionError(f"the pool never got {n} ready member(s): {pool_status(a, name)}\n"
                         + (a.root / "agent.log").read_text()[-3000:])


def get(url: str, path: str, token: str) -> tuple[int, Any]:
    """GET ``path`` on the JupyterLab of workspace URL ``url`` with ``token``: (status, JSON body)."""
    parts = urllib.parse.urlsplit(url)
    req = urllib.request.Request(f"{parts.scheme}://{parts.netloc}/{path}", headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


def token_of(url: str) -> str:
    """The token a workspace URL carries."""
    return urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["token"][0]
