"""Relay control: who may send mail to domains that are not ours.

The four choices mail administrators know, most secure first: no relay, relay for
authenticated users, relay for listed networks (and authenticated users), relay for anyone.
Mail for local domains never asks this: it is accepted when the mailbox exists.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..config import RelayConfig


@dataclass(frozen=True)
class RelayPolicy:
    mode: str
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @classmethod
    def from_config(cls, config: RelayConfig) -> RelayPolicy:
        return cls(config.mode, tuple(ipaddress.ip_network(n, strict=False) for n in config.networks))

    def may_relay(self, client_ip: str, authenticated: bool) -> bool:
        if self.mode == "open":
            return True
        if self.mode == "none":
            return False
        if authenticated:
            return True
        return self.mode == "networks" and self._listed(client_ip)

    def _listed(self, client_ip: str) -> bool:
        try:
            address = ipaddress.ip_address(client_ip)
        except ValueError:
            return False
        return any(address in network for network in self.networks)
