"""IP allowlists and the one rule for believing ``X-Forwarded-For``.

A request's *client address* is the peer that connected, unless that peer is a configured trusted
proxy (``access.trusted_proxies``): then the ``X-Forwarded-For`` chain is read from the right, and
the first address that is not itself a trusted proxy is the client. A header sent by anyone else
is ignored, so a client cannot pick its own address. The same rule serves the agent's API (the
peer of the HTTP/WebSocket connection) and JupyterLab (the peer that the workspace server saw,
which it passes along with the header it got).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

__all__ = ["Network", "allowed", "client_address", "parse_network", "parse_networks"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_network(text: str) -> Network:
    """``10.0.0.0/8``, ``192.168.1.7`` (one host) or ``2001:db8::/32``. Raises ValueError naming
    the value."""
    try:
        return ipaddress.ip_network(str(text).strip(), strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP network (expected e.g. 10.0.0.0/8 or 192.168.1.7)") from None


def parse_networks(items: Iterable[str] | None) -> tuple[Network, ...]:
    return tuple(parse_network(i) for i in items or ())


def _address(text: str | None) -> Address | None:
    if not text:
        return None
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _within(addr: Address, networks: Sequence[Network]) -> bool:
    return any(addr.version == n.version and addr in n for n in networks)


def client_address(peer: str | None, forwarded_for: str | None, trusted_proxies: Sequence[Network]) -> str:
    """The client's address by the rule in the module docstring (``""`` when the peer is unknown)."""
    addr = _address(peer)
    if addr is None:
        return peer or ""
    if not forwarded_for or not _within(addr, trusted_proxies):
        return str(addr)
    for hop in reversed([h for h in forwarded_for.split(",") if h.strip()]):
        hop_addr = _address(hop)
        if hop_addr is None:
            return str(addr)  # a malformed hop: trust nothing beyond the last good address
        addr = hop_addr
        if not _within(addr, trusted_proxies):
            break
    return str(addr)


def allowed(address: str, *allowlists: Sequence[Network] | None) -> bool:
    """Whether ``address`` is inside every allowlist given (``None`` or empty: no restriction)."""
    lists = [a for a in allowlists if a]
    if not lists:
        return True
    addr = _address(address)
    if addr is None:
        return False
    return all(_within(addr, networks) for networks in lists)
