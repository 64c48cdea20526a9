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
        except Exception as exc:  # an extension that cannot import fails the same way at the claim
            print(f"zygote: preloading {name} failed: {exc!r}", file=sys.stderr)


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
    preload = [n for a in args if a.startswith("--preload=") for n in a.split("=", 1)[1].split(",") if n]
    _preload(preload)
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
