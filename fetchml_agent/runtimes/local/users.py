"""Workspace users of the local runtime (``local.isolation: users``).

With ``users``, every workspace runs as an unprivileged OS user of its owner's own, never root and
never the agent's user: ``<user_prefix><owner>`` (``fml-alice``), a system user and group created
on demand with the lowest free uid of ``local.uid_range`` (the same uid for the group), no login
shell, HOME ``<workspaces_dir>/home/<user>``. One user per owner, as JupyterHub's
LocalProcessSpawner maps a Hub user to a system user; the uid range keeps them apart from people's
accounts the way systemd's DynamicUser range does. Users are kept when workspaces go (their files
may outlive them); ``userdel`` removes one whose owner left.

What a workspace user may read lies under ``local.workspaces_dir`` (outside the agent's 0700
data_dir): ``home/<user>`` and, per workspace, ``envs/<id>`` (its venv and pip configuration) and
``run/<id>`` (JupyterLab's configuration and runtime files), each 0700 and owned by the
workspace's user; the directories above them are 0711 (traversable, not listable). The agent's
database, keys, logs and agent.yaml stay root's. The interpreter workspaces run
(``local.python``) must be reachable by an unprivileged user: checked at start.

Switching users needs root or the capabilities of :data:`fetchml_agent.privilege.SWITCH_USERS`
(read from the process's effective set, not from its uid; the Ansible role grants them to the
``fetchml`` user's unit), and ``CAP_NET_ADMIN`` for the firewall. ``local.isolation`` unset means
``users`` on such an agent; ``users`` set on an agent without them is refused at start with a
message naming ``local.isolation``.

Creating a user (``useradd``) writes /etc/passwd, /etc/group and /etc/shadow: an agent running as
root does it on a first create. The role's agent is not root and its unit sees /etc read-only, so
the role creates the users of ``fetchml_agent_workspace_owners`` itself (same name, uid range,
HOME and shell); a create for an owner without one is refused naming that variable.
"""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from ...errors import BackendError
from ...privilege import SWITCH_USERS, missing, prepare
from ...settings import ConfigError

__all__ = ["OsUser", "WorkspaceUsers", "chown_tree", "default_python", "require"]

_MAX_NAME = 32  # useradd's limit on Linux


@dataclass(frozen=True)
class OsUser:
    name: str
    uid: int
    gid: int
    home: Path


def chown_tree(path: Path, uid: int, gid: int) -> None:
    """``chown -R`` without following links."""
    os.chown(path, uid, gid, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in (*dirnames, *filenames):
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


def _reachable_by_others(path: Path, *, execute: bool) -> str | None:
    """Why an unprivileged user cannot reach ``path`` (None when it can)."""
    path = Path(os.path.abspath(path))
    for parent in reversed(path.parents):
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            return f"{parent} is mode {stat.S_IMODE(mode):04o} (others may not enter it)"
    target = path.resolve()
    if target != path:
        return _reachable_by_others(target, execute=execute)
    mode = target.stat().st_mode
    if stat.S_ISDIR(mode):
        need = stat.S_IXOTH
    else:
        need = stat.S_IROTH | (stat.S_IXOTH if execute else 0)
    if mode & need != need:
        return f"{target} is mode {stat.S_IMODE(mode):04o}"
    return None


def require(needs: tuple[str, ...]) -> None:
    """ConfigError naming ``local.isolation`` unless this process holds ``needs``."""
    gone = missing(needs)
    if gone:
        raise ConfigError(
            "local.isolation: users needs an agent that may switch users (it runs as uid "
            f"{os.geteuid()} without {', '.join(gone)})",
            "run the agent as root or with the capabilities the fetchml_agent role grants "
            f"({', '.join(needs)}), or set local.isolation: none to accept that workspaces share "
            "the agent's user" + (" (local.firewall: false drops the need for CAP_NET_ADMIN)"
                                  if "CAP_NET_ADMIN" in gone else ""),
        )


def default_python() -> str:
    """``local.python`` unset: the agent's interpreter when every user may run it, else the same
    version's ``/usr/bin/python3.X`` or ``/usr/local/bin/python3.X`` when they may (an agent in a
    venv of an interpreter under a private HOME, e.g. pyenv's as root)."""
    import sys

    if _reachable_by_others(Path(sys.executable), execute=True) is None:
        return sys.executable
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (Path("/usr/bin") / version, Path("/usr/local/bin") / version):
        try:
            if candidate.exists() and _reachable_by_others(candidate, execute=True) is None:
                return str(candidate)
        except OSError:
            continue
    return sys.executable


class WorkspaceUsers:
    """The owner → OS user mapping and the per-workspace directories of ``local.isolation: users``."""

    def __init__(self, root: Path, *, python: str, uid_range: tuple[int, int], prefix: str,
                 needs: tuple[str, ...] = SWITCH_USERS) -> None:
        self.root = root
        #: The capabilities the agent must hold (:mod:`fetchml_agent.privilege`).
        self.needs = needs
        self.python = python
        self.uid_range = uid_range
        self.prefix = prefix
        self._lock = threading.Lock()

    def check(self) -> None:
        """At the agent's start: it may switch users; the interpreter and the root are reachable."""
        require(self.needs)
        prepare()
        try:
            why = _reachable_by_others(Path(self.python), execute=True)
        except OSError as exc:
            why = str(exc)
        if why:
            raise ConfigError(f"local.python {self.python}: workspace users cannot run it: {why}",
                              "point local.python at an interpreter every user may run (e.g. /usr/bin/python3.11)")
        import sysconfig

        site = Path(sysconfig.get_path("purelib"))
        why = _reachable_by_others(site, execute=False)
        if why:
            raise ConfigError(f"the agent's packages ({site}): workspace users cannot read them, and JupyterLab "
                              f"runs from there: {why}",
                              "install the agent where every user may read it (e.g. a clone or venv outside a "
                              "0700 HOME), or set local.isolation: none")
        for sub in ("", "home", "envs", "run", "files", "runs"):
            d = self.root / sub
            d.mkdir(parents=True, exist_ok=True)
            os.chown(d, os.geteuid(), os.getegid())
            os.chmod(d, 0o711)
        why = _reachable_by_others(self.root / "run", execute=True)
        if why:
            raise ConfigError(f"local.workspaces_dir {self.root}: workspace users cannot reach it: {why}",
                              "choose a local.workspaces_dir whose parents others may enter (mode o+x)")

    def user_for(self, owner: str) -> OsUser:
        """The OS user of ``owner``'s workspaces, created (with its HOME) on first use."""
        name = f"{self.prefix}{owner}"
        if len(name) > _MAX_NAME:
            raise BackendError(f"OS user name {name!r} is longer than {_MAX_NAME} characters",
                               "choose a shorter local.user_prefix")
        with self._lock:
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                entry = self._create(name)
        lo, hi = self.uid_range
        if not lo <= entry.pw_uid <= hi or entry.pw_uid == 0:
            raise BackendError(f"OS user {name} exists with uid {entry.pw_uid}, outside local.uid_range {lo}-{hi}",
                               "remove or rename that user, or change local.user_prefix")
        home = self.root / "home" / name
        self.private_dir(home, entry.pw_uid, entry.pw_gid)
        return OsUser(name, entry.pw_uid, entry.pw_gid, home)

    def _create(self, name: str) -> pwd.struct_passwd:
        lo, hi = self.uid_range
        used = {p.pw_uid for p in pwd.getpwall()}
        import grp

        used |= {g.gr_gid for g in grp.getgrall()}
        uid = next((u for u in range(lo, hi + 1) if u not in used), None)
        if uid is None:
            raise BackendError(f"no free uid left in local.uid_range {lo}-{hi}", "widen local.uid_range")
        cmd = ["useradd", "--system", "--uid", str(uid), "--user-group", "--no-create-home",
               "--home-dir", str(self.root / "home" / name), "--shell", "/usr/sbin/nologin",
               "--comment", "fetchml workspace user", name]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            hint = done.stderr.strip()
            if os.geteuid() != 0:
                hint = (f"{hint}; this agent is not root and may not create users: the fetchml_agent role creates "
                        f"them from fetchml_agent_workspace_owners (add the owner there), or create {name} with "
                        f"a uid in local.uid_range {lo}-{hi} and HOME {self.root / 'home' / name}")
            raise BackendError(f"the OS user {name} does not exist and could not be created", hint)
        return pwd.getpwnam(name)

    def known_users(self) -> dict[str, int]:
        """The workspace users that exist now (name -> uid): this prefix, in the uid range."""
        lo, hi = self.uid_range
        return {p.pw_name: p.pw_uid for p in pwd.getpwall() if p.pw_name.startswith(self.prefix) and lo <= p.pw_uid <= hi}

    @staticmethod
    def private_dir(path: Path, uid: int, gid: int) -> None:
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, uid, gid)
        os.chmod(path, 0o700)
