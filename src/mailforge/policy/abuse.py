"""A worker's side of the harvesting and brute-force defence (counters: ratekeeper/abuse.py).

Drivers call `failed` when the state machine marks a reply as a failed login or an RCPT to an
unknown local user. The failure is counted in the rate-keeper, shared by every worker of every
service; the reply is then held back for the tarpit delay, and when the address has just been
blocked the driver ends the session with its protocol's refusal. Both kinds of failure go
through the same path, so an unknown user and a wrong password cost the client the same time.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from ..config import AbuseConfig
from ..ratekeeper.abuse import Thresholds
from ..protocols.session import Reply
from ..protocols.transport import Connection
from ..ratekeeper.client import RateKeeperClient
from .networks import Network, listed, parse_networks

log = logging.getLogger("mailforge.abuse")


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

    async def failed(self, service: str, client_ip: str, what: str) -> bool:
        """Count one failure and wait out its tarpit; True when the client is now blocked."""
        if listed(client_ip, self.exempt):
            return False
        delay, blocked = await self.ratekeeper.report_failure(client_ip, self.thresholds)
        if blocked:
            log.warning("%s: %s from %s; address blocked for %.0f s", service, what, client_ip,
                        blocked)
        if delay:
            await asyncio.sleep(delay)
        return blocked > 0

    async def answer_failure(self, conn: Connection, service: str, result: Reply,
                             refusal: bytes) -> bool:
        """For a driver whose machine marked `result` as a failure: count it, hold it back for
        the tarpit, and when the client is now blocked queue the reply and then `refusal` (the
        protocol's goodbye): True means the session must end."""
        assert result.failure is not None
        conn.flush()  # replies already due go out before the tarpit holds this one back
        if not await self.failed(service, conn.peer_ip, result.failure.value):
            return False
        conn.queue_reply(result.text + refusal)
        return True
