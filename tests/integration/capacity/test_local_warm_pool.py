"""The local runtime's warm pool (issue #16, docs/warm-pool.md): a real agent, real JupyterLab, the real `ml`.

A create that asks for nothing special claims a started member: the workspace takes the member's
id and directory (its JupyterLab's root_dir), the owner's personal token opens it and another
person's does not; the next owner gets another member with none of the first one's files,
kernels or sessions; a profile's claim has the profile's limits; a create asking for something
else starts cold; the pool refills but never past ``limits.max_workspaces``; an agent killed
with a member waiting ends it at its next start (process, directories), keeps the claimed one.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from fetchml_agent import procs
from tests.conftest import AgentProcess
from tests.integration.jupyter import execute, put_contents
from tests.integration.pools import get, pool_status, token_of, wait_ready


def _member_dirs(a: AgentProcess) -> list[Path]:
    """The directories of the members nobody claimed yet (a claimed one's is its workspace's)."""
    return sorted(d for d in (a.data_dir / "workspaces").glob(".pool-*")
                  if (a.data_dir / "run" / d.name.removeprefix(".pool-") / "pool-member.json").exists())


def test_local_claims_serve_their_owner_and_nothing_crosses(fresh_agent: AgentProcess) -> None:
    fresh_agent.extra = {
        "package_management": {"startup_blocked_packages": "off"},
        "warm_pool": {"size": 1, "profiles": [{"name": "small", "size": 1, "cpu": 1, "memory": "512m"}]},
    }
    with fresh_agent.running() as a:
        wait_ready(a)
        one = a.ml_json("jupyter", "create", "lp-one", user="bob")
        assert one["start"]["kind"] == "claim" and one["start"]["pool"] == "default", one
        member_one = one["start"]["member"]
        # The member's id and directory are the workspace's: its root_dir is the workspace's dir.
        assert one["id"] == member_one and Path(one["path"]).name == f".pool-{member_one}"
        assert get(one["url"], "api/status", token_of(one["url"]))[0] == 200  # the owner's own token, at once
        put_contents(one["url"], "secret.txt", {"type": "file", "format": "text", "content": "bob's"})
        assert (Path(one["path"]) / "secret.txt").read_text() == "bob's"
        assert "claimed from warm pool default" in a.ml("jupyter", "info", "lp-one", user="bob").stdout
        assert execute(one["url"], "import os; print(os.getcwd(), os.environ.get('FETCHML_WORKSPACE_ID'))").split() \
            == [one["path"], member_one]

        wait_ready(a)  # refilled in the background with a new member
        two = a.ml_json("jupyter", "create", "lp-two", user="carol")
        assert two["start"]["kind"] == "claim" and two["start"]["member"] not in (member_one, "")
        assert two["path"] != one["path"] and two["url"] != one["url"]
        status, listing = get(two["url"], "api/contents", token_of(two["url"]))
        assert status == 200 and [f["name"] for f in listing["content"]] == []  # nothing of bob's
        assert get(two["url"], "api/kernels", token_of(two["url"])) == (200, [])  # nor his kernel
        assert get(two["url"], "api/sessions", token_of(two["url"])) == (200, [])
        assert get(two["url"], "api/status", token_of(one["url"]))[0] in (401, 403)  # bob's token is not carol's
        assert get(one["url"], "api/status", token_of(two["url"]))[0] in (401, 403)
        assert get(one["url"], "api/contents/secret.txt", token_of(one["url"]))[0] == 200

        # A profile's member has the profile's limits, which the create asked for: as a cold start would.
        wait_ready(a, "small")
        small = a.ml_json("jupyter", "create", "lp-small", "--cpu", "1", "--memory", "512m", user="bob")
        assert small["start"]["kind"] == "claim" and small["start"]["pool"] == "small"
        assert small["resources"]["memory"] == "512m"
        cold = a.ml_json("jupyter", "create", "lp-cold", "--cpu", "1", "--memory", "512m", "--password", "pw-lp-cold",
                         user="bob")
        assert cold["start"]["kind"] == "cold" and not Path(cold["path"]).name.startswith(".pool-")
        # The same limits a cold start gets (enforced where this host's cgroups allow it).
        for what in ("cpu", "memory"):
            assert small["limits"]["per_resource"][what] == cold["limits"]["per_resource"][what]
        assert small["limits"]["enforced"] == cold["limits"]["enforced"]
        if small["limits"]["enforced"]:  # the cgroup is the workspace's, named after its id
            assert small["limits"]["cgroup"].endswith(small["id"]) and small["id"] == small["start"]["member"]

        pool = pool_status(a)
        assert pool["claims"] == 2 and pool["size"] == 1
        assert "warm pool default: size 1" in a.ml("status").stdout

        a.ml("jupyter", "delete", "lp-one", "--yes", user="bob")
        assert not Path(one["path"]).exists()
        assert not (a.data_dir / "run" / member_one).exists() and not (a.data_dir / "envs" / member_one).exists()
        audit = [e["action"] for e in a.ml_json("jupyter", "audit", "lp-two")["events"]]
        assert "access.server_bind" in audit and "workspace.create" in audit

        # The agent stopping ends the members nobody claimed, with their directories.
        wait_ready(a)
        waiting = _member_dirs(a)
        assert waiting
    assert not _member_dirs(a) and not any(d.exists() for d in waiting)
    assert not any((fresh_agent.data_dir / "run" / d.name.removeprefix(".pool-")).exists() for d in waiting)


def test_local_pool_stays_under_quotas_and_restart_ends_waiting_members(fresh_agent: AgentProcess) -> None:
    fresh_agent.extra = {
        "package_management": {"startup_blocked_packages": "off"},
        "limits": {"max_workspaces": 3},
        "quotas": {"default": {"workspaces": 1}},
        "warm_pool": {"size": 2},
    }
    with fresh_agent.running() as a:
        wait_ready(a, n=2)
        keep = a.ml_json("jupyter", "create", "lp-keep", user="bob")
        assert keep["start"]["kind"] == "claim"
        put_contents(keep["url"], "notes.txt", {"type": "file", "format": "text", "content": "kept"})
        ready = pool_status(a)["ready"]
        # A quota refuses a claim as it refuses a cold start (exit 8), and the member stays waiting.
        refused = a.ml("jupyter", "create", "lp-over", user="bob", check=False)
        assert refused.returncode == 8 and "quotas.default.workspaces" in refused.stderr, refused
        assert pool_status(a)["ready"] >= ready and pool_status(a)["claims"] == 1
        a.ml_json("jupyter", "create", "lp-next", user="carol")
        time.sleep(3)  # the refill had its chance: 2 workspaces + members stay within 3
        pool = pool_status(a)
        assert pool["ready"] + pool["preparing"] <= 1, pool
        wait_ready(a, n=1)
        (member_dir,) = _member_dirs(a)
        member_id = member_dir.name.removeprefix(".pool-")
        member_pid = next(pid for pid, env in procs.tree_roots_with_env(
            "FETCHML_SERVER_RUN_DIR", str(a.data_dir / "run" / member_id)))
        started = procs.start_time(member_pid)

        a.kill9()  # the member's credential dies with the agent: the next one must end it
        assert procs.alive(member_pid, started)
        a.start()
        deadline = time.monotonic() + 60
        while procs.alive(member_pid, started) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not procs.alive(member_pid, started)
        assert not member_dir.exists() and not (a.data_dir / "run" / member_id).exists()
        after = a.ml_json("jupyter", "info", "lp-keep", user="bob")
        assert after["status"] == "running" and after["id"] == keep["id"]
        assert get(after["url"], "api/contents/notes.txt", token_of(after["url"]))[0] == 200

        # A claimed workspace stops and starts like any other (its directory stays its own).
        a.ml("jupyter", "stop", "lp-keep", user="bob")
        a.ml("jupyter", "start", "--name", "lp-keep", user="bob")
        again = a.ml_json("jupyter", "info", "lp-keep", user="bob")
        assert again["status"] == "running" and again["path"] == keep["path"]
        assert get(again["url"], "api/contents/notes.txt", token_of(again["url"]))[0] == 200
    assert os.path.isdir(keep["path"])


NVIDIA_SMI = Path(__file__).parents[2] / "ansible" / "fixtures" / "nvidia_smi" / "a100_sxm4_80gb_x2.csv"


def test_local_gpu_profiles_hold_a_gpu_only_when_they_say_so(fresh_agent: AgentProcess, tmp_path: Path) -> None:
    """Two A100s (nvidia-smi's recorded inventory, transcribed: tests/ansible/fixtures/nvidia_smi;
    no GPU here). A GPU profile without ``hold_gpu`` is not kept (a local server's GPUs are fixed
    when it starts) and holds nothing; one with it holds one GPU from its start, and the
    workspace that claims it gets that GPU."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "nvidia-smi"
    fake.write_text(f"#!/bin/sh\ncase \"$1\" in --query-gpu=*) cat {NVIDIA_SMI} ;; esac\n")
    fake.chmod(0o755)
    fresh_agent.extra = {
        "package_management": {"startup_blocked_packages": "off"},
        "warm_pool": {"profiles": [{"name": "gpu-cold", "size": 1, "gpu": 1},
                                   {"name": "gpu-held", "size": 1, "cpu": 1, "gpu": 1, "hold_gpu": True}]},
    }
    with fresh_agent.running(env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}) as a:
        held = wait_ready(a, "gpu-held")
        cold_pool = pool_status(a, "gpu-cold")
        assert cold_pool["ready"] == 0 and "hold_gpu" in (cold_pool["blocked"] or ""), cold_pool
        (member_dir,) = _member_dirs(a)
        member_id = member_dir.name.removeprefix(".pool-")
        ((_pid, env),) = procs.tree_roots_with_env("FETCHML_SERVER_RUN_DIR", str(a.data_dir / "run" / member_id))
        member_gpu = env["CUDA_VISIBLE_DEVICES"]
        assert member_gpu in ("0", "1")

        # The member's GPU is taken: a cold GPU workspace gets the other one, a second finds none.
        other = a.ml_json("jupyter", "create", "lp-gpu-other", "--gpu", "1", "--cpu", "2", user="bob")
        assert other["start"]["kind"] == "cold"
        assert execute(other["url"], "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])").strip() \
            == str(1 - int(member_gpu))
        refused = a.ml("jupyter", "create", "lp-gpu-none", "--gpu", "1", "--cpu", "2", user="carol", check=False)
        assert refused.returncode != 0

        claimed = a.ml_json("jupyter", "create", "lp-gpu", "--gpu", "1", "--cpu", "1", user="carol")
        assert claimed["start"]["kind"] == "claim" and claimed["start"]["pool"] == "gpu-held", held
        assert execute(claimed["url"], "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])").strip() == member_gpu
        a.ml("jupyter", "delete", "lp-gpu-other", "--yes", user="bob")
        a.ml("jupyter", "delete", "lp-gpu", "--yes", user="carol")
