"""A worker's side of the harvesting and brute-force defence (counters: ratekeeper/abuse.py).

Drivers call `count_failure` when the state machine marks a reply as a failed login or an RCPT
to an unknown local user. The failure is counted in the rate-keeper, shared by every worker of
every service, and the verdict says what it costs the client: how long its reply is held back
(the tarpit), and whether its address has just been blocked. The driver acts on it, in its
protocol's words. Both kinds of failure go through the same path, so an unknown user and a
wrong password cost the client the same time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..config import AbuseConfig
from ..ratekeeper.abuse import Thresholds
from ..ratekeeper.client import RateKeeperClient
from .networks import Network, listed, parse_networks

log = logging.getLogger("mailforge.abuse")


@dataclass(frozen=True, slots=True)
class FailureVerdict:
    """What one counted failure costs the client."""

    delay: float = 0.0        # seconds to hold the reply back
    # Seconds the address is now blocked for (0.0: not blocked): the session ends after the
    # reply, with a refusal that says how long.
    blocked_for: float = 0.0


NO_PENALTY = FailureVerdict()


@dataclass(frozen=True)
class AbuseGuard:
    thresholds: Thresholds
    exempt: tuple[Network, ...]
    ratekeeper: RateKeeperClient

    @classmethod
    def from_config(cls, config: AbuseConfig, ratekeeper: RateKeeperClient) -> AbuseGuard:
        thresholds = Thresholds(config.window, config.tarpit_after, config.tarpit_delay,
                                config.tarpit_max, config.block_after, config.block_time)
        return cls(thresholds, parse_networks(config.exempt_networks), ratekeeper)

    async def count_failure(self, service: str, client_ip: str, what: str) -> FailureVerdict:
        """Count one failure (`what` names it in the log) and judge what it costs."""
        if listed(client_ip, self.exempt):
            return NO_PENALTY
        delay, blocked_for = await self.ratekeeper.report_failure(client_ip, service, what,
                                                                  self.thresholds)
        if blocked_for:
            log.warning("%s: %s from %s; address blocked for %.0f s", service, what, client_ip,
                        blocked_for)
        return FailureVerdict(delay, blocked_for)
