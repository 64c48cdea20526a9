"""The local runtime's warm pool (docs/warm-pool.md): started JupyterLab servers a create claims.

A member is a local workspace start like any other (:meth:`LocalRuntime.start`: its venv, run
directory, cgroup limits, port, server credential), under a workspace id nobody has yet
(``ws-<hex>``) and a directory of its own (``<managed root>/.pool-<id>``, its JupyterLab's
``root_dir``), with no owner and no workspace name in its environment. Its run directory holds a
marker (:data:`MARKER`, with the member's directory) until it is claimed: :meth:`discover` leaves
marked servers out (they are nobody's workspace), :meth:`list_members` finds them after an agent
restart, and the pools end them (their credentials died with the agent).

The claim does not start or move anything: the claiming workspace *takes the member's id and
directory* (:attr:`~fetchml_agent.runtimes.base.WarmPool.members_are_workspaces`), so the run
directory, venv, cgroup, port and root_dir the server was started with are the workspace's own,
exactly as a cold start under that id would have made them; the marker goes, and the agent binds
the server's credential to the workspace (the access layer's ``bind_server``).

With ``local.isolation: users`` the owner, and so the OS user a server must run as, is known only
at the claim, and a started server cannot become another uid: a member is then a zygote
(:mod:`.zygote`), a pre-imported JupyterLab process under the member's id that becomes the
owner's server at the claim.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, cast

import httpx

from fetchml_jupyter.probe import PROOF_PATH, server_proof

from ...aio import run_blocking
from ...allocators import workspace_holder
from ...errors import BackendError
from ..base import PoolMember, Progress, Started, State, WarmPool, WorkspaceSpec
from .zygote import Zygotes, close_pipes

if TYPE_CHECKING:
    from .runtime import LocalRuntime

__all__ = ["MARKER", "LocalWarmPool"]

#: In a member's run directory until its claim: ``{"path": "<its directory>"}``.
MARKER = "pool-member.json"
_DIR_PREFIX = ".pool-"


class LocalWarmPool(WarmPool):
    """The :class:`WarmPool` part of :class:`LocalRuntime`; see the module docstring."""

    members_are_workspaces = True
    _claim_http: httpx.AsyncClient | None = None
    _zygote_part: Zygotes | None = None

    def _rt(self) -> LocalRuntime:
        return cast("LocalRuntime", self)

    def pool_unavailable(self) -> str:
        if self._rt().users is not None and os.geteuid() != 0:
            return ("local.isolation: users keeps warm pools of zygotes, which drop from root to the owner's uid at "
                    "the claim: this agent is not root (docs/warm-pool.md)")
        return ""

    def _zygotes(self) -> Zygotes | None:
        """The zygote members' part under ``local.isolation: users`` (``None`` without it)."""
        rt = self._rt()
        if rt.users is None:
            return None
        if self._zygote_part is None:
            self._zygote_part = Zygotes(rt)
        return self._zygote_part

    def is_member(self, workspace_id: str) -> bool:
        """Whether ``workspace_id`` names an unclaimed member (its run directory is marked)."""
        return (self._rt().server_run_dir(workspace_id) / MARKER).is_file()

    def _mark(self, spec: WorkspaceSpec) -> None:
        run_dir = self._rt().server_run_dir(spec.id)
        run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        (run_dir / MARKER).write_text(json.dumps({"path": str(spec.path)}))

    async def prepare_member(self, spec: WorkspaceSpec, progress: Progress) -> Started:
        rt = self._rt()
        if not spec.path.name.startswith(_DIR_PREFIX):
            raise BackendError(f"a local warm pool member's directory must be named {_DIR_PREFIX}<id>: {spec.path}")
        # Marked before the server exists: an agent killed during the start leaves a member the
        # next one ends, never a server nobody knows.
        await run_blocking(self._mark, spec)
        if self._claim_http is None:  # made here, off the claim's path (a client costs tens of ms)
            self._claim_http = httpx.AsyncClient(timeout=5.0, trust_env=False)
        zygotes = self._zygotes()
        try:
            started = await (zygotes.prepare(spec) if zygotes is not None else rt.start(spec, progress))
        except BaseException:
            await self._remove_member(spec.id, None, spec.path)
            raise
        marker = rt.server_run_dir(spec.id) / MARKER
        await run_blocking(marker.write_text, json.dumps({"path": str(spec.path), "limits": started.limits}))
        return started

    async def claim_member(self, member: PoolMember, spec: WorkspaceSpec) -> Started:
        rt = self._rt()
        if spec.id != member.id or spec.path != member.spec.path:
            raise BackendError(f"warm pool member {member.id} can only become the workspace of its own id and directory")
        if (await rt.poll(member.state)).state != "running":
            raise BackendError(f"warm pool member {member.id} is not running")
        marker = rt.server_run_dir(member.id) / MARKER
        zygotes = self._zygotes()
        if zygotes is not None:  # the zygote becomes the owner's server; proven like a cold start's
            state = await zygotes.claim(member.state, spec)
            limits = self._member_limits(member.id)
            marker.unlink()
            return Started(state=state, url=member.url, limits=limits)
        # Its server answers and holds the credential the workspace takes over (the proof of a
        # start: fetchml_jupyter.probe, answered by the server itself, without asking the agent).
        nonce = secrets.token_hex(16)
        if self._claim_http is None:
            self._claim_http = httpx.AsyncClient(timeout=5.0, trust_env=False)
        http = self._claim_http
        try:
            r = await http.get(member.url + PROOF_PATH, params={"nonce": nonce})
            proof = str(r.json().get("proof", "")) if r.status_code == 200 else ""
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            raise BackendError(f"warm pool member {member.id} does not answer", str(exc)) from exc
        if not hmac.compare_digest(proof, server_proof(spec.token, nonce)):
            raise BackendError(f"warm pool member {member.id} answered {r.status_code} without the proof of its credential")
        limits = self._member_limits(member.id)
        marker.unlink()
        return Started(state=dict(member.state), url=member.url, limits=limits)

    def _member_limits(self, member_id: str) -> dict[str, object]:
        try:
            return json.loads((self._rt().server_run_dir(member_id) / MARKER).read_text()).get("limits") or {}
        except (OSError, ValueError) as exc:
            raise BackendError(f"warm pool member {member_id} has lost its marker", str(exc)) from exc

    async def close_pool_client(self) -> None:
        if self._claim_http is not None:
            await self._claim_http.aclose()
            self._claim_http = None

    async def discard_member(self, member_id: str, state: State | None) -> None:
        await self._remove_member(member_id, state, None)

    async def _remove_member(self, member_id: str, state: State | None, path: Path | None) -> None:
        rt = self._rt()
        if path is None:
            try:
                path = Path(json.loads((rt.server_run_dir(member_id) / MARKER).read_text())["path"])
            except (OSError, ValueError, KeyError):
                path = None
        if state and state.get("pid"):
            close_pipes(rt, state)
            await rt.stop(state, grace=2.0)
        spec = WorkspaceSpec(id=member_id, name=member_id, owner="", path=path or Path("/nonexistent"), token="")
        await rt.remove(spec, state)
        if path is not None and path.name.startswith(_DIR_PREFIX):
            await run_blocking(shutil.rmtree, path, True)
        rt.ports.release(workspace_holder(member_id))

    async def list_members(self) -> dict[str, State]:
        rt = self._rt()
        running = {wid: state for wid, state in await rt.discover_all()}
        found: dict[str, State] = {}
        for marker in sorted(await run_blocking(lambda: list((rt._ws_root / "run").glob(f"*/{MARKER}")))):
            member_id = marker.parent.name
            found[member_id] = running.get(member_id, {})
        return found
