"""The local runtime's warm pool below the agent (docs/warm-pool.md): when it keeps one, and how
an unclaimed member is told from a workspace (its run directory's marker)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from fetchml_agent.errors import BackendError
from fetchml_agent.runtimes.base import WarmPool, WorkspaceSpec, find_capability
from fetchml_agent.runtimes.local import LocalRuntime
from fetchml_agent.runtimes.local.pool import MARKER
from fetchml_agent.runtimes.local.users import WorkspaceUsers


def test_pool_kept_with_and_without_users(tmp_path: Path) -> None:
    rt = LocalRuntime(tmp_path / "data", use_cgroups=False)
    backend = find_capability(rt, WarmPool)
    assert backend is rt and rt.members_are_workspaces and not rt.gpus_at_claim
    assert rt.pool_unavailable() == "" and rt._zygotes() is None
    users = WorkspaceUsers(tmp_path / "shared", python="/usr/bin/python3", uid_range=(70000, 70999), prefix="fml-")
    isolated = LocalRuntime(tmp_path / "data2", use_cgroups=False, users=users)
    # Members are zygotes there (docs/warm-pool.md), one part per runtime.
    assert isolated._zygotes() is isolated._zygotes() is not None
    if os.geteuid() == 0:
        assert isolated.pool_unavailable() == ""
    else:  # a zygote drops from root to the owner's uid
        assert "not root" in isolated.pool_unavailable()


def test_members_are_marked_listed_and_removed(tmp_path: Path) -> None:
    rt = LocalRuntime(tmp_path / "data", use_cgroups=False)
    member_dir = tmp_path / "data" / "workspaces" / ".pool-ws-0123456789ab"
    member_dir.mkdir(parents=True)
    (member_dir / "left.txt").write_text("x")
    spec = WorkspaceSpec(id="ws-0123456789ab", name="ws-0123456789ab", owner="", path=member_dir, token="t",
                         backing="ws-0123456789ab")
    rt._mark(spec)
    assert rt.is_member(spec.id) and not rt.is_member("ws-other")
    assert asyncio.run(rt.list_members()) == {spec.id: {}}  # marked, no server: ended after a restart
    asyncio.run(rt.discard_member(spec.id, {}))
    assert not member_dir.exists() and not (rt.server_run_dir(spec.id) / MARKER).exists()
    assert asyncio.run(rt.list_members()) == {}


def test_a_member_directory_must_be_a_pool_directory(tmp_path: Path) -> None:
    rt = LocalRuntime(tmp_path / "data", use_cgroups=False)
    spec = WorkspaceSpec(id="ws-0123456789ab", name="x", owner="", path=tmp_path / "home-of-someone", token="t",
                         backing="ws-0123456789ab")

    async def progress(line: str) -> None:
        pass

    with pytest.raises(BackendError, match=r"\.pool-"):
        asyncio.run(rt.prepare_member(spec, progress))
    assert not rt.is_member(spec.id)
