"""Relay control: who may send mail to domains that are not ours.

The four choices mail administrators know, most secure first: no relay, relay for
authenticated users, relay for listed networks (and authenticated users), relay for anyone.
Mail for local domains never asks this: it is accepted when the mailbox exists.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import RelayConfig
from .networks import Network, listed, parse_networks


@dataclass(frozen=True)
class RelayPolicy:
    mode: str
    networks: tuple[Network, ...]

    @classmethod
    def from_config(cls, config: RelayConfig) -> RelayPolicy:
        return cls(config.mode, parse_networks(config.networks))

    def may_relay(self, client_ip: str, authenticated: bool) -> bool:
        if self.mode == "open":
            return True
        if self.mode == "none":
            return False
        if authenticated:
            return True
        return self.mode == "networks" and listed(client_ip, self.networks)
