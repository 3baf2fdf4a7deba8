"""Failed logins and recipient probes per client address: tarpit, then block. No IO.

Every failure (a wrong password or unknown user at AUTH/PASS/LOGIN, an RCPT to an unknown
local user) from one address, in any service and any worker, lands in one sliding window here.
Past `tarpit_after` failures each further failure is answered late (a delay growing by
`tarpit_delay` per failure, up to `tarpit_max`): one guesser pays seconds per guess, one user
with a typo pays nothing. At `block_after` the address is blocked for `block_time`: its
connections are refused (the protocol's refusal) until the block ends. Failures of both kinds
count together: an attacker cannot spend a login allowance and a harvesting allowance.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import math
from dataclasses import dataclass

from .counters import Clock

log = logging.getLogger(__name__)

# Addresses that stopped failing are forgotten once their window is over; sweeping the table on
# every Nth failure keeps it bounded without a timer.
SWEEP_EVERY = 1024


# An IPv6 client owns at least a /64 (RFC 6177), so counting its addresses one by one would
# hand it 2**64 allowances.
IPV6_PREFIX = 64


def client_key(ip: str) -> str:
    """What failures are counted against: the IPv4 address, or the IPv6 /64."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip  # a Unix socket peer or similar: count it as given
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/{IPV6_PREFIX}", strict=False))
    return str(address)


@dataclass(frozen=True, slots=True)
class Thresholds:
    """[abuse] from the config, sent with each report so that a reload applies at once."""

    window: float
    tarpit_after: int
    tarpit_delay: float
    tarpit_max: float
    block_after: int
    block_time: float

    @property
    def saturation(self) -> int:
        """The count past which more failures change nothing: the tarpit at its ceiling and
        the block reached. Keeping no more bounds each address's record."""
        steps = math.ceil(self.tarpit_max / self.tarpit_delay) if self.tarpit_delay > 0 else 0
        return max(self.block_after, self.tarpit_after + steps)

    def delay(self, failures: int) -> float:
        """The tarpit for the `failures`-th failure in the window."""
        over = failures - self.tarpit_after
        return 0.0 if over <= 0 else min(over * self.tarpit_delay, self.tarpit_max)


@dataclass(slots=True)
class _Record:
    failures: collections.deque[float]
    blocked_until: float = 0.0


class FailureCounters:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._records: dict[str, _Record] = {}
        self._reports = 0
        self.blocks = 0  # blocks imposed since start, for status and metrics
        self.tarpitted = 0  # failures answered late

    def record(self, ip: str, thresholds: Thresholds) -> tuple[float, float]:
        """Count one failure from `ip`; returns (delay before the failure reply, seconds of
        block imposed or still running: 0.0 when the address may go on)."""
        key = client_key(ip)
        now = self.clock()
        self._reports += 1
        if self._reports % SWEEP_EVERY == 0:
            self._sweep(now, thresholds.window)
        record = self._records.get(key)
        if record is None:
            record = self._records[key] = _Record(collections.deque())
        failures = record.failures
        while failures and failures[0] <= now - thresholds.window:
            failures.popleft()
        failures.append(now)
        if len(failures) > thresholds.saturation:
            failures.popleft()  # older failures change nothing any more
        delay = thresholds.delay(len(failures))
        if delay:
            self.tarpitted += 1
        if record.blocked_until > now:
            return delay, record.blocked_until - now
        if thresholds.block_after and len(failures) >= thresholds.block_after:
            record.blocked_until = now + thresholds.block_time
            failures.clear()  # the block is the penalty; afterwards the address starts afresh
            self.blocks += 1
            log.warning("rate-keeper: blocked %s for %.0f s after %d failures in %.0f s", key,
                        thresholds.block_time, thresholds.block_after, thresholds.window)
            return delay, thresholds.block_time
        return delay, 0.0

    def blocked_for(self, ip: str) -> float:
        """Seconds left of a block on `ip`, 0.0 when it is not blocked."""
        record = self._records.get(client_key(ip))
        if record is None:
            return 0.0
        return max(0.0, record.blocked_until - self.clock())

    def snapshot(self) -> dict[str, int]:
        now = self.clock()
        blocked = sum(1 for r in self._records.values() if r.blocked_until > now)
        return {"blocked_now": blocked, "blocks": self.blocks, "tarpitted": self.tarpitted,
                "tracked": len(self._records)}

    def _sweep(self, now: float, window: float) -> None:
        stale = [key for key, r in self._records.items()
                 if r.blocked_until <= now and (not r.failures or r.failures[-1] <= now - window)]
        for key in stale:
            del self._records[key]
