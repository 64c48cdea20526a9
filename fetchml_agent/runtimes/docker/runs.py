"""Experiment runs on the docker runtime: one container each, on the workspace's network."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.types
import requests.exceptions

from ...aio import run_blocking
from ...allocators import run_holder
from ...errors import (
    InsufficientResources,
    InvalidState,
    NotFound,
)
from ...nomad.render import ENV_CACHE_MOUNT, RUN_LAUNCHER, run_task
from ..base import (
    Progress,
    RunSpec,
    RunStatus,
    State,
)
from .common import (
    _GPUS,
    _INSTANCE,
    _NONROOT_USER,
    _OWNER,
    _RUN_ALLOC_DIR,
    _RUN_ID,
    _RUN_SNAPSHOT,
    _RUN_TASK_DIR,
    _WS_NAME,
    DockerBase,
    _docker_errors,
    rewrite_loopback_urls,
)


class RunsMixin(DockerBase):
    """The docker runtime's run backend (see :meth:`submit_run`)."""

    rebuilds_environment = True  # runs start from the image: the launcher installs the workspace's lock

    def run_job_id(self, run_id: str) -> str:
        """The name of a run's container (known before it is created)."""
        return f"{self.prefix}-run-{run_id}"

    def run_snapshot_location(self, experiments_root: Path) -> tuple[str, str, Path]:
        """Runs read their snapshot from the agent's own experiments directory (bind-mounted)."""
        return str(experiments_root), "bind", experiments_root

    async def submit_run(self, spec: RunSpec, progress: Progress | None = None) -> State:
        """Start an experiment run in a container of its own and return its state.

        The container: the workspace's image (the allowed-images check applies), on the
        workspace's network (so the firewall lets it reach the package index and nothing
        else), non-root, every capability dropped, the workspace's CPU and memory as limits, the
        run's GPUs by device request (free ones now, else :class:`InsufficientResources`),
        ``on-failure`` restarts for ``retries``. The run's snapshot is bind-mounted read-only;
        the task and alloc directories (parameters, results) are host directories next to it.
        """
        task = run_task(spec)
        ref = spec.image or self.image
        image = await run_blocking(self._image, ref)
        self._check_image_allowed(ref, image)
        name = self.run_job_id(spec.run_id)
        ws_spec = spec.workspace_spec
        _, net_name, _ = self._names(spec.workspace, ws_spec.backing if ws_spec is not None else "")
        root = Path(spec.snapshot_volume or "")
        host_dir = root / ".docker-runs" / spec.run_id
        user = (image.attrs.get("Config") or {}).get("User") or ""
        if user.split(":")[0] in ("", "root", "0"):
            user = _NONROOT_USER
        await run_blocking(_prepare_run_dirs, host_dir, task.parameters_json, user)
        # issue #18: the workspace's installed packages, kept by lock hash for the next run of this
        # workspace (its own directory: another workspace's run cannot change what this one imports)
        env_cache = root / ".env-cache" / spec.workspace
        await run_blocking(_prepare_env_cache, env_cache, user)
        env = {k: v.replace("${NOMAD_ALLOC_DIR}", _RUN_ALLOC_DIR).replace("${NOMAD_TASK_DIR}", _RUN_TASK_DIR)
               for k, v in task.env.items()}
        env.update(NOMAD_ALLOC_DIR=_RUN_ALLOC_DIR, NOMAD_TASK_DIR=_RUN_TASK_DIR, FETCHML_ENV_CACHE=ENV_CACHE_MOUNT)
        if self.index is not None:
            env = rewrite_loopback_urls(env, self.index[1], self.index[0])
            env.setdefault("PIP_TRUSTED_HOST", self.index[0])
        command = [a.replace("${NOMAD_ALLOC_DIR}", _RUN_ALLOC_DIR).replace("${NOMAD_TASK_DIR}", _RUN_TASK_DIR)
                   for a in task.command]
        res = spec.resources
        kwargs: dict[str, Any] = {
            "image": image.id,
            "name": name,
            "command": ["/bin/sh", "-c", RUN_LAUNCHER, "fetchml-run", _RUN_SNAPSHOT, *command],
            "entrypoint": [],
            "user": user,
            "environment": env,
            "labels": {_INSTANCE: self.prefix, _RUN_ID: spec.run_id, _WS_NAME: spec.workspace, _OWNER: spec.owner},
            "network": net_name,
            "volumes": {
                str(root / spec.snapshot_path): {"bind": _RUN_SNAPSHOT, "mode": "ro"},
                str(host_dir / "task"): {"bind": _RUN_TASK_DIR, "mode": "rw"},
                str(host_dir / "alloc"): {"bind": _RUN_ALLOC_DIR, "mode": "rw"},
                str(env_cache): {"bind": ENV_CACHE_MOUNT, "mode": "rw"},
                **self.data_volumes("ro"),
            },
            "working_dir": _RUN_TASK_DIR,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges:true"],
            "init": True,
            "detach": True,
            "pids_limit": self.pids_limit,
            "restart_policy": {"Name": "on-failure", "MaximumRetryCount": spec.retries} if spec.retries else None,
        }
        if res.cpu:
            kwargs["nano_cpus"] = int(res.cpu * 1e9)
        if res.memory_mb:
            kwargs["mem_limit"] = f"{res.memory_mb}m"
            kwargs["memswap_limit"] = f"{res.memory_mb}m"
        async with self._lock:
            if res.gpu:
                # The agent's worker pool claims a run's GPUs (a run may use its own workspace's);
                # without an assignment, take free ones from the same allocator.
                try:
                    if spec.gpu_ids:
                        ids = self.gpus.hold(run_holder(spec.run_id), spec.gpu_ids[: res.gpu], what=f"run {spec.run_id}")
                        if len(ids) < res.gpu:
                            raise InsufficientResources(
                                f"run {spec.run_id} asks for {res.gpu} GPU(s) but was assigned {list(ids)}")
                    else:
                        ids = self.gpus.claim(run_holder(spec.run_id), res.gpu,
                                              hint="wait for a GPU to free, or queue it with resources.gpu: 0")
                except InsufficientResources:
                    await run_blocking(shutil.rmtree, host_dir, True)
                    raise
                kwargs["labels"][_GPUS] = ",".join(map(str, ids))
                kwargs["device_requests"] = [
                    docker.types.DeviceRequest(device_ids=[str(g) for g in ids], capabilities=[["gpu"]])
                ]

            def create() -> Any:
                with _docker_errors(f"starting run container {name}"):
                    try:
                        self.client.networks.get(net_name)
                    except docker.errors.NotFound:
                        raise InvalidState(f"workspace {spec.workspace} has no network: is it running?",
                                           f"start it: ml jupyter start {spec.workspace}") from None
                    if not kwargs["restart_policy"]:
                        del kwargs["restart_policy"]
                    return self.client.containers.run(**kwargs)

            try:
                container = await run_blocking(create)
            except BaseException:
                await run_blocking(shutil.rmtree, host_dir, True)
                raise
        if progress is not None:
            await progress("running")
        return {"job_id": name, "container_id": container.id, "run_id": spec.run_id, "host_dir": str(host_dir),
                "submitted_at": time.time(), "timeout": float(spec.timeout), "waiting": ""}

    def _run_container(self, state: State) -> Any:
        with _docker_errors("looking up a run container"):
            try:
                return self.client.containers.get(state.get("container_id") or state["job_id"])
            except docker.errors.NotFound:
                return None

    async def run_status(self, state: State) -> RunStatus:
        """``running`` (also while restarting for a retry), ``succeeded``, ``failed`` (exit code and
        the last line it printed), ``timed_out`` (stopped here once past its timeout),
        ``missing`` (the container is gone)."""
        container = await run_blocking(self._run_container, state)
        if container is None:
            return RunStatus("missing", f"the run's container {state['job_id']} is gone")
        st = container.attrs.get("State") or {}
        if container.status in ("exited", "dead"):
            code = int(st.get("ExitCode") or 0)
            if code == 0:
                return RunStatus("succeeded", "", container.id, 0)
            logs = (await run_blocking(container.logs, tail=5)).decode(errors="replace").strip().splitlines()
            last = next((line for line in reversed(logs) if line.strip()), "")
            return RunStatus("failed", f"exited with code {code}" + (f": {last}" if last else ""), container.id, code)
        if time.time() - float(state.get("submitted_at") or 0) > float(state.get("timeout") or 1e12):
            await self.cancel_run(state)
            return RunStatus("timed_out", f"the run exceeded its timeout of {state.get('timeout'):g} s", container.id)
        return RunStatus("running", "", container.id)

    async def wait_run(self, state: State, index: int, wait: float) -> int:
        """Block until the run's container stops (or ``wait`` seconds pass)."""
        container = await run_blocking(self._run_container, state)
        if container is None or not index:
            return index + 1

        def block() -> None:
            with contextlib.suppress(requests.exceptions.RequestException, docker.errors.DockerException):
                container.wait(timeout=wait)

        await run_blocking(block)
        return index + 1

    async def fetch_run_outputs(self, state: State, dest: Path) -> list[str]:
        """Copy the results (the alloc dir's ``data/``) into ``dest``; return the paths written."""
        src = Path(state["host_dir"]) / "alloc" / "data"
        if not src.is_dir():
            raise NotFound(f"run {state.get('run_id')} left no results ({src} is gone)")
        return await run_blocking(_copy_tree, src, Path(dest))

    async def cancel_run(self, state: State, grace: float = 5.0) -> None:
        """Stop the run's container (SIGTERM, SIGKILL after 30 s: a container's own grace); its
        results stay until purged."""
        container = await run_blocking(self._run_container, state)
        if container is not None:
            with _docker_errors(f"stopping run container {container.name}"):
                with contextlib.suppress(docker.errors.NotFound):
                    await run_blocking(lambda: container.stop(timeout=30))

    async def purge_run(self, state: State) -> None:
        """Remove the run's container and its task and alloc directories."""
        container = await run_blocking(self._run_container, state)
        if container is not None:
            await run_blocking(self._remove_container, container)
        await run_blocking(shutil.rmtree, state["host_dir"], True)
        self.gpus.release(run_holder(state.get("run_id") or ""))




def _prepare_run_dirs(host_dir: Path, parameters_json: str, user: str) -> None:
    """The run's task dir (with parameters.json) and alloc/data, owned by the container's user."""
    (host_dir / "alloc" / "data").mkdir(parents=True, exist_ok=True)
    (host_dir / "task").mkdir(parents=True, exist_ok=True)
    (host_dir / "task" / "parameters.json").write_text(parameters_json)
    uid, _, gid = user.partition(":")
    for path in (host_dir / "task", host_dir / "alloc", host_dir / "alloc" / "data", host_dir / "task" / "parameters.json"):
        try:
            os.chown(path, int(uid), int(gid or uid))
        except (ValueError, PermissionError):  # a named user, or an agent not running as root
            os.chmod(path, 0o777 if path.is_dir() else 0o644)


def _prepare_env_cache(path: Path, user: str) -> None:
    """The workspace's environment cache directory, writable by the run's user."""
    path.mkdir(parents=True, exist_ok=True)
    uid, _, gid = user.partition(":")
    try:
        os.chown(path, int(uid), int(gid or uid))
    except (ValueError, PermissionError):
        os.chmod(path, 0o777)


def _copy_tree(src: Path, dest: Path) -> list[str]:
    written = []
    for dirpath, _dirs, files in os.walk(src):
        for name in files:
            path = Path(dirpath, name)
            if path.is_symlink():
                continue
            rel = path.relative_to(src)
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest / rel)
            written.append(rel.as_posix())
    return sorted(written)
