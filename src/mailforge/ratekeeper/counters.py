"""Connection counts per service and per client IP: the rate-keeper's bookkeeping, with no IO.

Like Postfix's anvil, every count is remembered against the `owner` that asked for it (one
worker's connection to the rate-keeper), so that when a worker dies, `drop_owner` gives back
everything it held and no count leaks.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

Clock = Callable[[], float]


class OpenVerdict(enum.StrEnum):
    """The answer to opening a session; the value is what travels in the msgpack reply."""

    OK = "ok"
    SERVICE_FULL = "service_full"
    IP_FULL = "ip_full"
    BLOCKED = "blocked"  # the client's address is blocked for failed logins or probes (abuse.py)


# A limit of 0 means "no limit", as in the config contract.
UNLIMITED = 0


@dataclass
class _ServiceCounts:
    connections: int = 0
    per_ip: dict[str, int] = field(default_factory=dict)
    refused: dict[OpenVerdict, int] = field(default_factory=lambda: {
        OpenVerdict.SERVICE_FULL: 0, OpenVerdict.IP_FULL: 0, OpenVerdict.BLOCKED: 0})


def check_caps(max_total: int, max_per_ip: int) -> None:
    if max_total < 0 or max_per_ip < 0:
        raise ValueError("limits must be 0 (unlimited) or more")


class ConnectionCounters:
    """Open sessions per service and per (service, IP), capped on `open`."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        # Connection counts are not time-based; the rate windows that join this process later
        # (auth failures, harvesting, outbound limits) read the same injected clock.
        self.clock = clock
        self._services: dict[str, _ServiceCounts] = {}
        # owner → {(service, ip): sessions it opened there}
        self._held: dict[Hashable, dict[tuple[str, str], int]] = {}

    def open(self, owner: Hashable, service: str, ip: str, max_total: int, max_per_ip: int,
             blocked: bool = False) -> OpenVerdict:
        """Count one session if both caps allow it: OK, else SERVICE_FULL or IP_FULL;
        BLOCKED when the caller says the address is blocked (counted as refused)."""
        check_caps(max_total, max_per_ip)
        counts = self._service(service)
        verdict = OpenVerdict.BLOCKED if blocked else _verdict(counts, ip, max_total, max_per_ip)
        self.count(owner, service, ip, verdict)
        return verdict

    def count(self, owner: Hashable, service: str, ip: str, verdict: OpenVerdict) -> None:
        """Apply a verdict reached here or by the shared counters: count the session when it
        is OK, else the refusal."""
        counts = self._service(service)
        if verdict is not OpenVerdict.OK:
            counts.refused[verdict] += 1
            return
        counts.connections += 1
        counts.per_ip[ip] = counts.per_ip.get(ip, 0) + 1
        held = self._held.get(owner)
        if held is None:
            held = self._held[owner] = {}
        held[service, ip] = held.get((service, ip), 0) + 1

    def _service(self, service: str) -> _ServiceCounts:
        counts = self._services.get(service)
        if counts is None:
            counts = self._services[service] = _ServiceCounts()
        return counts

    def close(self, owner: Hashable, service: str, ip: str) -> bool:
        """Uncount one session of `owner`; False when it held none there."""
        held = self._held.get(owner)
        key = (service, ip)
        # A close for a session this owner never had counted (opened while the rate-keeper
        # was down, or closed twice) must not take a count that belongs to someone else.
        if held is None or key not in held:
            return False
        if held[key] > 1:
            held[key] -= 1
        else:
            del held[key]
            if not held:
                del self._held[owner]
        self._release(service, ip, 1)
        return True

    def drop_owner(self, owner: Hashable) -> dict[tuple[str, str], int]:
        """The owner went away (a worker died): release every session it held; what it held."""
        held = self._held.pop(owner, {})
        for (service, ip), count in held.items():
            self._release(service, ip, count)
        return held

    def live(self) -> dict[tuple[str, str], int]:
        """Sessions open now by (service, ip), over all owners."""
        return {(name, ip): count for name, counts in self._services.items()
                for ip, count in counts.per_ip.items()}

    def snapshot(self) -> dict[str, dict]:
        return {
            name: {"connections": c.connections, "ips": len(c.per_ip), "refused": dict(c.refused)}
            for name, c in self._services.items()
        }

    def _release(self, service: str, ip: str, count: int) -> None:
        counts = self._services[service]
        counts.connections -= count
        left = counts.per_ip[ip] - count
        # Forget idle IPs, or a scan from many addresses would grow the table for ever.
        if left:
            counts.per_ip[ip] = left
        else:
            del counts.per_ip[ip]


def _verdict(counts: _ServiceCounts, ip: str, max_total: int, max_per_ip: int) -> OpenVerdict:
    # The service-wide cap is checked first: when both are full, it is the wider cause.
    if max_total != UNLIMITED and counts.connections >= max_total:
        return OpenVerdict.SERVICE_FULL
    if max_per_ip != UNLIMITED and counts.per_ip.get(ip, 0) >= max_per_ip:
        return OpenVerdict.IP_FULL
    return OpenVerdict.OK
