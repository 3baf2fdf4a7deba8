"""Failed logins and recipient probes per client address: tarpit, then block. No IO.

Every failure (a wrong password or unknown user at AUTH/PASS/LOGIN, an RCPT to an unknown
local user) from one address, in any service and any worker, lands in one sliding window here.
Past `tarpit_after` failures each further failure is answered late (a delay growing by
`tarpit_delay` per failure, up to `tarpit_max`): one guesser pays seconds per guess, one user
with a typo pays nothing. At `block_after` the address is blocked for `block_time`: its
connections are refused (the protocol's refusal) until the block ends. Failures of both kinds
count together: an attacker cannot spend a login allowance and a harvesting allowance.

An operator sees the blocks in force (`mailforge abuse list`: which services the failures came
from, how many, and of what kind) and can lift them (`mailforge abuse unblock`); a reload lifts
the blocks of addresses that [abuse] exempt_networks now covers.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import math
from dataclasses import dataclass
from typing import NamedTuple

from .counters import Clock
from ..policy.networks import Network, parse_networks

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


class _Failure(NamedTuple):
    at: float
    service: str
    what: str  # its kind, as the log names it ("failed login", "unknown local recipient")


@dataclass(frozen=True, slots=True)
class Block:
    """A block imposed on one address, with what earned it."""

    since: float  # clock times
    until: float
    failures: int
    services: tuple[str, ...]
    why: str  # "8 failed logins in 600 s"

    @classmethod
    def earned(cls, failures: collections.deque[_Failure], now: float,
               thresholds: Thresholds) -> Block:
        return cls.of([(failure.service, failure.what) for failure in failures], now,
                      now + thresholds.block_time, thresholds.window)

    @classmethod
    def of(cls, failures: list[tuple[str, str]], since: float, until: float,
           window: float) -> Block:
        """The block that (service, what) failures within `window` seconds earned."""
        kinds = collections.Counter(what for _service, what in failures)
        why = ", ".join(f"{count} {what}" + ("" if count == 1 else "s")
                        for what, count in sorted(kinds.items()))
        return cls(since, until, len(failures),
                   tuple(sorted({service for service, _what in failures})),
                   f"{why} in {window:g} s")


@dataclass(slots=True)
class _Record:
    failures: collections.deque[_Failure]
    block: Block | None = None

    def blocked_for(self, now: float) -> float:
        return 0.0 if self.block is None else max(0.0, self.block.until - now)


class FailureCounters:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._records: dict[str, _Record] = {}
        self._reports = 0
        self.blocks = 0  # blocks imposed since start, for status and metrics
        self.tarpitted = 0  # failures answered late

    def record(self, ip: str, thresholds: Thresholds, service: str,
               what: str) -> tuple[float, float]:
        """Count one failure (of kind `what`, in `service`) from `ip`; returns (delay before
        the failure reply, seconds of block imposed or still running: 0.0 when the address
        may go on)."""
        key = client_key(ip)
        now = self.clock()
        self._reports += 1
        if self._reports % SWEEP_EVERY == 0:
            self._sweep(now, thresholds.window)
        record = self._records.get(key)
        if record is None:
            record = self._records[key] = _Record(collections.deque())
        failures = record.failures
        while failures and failures[0].at <= now - thresholds.window:
            failures.popleft()
        failures.append(_Failure(now, service, what))
        if len(failures) > thresholds.saturation:
            failures.popleft()  # older failures change nothing any more
        delay = thresholds.delay(len(failures))
        if delay:
            self.tarpitted += 1
        if record.blocked_for(now):
            return delay, record.blocked_for(now)
        if thresholds.block_after and len(failures) >= thresholds.block_after:
            record.block = Block.earned(failures, now, thresholds)
            failures.clear()  # the block is the penalty; afterwards the address starts afresh
            self.blocks += 1
            log.warning("rate-keeper: blocked %s for %.0f s after %d failures in %.0f s", key,
                        thresholds.block_time, thresholds.block_after, thresholds.window)
            return delay, thresholds.block_time
        return delay, 0.0

    def blocked_for(self, ip: str) -> float:
        """Seconds left of a block on `ip`, 0.0 when it is not blocked."""
        record = self._records.get(client_key(ip))
        return 0.0 if record is None else record.blocked_for(self.clock())

    def blocked(self) -> dict[str, Block]:
        """The blocks in force, by the address (or IPv6 /64) they hold, oldest first."""
        now = self.clock()
        found = [(key, r.block) for key, r in self._records.items()
                 if r.block is not None and r.blocked_for(now)]
        return dict(sorted(found, key=lambda item: item[1].since))

    def unblock(self, ip: str) -> list[str]:
        """Lift the block on `ip` (an address, or an IPv6 /64 as `blocked` names it) and forget
        its failures, so that it starts afresh; the keys lifted (none if it was not blocked)."""
        return self._forgive([client_key(ip)])

    def unblock_all(self) -> list[str]:
        return self._forgive(list(self._records))

    def exempt(self, networks: list[str]) -> list[str]:
        """The exempt list changed (a reload): lift the blocks of addresses it now covers.
        ValueError for a list that is not networks."""
        if not all(isinstance(text, str) for text in networks):
            raise ValueError("networks are strings")  # ip_network would take 5 as 0.0.0.5
        exempt = parse_networks(networks)
        return self._forgive([key for key in self._records if covered(key, exempt)])

    def _forgive(self, keys: list[str]) -> list[str]:
        now = self.clock()
        lifted = []
        for key in keys:
            record = self._records.pop(key, None)
            if record is not None and record.blocked_for(now):
                lifted.append(key)
        if lifted:
            log.warning("rate-keeper: block lifted on %s", ", ".join(lifted))
        return lifted

    def snapshot(self) -> dict[str, int]:
        now = self.clock()
        blocked = sum(1 for r in self._records.values() if r.blocked_for(now))
        return {"blocked_now": blocked, "blocks": self.blocks, "tarpitted": self.tarpitted,
                "tracked": len(self._records)}

    def _sweep(self, now: float, window: float) -> None:
        stale = [key for key, r in self._records.items()
                 if not r.blocked_for(now) and (not r.failures or r.failures[-1].at <= now - window)]
        for key in stale:
            del self._records[key]


def covered(key: str, networks: tuple[Network, ...]) -> bool:
    """Does an exempt network cover the counted address (or reach into the counted /64)?"""
    try:
        counted = ipaddress.ip_network(key)
    except ValueError:
        return False  # a Unix socket peer or similar: no network holds it
    return any(counted.version == network.version and counted.overlaps(network)
               for network in networks)
