"""A workspace's bridge network and the host firewall that limits its egress (:mod:`fetchml_agent.netpolicy`)."""

from __future__ import annotations

import contextlib
import ipaddress
from typing import Any

import docker
import docker.errors
import docker.types

from ...aio import run_blocking
from ...errors import (
    FetchmlError,
    InsufficientResources,
)
from ...netpolicy import WorkspaceNet
from ..base import (
    WorkspaceSpec,
)
from .common import _BRIDGE_OPT, _INSTANCE, _WS_NAME, DockerBase, _docker_errors, _iface_for


class NetworkMixin(DockerBase):
    """Networks of this runtime's workspaces, each on its own subnet, behind the firewall table."""

    # -- firewall and networks ------------------------------------------------------------

    def _our_networks(self) -> list[Any]:
        with _docker_errors("listing workspace networks"):
            return list(self.client.networks.list(filters={"label": [f"{_INSTANCE}={self.prefix}"]}))

    @staticmethod
    def _net_entry(net: Any) -> WorkspaceNet:
        attrs = net.attrs
        cfg = ((attrs.get("IPAM") or {}).get("Config") or [{}])[0]
        return WorkspaceNet(
            name=(attrs.get("Labels") or {}).get(_WS_NAME, net.name),
            iface=(attrs.get("Options") or {}).get(_BRIDGE_OPT, ""),
            subnet=cfg.get("Subnet", ""),
        )

    async def _apply_firewall(self, extra: WorkspaceNet | None = None, without: str | None = None) -> None:
        """Render the table for our networks (+ ``extra``, - network ``without``). Hold the lock."""
        assert self.firewall is not None
        nets = [n for n in await run_blocking(self._our_networks) if n.name != without]
        entries = [self._net_entry(n) for n in nets]
        entries = [e for e in entries if e.iface]
        if extra is not None and all(e.name != extra.name for e in entries):
            entries.append(extra)
        await self.firewall.apply(entries)

    def _free_subnet(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        used = []
        with _docker_errors("listing networks"):
            for net in self.client.networks.list():
                for cfg in (net.attrs.get("IPAM") or {}).get("Config") or []:
                    with contextlib.suppress(KeyError, ValueError):
                        used.append(ipaddress.ip_network(cfg["Subnet"], strict=False))
        for candidate in self.subnet_pool.subnets(new_prefix=self.subnet_prefix):
            if not any(candidate.overlaps(u) for u in used if u.version == candidate.version):
                return candidate
        raise InsufficientResources(
            f"no free /{self.subnet_prefix} left in the workspace subnet pool {self.subnet_pool}",
            "delete unused workspaces or configure a larger docker.subnet_pool",
        )

    async def _ensure_network(self, spec: WorkspaceSpec) -> tuple[Any, bool]:
        """The workspace's network, created (firewall first) when missing. Hold the lock."""
        _, net_name, _ = self._names(spec.name, spec.backing)

        def find() -> Any:
            with _docker_errors(f"looking up network {net_name}"):
                try:
                    return self.client.networks.get(net_name)
                except docker.errors.NotFound:
                    return None

        net = await run_blocking(find)
        if net is not None:
            await self._apply_firewall()
            return net, False
        subnet = await run_blocking(self._free_subnet)
        iface = _iface_for(self.prefix, spec.id)
        await self._apply_firewall(extra=WorkspaceNet(spec.name, iface, str(subnet)))

        def create() -> Any:
            gateway = str(next(subnet.hosts()))
            ipam = docker.types.IPAMConfig(
                pool_configs=[docker.types.IPAMPool(subnet=str(subnet), gateway=gateway)]
            )
            with _docker_errors(f"creating network {net_name}"):
                return self.client.networks.create(
                    net_name,
                    driver="bridge",
                    ipam=ipam,
                    check_duplicate=True,
                    labels=self._labels(spec),
                    options={
                        _BRIDGE_OPT: iface,
                        "com.docker.network.bridge.enable_icc": "false",
                        "com.docker.network.bridge.enable_ip_masquerade": str(self._masquerade).lower(),
                        "com.docker.network.bridge.host_binding_ipv4": self.publish_addr,
                    },
                )

        try:
            return await run_blocking(create), True
        except FetchmlError:
            await self._apply_firewall()
            raise

