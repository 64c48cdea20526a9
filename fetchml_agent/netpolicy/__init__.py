"""The host firewall of workspace networks: one nftables table, rendered from one template.

``fetchml.nft.j2`` beside this file is the rule set (the Ansible role ``network_policy`` renders
the very same file on Nomad clients). This module validates the template's variables, renders
them, and loads the result with ``nft -f`` in one transaction that deletes and recreates only
its own table: Docker's, Nomad's and the host's tables are never touched, and ``flush ruleset``
is never used.

From a workspace interface, only these pass: replies to accepted connections, the agent's package
index (``index``), DNS resolvers (``dns``) and allowlisted destinations (``allow``, which can never
open another workspace). Everything else to the host (input) or through it (forward) is counted,
logged at ``log_rate`` and rejected.

Applying needs CAP_NET_ADMIN (root): failures raise :class:`~fetchml_agent.errors.BackendError`
with nft's own message.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from fetchml_agent.errors import BackendError, InvalidArgument

__all__ = [
    "TEMPLATE",
    "Destination",
    "Firewall",
    "LocalUserNet",
    "NetPolicy",
    "WorkspaceNet",
    "render",
]

TEMPLATE = Path(__file__).with_name("fetchml.nft.j2")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")
_IFACE = re.compile(r"^[A-Za-z0-9_.-]{1,15}\*?\Z")
_TABLE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}\Z")
_RATE = re.compile(r"^[1-9][0-9]{0,6}/(second|minute|hour|day)\Z")


@dataclass(frozen=True)
class WorkspaceNet:
    """One workspace network: its name (also names the drop counter), bridge interface, CIDR."""

    name: str
    iface: str
    subnet: str = ""


@dataclass(frozen=True)
class LocalUserNet:
    """A workspace user of the local runtime: its OS user name (also names the drop counter), uid,
    and the loopback ports of its own JupyterLab servers."""

    name: str
    uid: int
    ports: tuple[int, ...] = ()


@dataclass(frozen=True)
class Destination:
    """An allowlisted destination: a CIDR, a port (``None``: any) and ``tcp`` or ``udp``."""

    addr: str
    port: int | None = None
    proto: str = "tcp"


@dataclass(frozen=True)
class NetPolicy:
    """What every workspace may reach besides nothing; the same for all workspaces of a host."""

    table: str = "fetchml"
    index: tuple[str, int] | None = None
    dns: tuple[str, ...] = ()
    allow: tuple[Destination, ...] = ()
    log_rate: str = "10/minute"

    @classmethod
    def from_config(cls, d: dict[str, Any]) -> NetPolicy:
        """From config-shaped data: ``{table, index: "ADDR:PORT" | {addr, port}, dns, allow, log_rate}``."""
        index = d.get("index")
        if isinstance(index, str):
            addr, sep, port = index.rpartition(":")
            if not sep:
                raise InvalidArgument(f"network policy index: expected ADDR:PORT, got {index!r}")
            index = (addr.strip("[]"), _int(port, "network policy index port"))
        elif isinstance(index, dict):
            index = (str(index.get("addr")), _int(index.get("port"), "network policy index port"))
        allow = tuple(
            Destination(str(a.get("addr")), a.get("port"), str(a.get("proto") or "tcp"))
            for a in d.get("allow") or ()
        )
        return cls(
            table=str(d.get("table") or cls.table),
            index=index,
            dns=tuple(str(x) for x in d.get("dns") or ()),
            allow=allow,
            log_rate=str(d.get("log_rate") or cls.log_rate),
        )


def _int(value: Any, what: str) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{what}: expected a port number, got {value!r}") from None
    if not 0 < n < 65536 or isinstance(value, bool):
        raise InvalidArgument(f"{what}: expected a port from 1 to 65535, got {value!r}")
    return n


def _ip(value: str, what: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise InvalidArgument(f"{what}: expected an IP address, got {value!r}") from None


def _net(value: str, what: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise InvalidArgument(
            f"{what}: expected an address or CIDR such as 10.0.0.0/8, got {value!r}"
        ) from None


def _variables(policy: NetPolicy, workspaces: Iterable[WorkspaceNet],
               local_users: Iterable[LocalUserNet] = ()) -> dict[str, Any]:
    """The template's variables, validated: nothing unchecked reaches the rule text."""
    if not _TABLE.match(policy.table):
        raise InvalidArgument(f"network policy table: expected a name such as fetchml, got {policy.table!r}")
    if not _RATE.match(policy.log_rate):
        raise InvalidArgument(f"network policy log_rate: expected e.g. 10/minute, got {policy.log_rate!r}")
    wss: list[dict[str, str]] = []
    seen: set[str] = set()
    for ws in workspaces:
        if not _NAME.match(ws.name):
            raise InvalidArgument(f"network policy workspace name: not usable in a rule: {ws.name!r}")
        if ws.name in seen:
            raise InvalidArgument(f"network policy: workspace {ws.name!r} listed twice")
        seen.add(ws.name)
        if not _IFACE.match(ws.iface):
            raise InvalidArgument(f"network policy workspace {ws.name}: bad interface name {ws.iface!r}")
        subnet = _net(ws.subnet, f"network policy workspace {ws.name} subnet") if ws.subnet else ""
        wss.append({"name": ws.name, "iface": ws.iface, "subnet": subnet})
    index = None
    if policy.index is not None:
        addr, port = policy.index
        index = {
            "addr": _ip(addr, "network policy index address"),
            "port": _int(port, "network policy index port"),
        }
    allow: list[dict[str, Any]] = []
    for a in policy.allow:
        if a.proto not in ("tcp", "udp"):
            raise InvalidArgument(f"network policy allow {a.addr}: proto must be tcp or udp, got {a.proto!r}")
        a_port = None if a.port is None else _int(a.port, f"network policy allow {a.addr} port")
        allow.append({"addr": _net(a.addr, "network policy allow addr"), "port": a_port, "proto": a.proto})
    users: list[dict[str, Any]] = []
    for u in local_users:
        if not _NAME.match(u.name) or u.name in seen:
            raise InvalidArgument(f"network policy local user name: not usable in a rule: {u.name!r}")
        seen.add(u.name)
        if isinstance(u.uid, bool) or not isinstance(u.uid, int) or not 0 < u.uid < 2**32 - 1:
            raise InvalidArgument(f"network policy local user {u.name}: bad uid {u.uid!r}")
        ports = sorted({_int(p, f"network policy local user {u.name} port") for p in u.ports})
        users.append({"name": u.name, "uid": u.uid, "ports": ports})
    return {
        "table": policy.table,
        "workspaces": wss,
        "local_users": users,
        "index": index,
        "dns": [_ip(x, "network policy dns") for x in policy.dns],
        "allow": allow,
        "log_rate": policy.log_rate,
    }


_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATE.parent)),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,  # as Ansible's template module renders the same file
    keep_trailing_newline=True,
    autoescape=False,
)


def render(policy: NetPolicy, workspaces: Iterable[WorkspaceNet], local_users: Iterable[LocalUserNet] = ()) -> str:
    """The nft script that atomically replaces ``policy.table`` with the rules for ``workspaces``
    (and the local runtime's workspace users).

    Raises InvalidArgument when a value could not be written into a rule safely.
    """
    return _ENV.get_template(TEMPLATE.name).render(**_variables(policy, workspaces, local_users))


@dataclass
class Firewall:
    """Loads rendered rule sets into the kernel with ``nft``.

    ``nft`` is the command prefix (e.g. ``["ip", "netns", "exec", "ns1", "nft"]`` in tests).
    """

    policy: NetPolicy
    nft: Sequence[str] = field(default=("nft",))

    async def _run(self, args: list[str], stdin: bytes | None = None) -> tuple[int, str, str]:
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.nft,
                *args,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise BackendError(
                "cannot run nft to install the workspace firewall",
                f"{exc}; install nftables (Debian: apt-get install nftables)",
            ) from exc
        out, err = await proc.communicate(stdin)
        return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")

    async def apply(self, workspaces: Iterable[WorkspaceNet], local_users: Iterable[LocalUserNet] = ()) -> None:
        """Replace the table with the rules for exactly ``workspaces`` and ``local_users`` (atomic;
        empty lists allowed)."""
        script = render(self.policy, workspaces, local_users)
        rc, _, err = await self._run(["-f", "-"], script.encode())
        if rc != 0:
            raise BackendError(
                f"nft refused the workspace firewall (table inet {self.policy.table})",
                err.strip()[-2000:] + " (the agent needs root or CAP_NET_ADMIN to install it)",
            )

    async def delete(self) -> None:
        """Remove the whole table; nothing happens when it is not there."""
        script = f"table inet {self.policy.table} {{}}\ndelete table inet {self.policy.table}\n"
        rc, _, err = await self._run(["-f", "-"], script.encode())
        if rc != 0:
            raise BackendError(f"nft could not delete table inet {self.policy.table}", err.strip()[-2000:])

    async def ruleset(self) -> str | None:
        """The table as nft lists it now, or ``None`` when it does not exist."""
        rc, out, _ = await self._run(["list", "table", "inet", self.policy.table])
        return out if rc == 0 else None

    async def blocked_counts(self) -> dict[str, int]:
        """Packets blocked so far per workspace name (counters restart when the table is replaced)."""
        rc, out, _ = await self._run(["-j", "list", "counters", "table", "inet", self.policy.table])
        if rc != 0:
            return {}
        counts: dict[str, int] = {}
        for item in json.loads(out).get("nftables", []):
            counter = item.get("counter")
            if counter and str(counter.get("name", "")).startswith("blocked_"):
                counts[counter["name"][len("blocked_") :]] = int(counter.get("packets", 0))
        return counts
