"""What the agent's process may do as far as switching users goes: read from its capabilities.

An agent may run workspaces as OS users of their own (``local.isolation: users``) when it holds
every capability of :data:`SWITCH_USERS` in its effective set, whatever its uid: root has them
all, and the ``fetchml_agent`` Ansible role grants exactly these (plus :data:`FIREWALL`) to the
unprivileged ``fetchml`` user's unit. Why each one (the role's README says the same):

- ``CAP_SETUID``, ``CAP_SETGID``: start JupyterLab and ``exec`` commands as the workspace's user
  and group (and drop the agent's supplementary groups);
- ``CAP_CHOWN``: hand a workspace's HOME, venv, run directory and files to its user;
- ``CAP_FOWNER``: chmod those (0700) and the agent's directories under ``local.workspaces_dir``
  once they are another user's;
- ``CAP_DAC_OVERRIDE``: read and remove what a workspace user left in its 0700 directories
  (reset, delete, the package inventory of its venv);
- ``CAP_KILL``: stop a workspace's processes, which belong to another uid.

``CAP_NET_ADMIN`` (:data:`FIREWALL`) loads the uid-keyed nftables table (``local.firewall``).
Nothing else is needed: no ``CAP_SYS_ADMIN`` (the disk limit's loop mount needs root and says
so), no ``CAP_SYS_PTRACE`` (servers are found from ``/proc/PID/status`` and ``cmdline``).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["FIREWALL", "SWITCH_USERS", "drop_inherited_capabilities", "effective_capabilities", "missing", "prepare"]

#: Capability numbers (linux/capability.h).
CAPS = {
    "CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_FOWNER": 3, "CAP_KILL": 5,
    "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_NET_ADMIN": 12,
}
SWITCH_USERS = ("CAP_SETUID", "CAP_SETGID", "CAP_CHOWN", "CAP_FOWNER", "CAP_DAC_OVERRIDE", "CAP_KILL")
FIREWALL = ("CAP_NET_ADMIN",)


def effective_capabilities(status: Path = Path("/proc/self/status")) -> int:
    """The ``CapEff`` mask of this process (0 where /proc does not say)."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return 0


def missing(names: tuple[str, ...], mask: int | None = None) -> list[str]:
    """The capabilities of ``names`` that this process does not hold."""
    have = effective_capabilities() if mask is None else mask
    return [n for n in names if not have >> CAPS[n] & 1]


_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_CAP_V3 = 0x20080522


class _Libc:
    """``prctl``, ``capget`` and ``capset`` with their buffers, made before any fork."""

    def __init__(self) -> None:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self.prctl, self.capget, self.capset = libc.prctl, libc.capget, libc.capset
        self.header = (ctypes.c_uint32 * 2)(_CAP_V3, 0)
        self.data = (ctypes.c_uint32 * 6)()  # two of {effective, permitted, inheritable}


_libc: _Libc | None = None


def drop_inherited_capabilities() -> None:
    """In a child about to become a workspace user (Popen's ``preexec_fn``, after its uid
    change): empty the inheritable and ambient sets, so that nothing of a non-root agent's
    capabilities survives the ``exec`` (a change between two non-zero uids keeps them; root's
    are dropped by the kernel anyway)."""
    c = _libc
    if c is None:
        return
    c.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    if c.capget(c.header, c.data) == 0:
        c.data[2] = c.data[5] = 0
        c.capset(c.header, c.data)


def prepare() -> None:
    """Load libc's functions before any fork (a ``preexec_fn`` must not import or load libraries)."""
    global _libc
    if _libc is None:
        _libc = _Libc()
