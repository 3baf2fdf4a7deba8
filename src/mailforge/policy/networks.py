"""Lists of client networks in policy settings ([relay] networks, [abuse] exempt_networks)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(texts: Iterable[str]) -> tuple[Network, ...]:
    """Config values, already validated by config.py."""
    return tuple(ipaddress.ip_network(text, strict=False) for text in texts)


def listed(client_ip: str, networks: tuple[Network, ...]) -> bool:
    """Is the client in one of the networks? An IPv4-mapped IPv6 peer counts as its IPv4."""
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)
