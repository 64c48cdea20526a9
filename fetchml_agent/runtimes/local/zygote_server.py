"""A local warm pool member under ``local.isolation: users`` (docs/warm-pool.md): a zygote.

Run as a script (``<server python> zygote_server.py --port=N --preload=a,b``) by the agent, as
root, with no secret in its environment and no socket: it imports JupyterLab, Jupyter Server
and the server extensions, says ``ready`` on stdout and waits for one line on stdin. The line
(the claim, written by :mod:`fetchml_agent.runtimes.local.zygote`) names the owner's uid and gid,
the server's environment (its credential among it), working directory and arguments: the
process drops every group, sets gid and uid (and checks it cannot get root back), sets its
umask, replaces its environment, reseeds its random state and runs JupyterLab's ``main`` in
itself, so the workspace's server is this process (the agent's child, its pid, cgroup and
``/proc/<pid>/environ`` as it was started). End of input instead of a line (the agent is gone,
or discards the member): it exits having served no one.

Standard library and JupyterLab only: this file runs under the server environment's Python,
not the agent's.
"""

from __future__ import annotations

import importlib
import json
import os
import random
import sys


def _preload(names: list[str]) -> None:
    import jupyter_server.serverapp  # noqa: F401
    import jupyterlab.labapp  # noqa: F401

    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # one that cannot import now fails the same way at the claim
            continue


def _modules_of_a_start(extensions: list[str]) -> list[str]:
    """The modules a server's initialisation imports past :func:`_preload` (extension handlers,
    templates, clients): a forked child initialises a throw-away server in a temporary directory
    (no HTTP server, so no socket) and names them; this process imports them and keeps nothing
    else of it."""
    import tempfile

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(read_end)
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            tmp = tempfile.mkdtemp(prefix="fml-zygote-")
            os.environ.update(HOME=tmp, JUPYTER_CONFIG_DIR=f"{tmp}/config", JUPYTER_DATA_DIR=f"{tmp}/data",
                              JUPYTER_RUNTIME_DIR=f"{tmp}/runtime")
            before = set(sys.modules)
            from jupyter_server.serverapp import ServerApp

            enabled = {name: True for name in ["jupyterlab", *extensions]}
            app = ServerApp.instance()
            try:
                app.initialize(argv=["--no-browser", "--allow-root", "--ip=127.0.0.1", f"--ServerApp.root_dir={tmp}",
                                     f"--ServerApp.jpserver_extensions={enabled!r}",
                                     f"--BaseFileIdManager.db_path={tmp}/file_id.db"], new_httpserver=False)
            finally:
                with os.fdopen(write_end, "w") as fh:
                    fh.write("\n".join(sorted(set(sys.modules) - before)))
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as fh:
        names = fh.read().split()
    os.waitpid(pid, 0)
    return names


def _file_ids(db_path: str) -> None:
    """Create the server's (empty) file-id database ahead: its tables cost a few synced writes."""
    from jupyter_server_fileid.manager import ArbitraryFileIdManager

    ArbitraryFileIdManager(db_path=db_path, root_dir="/").con.close()


def _become(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if uid != 0:
        try:
            os.setuid(0)
        except PermissionError:
            pass
        else:
            raise SystemExit("zygote: could get root back after dropping it")
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid) or os.getgroups():
        raise SystemExit("zygote: dropping to the owner's uid/gid failed")


def main(args: list[str]) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]  # not this package's modules
    # Prepared in the background at low priority: a claimed server's start (boosted above the
    # agent's priority before it drops root, for its start-up only) goes first on a busy host.
    priority = os.getpriority(os.PRIO_PROCESS, 0)
    os.setpriority(os.PRIO_PROCESS, 0, min(19, priority + 10))
    preload = [n for a in args if a.startswith("--preload=") for n in a.split("=", 1)[1].split(",") if n]
    _preload(preload)
    _preload(_modules_of_a_start(preload))
    for a in args:
        if a.startswith("--file-ids="):
            try:
                _file_ids(a.split("=", 1)[1])
            except Exception as exc:  # the server then creates it itself
                print(f"zygote: file-id database not made ahead: {exc!r}", file=sys.stderr)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    line = sys.stdin.readline()
    if not line.strip():
        return 0
    req = json.loads(line)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)  # stdout was the agent's pipe: from here on, the server's log like stderr
    import time

    print(f"[I {time.strftime('%Y-%m-%d %H:%M:%S')}.{int(time.time() * 1000) % 1000:03d} zygote] claimed: "
          f"becoming uid {req['uid']}", file=sys.stderr, flush=True)
    # The claimed server's start-up runs ahead of the host's other work (root may raise it; the
    # agent puts every thread back to ``priority`` once the server answers).
    os.setpriority(os.PRIO_PROCESS, 0, max(-20, priority + int(req.get("boost", 0))))
    _become(int(req["uid"]), int(req["gid"]))
    os.umask(int(req.get("umask", 0o077)))
    os.environ.clear()
    os.environ.update(req["env"])
    os.chdir(req["cwd"])
    random.seed()
    sys.argv = ["jupyter-lab", *req["argv"]]
    from jupyterlab.labapp import main as lab_main

    lab_main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
