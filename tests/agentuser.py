"""The agent as an OS user of the test's own, with or without the capabilities to switch users.

What the fetchml_agent role's unit does with ``User=fetchml`` and ``AmbientCapabilities=``, done
with util-linux's ``setpriv``: the agent runs as a fresh system user (not root) that holds exactly
the capabilities named (:mod:`fetchml_agent.privilege`), in its bounding set too. The user is
removed afterwards. Needs root (the test suite's CI runs as root).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
from collections.abc import Iterator

from fetchml_agent.privilege import FIREWALL, SWITCH_USERS

__all__ = ["FIREWALL", "SWITCH_USERS", "agent_os_user", "hand_over", "setpriv"]


def setpriv(user: str | None, caps: tuple[str, ...]) -> list[str]:
    """argv prefix: become ``user`` (its group, no others; None: stay who we are) holding
    ``caps`` and nothing else."""
    names = ",".join("+" + c.removeprefix("CAP_").lower() for c in caps)
    argv = [shutil.which("setpriv") or "setpriv"]
    if user is not None:
        argv += [f"--reuid={user}", f"--regid={user}", "--clear-groups"]
    if caps:
        argv += [f"--inh-caps=-all,{names}", f"--ambient-caps=-all,{names}", f"--bounding-set=-all,{names}"]
    else:
        argv += ["--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all"]
    return [*argv, "--"]


@contextlib.contextmanager
def agent_os_user() -> Iterator[str]:
    """A system user of this test's own for the agent (as the role's ``fetchml``), then removed."""
    name = f"ftagent{os.getpid() % 100000}{random.randint(10, 99)}"
    subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                   check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], capture_output=True, check=False)
        subprocess.run(["groupdel", name], capture_output=True, check=False)


def hand_over(path: os.PathLike[str], user: str) -> None:
    """``chown -R user:user path`` (the agent's root, as the role installs it)."""
    subprocess.run(["chown", "-R", f"{user}:{user}", os.fspath(path)], check=True)
