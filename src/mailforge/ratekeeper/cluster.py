"""A rate-keeper whose counts hold over every node: the shared counters decide, its own follow.

Each operation asks the shared counters (shared.py) first; when they answer, this node's own
counters are brought along (its sessions, the messages it sent, the failures it saw), so that
the moment the server becomes unreachable the node decides alone from warm counts: its own
clients only, as a node without a cluster does (fail open). The workers see no difference.
"""

from __future__ import annotations

import asyncio
import time
import weakref

from .abuse import Thresholds, client_key, covered
from .counters import Clock, OpenVerdict, check_caps
from .outbound import check_limit
from .server import RateKeeper, block_entry
from .shared import SharedCounters
from ..policy.networks import parse_networks


class ClusteredKeeper(RateKeeper):
    def __init__(self, redis_url: str, node: str, clock: Clock = time.monotonic) -> None:
        super().__init__(clock)
        self.shared = SharedCounters(redis_url, node, self.connections.live, self.local_blocks)
        # Workers whose connection closed while an open was on its way to the server: the
        # count it brings back belongs to nobody.
        self._gone: weakref.WeakSet = weakref.WeakSet()
        self._tasks: set[asyncio.Task] = set()

    def start(self) -> None:
        self._spawn(self.shared.heartbeat())

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.shared.close()

    async def open(self, owner: object, service: str, ip: str, max_total: int,
                   max_per_ip: int) -> OpenVerdict:
        check_caps(max_total, max_per_ip)
        # No await between the shared verdict and our own count (or the release): see
        # SharedCounters.open.
        verdict = await self.shared.open(service, ip, max_total, max_per_ip)
        if verdict is None:
            return super().open(owner, service, ip, max_total, max_per_ip)
        if owner in self._gone:
            if verdict is OpenVerdict.OK:
                await self.shared.release(service, ip, 1)
            return verdict
        self.connections.count(owner, service, ip, verdict)
        return verdict

    # Released even while the server is down: a register on its way may have counted the
    # session already (when it is not, the release finds the server down and does nothing).

    def close(self, owner: object, service: str, ip: str) -> None:
        if self.connections.close(owner, service, ip):
            self._spawn(self.shared.release(service, ip, 1))

    def drop_owner(self, owner: object) -> None:
        self._gone.add(owner)
        for (service, ip), count in self.connections.drop_owner(owner).items():
            self._spawn(self.shared.release(service, ip, count))

    async def fail(self, owner: object, ip: str, service: str, what: str,
                   *thresholds: float) -> list[float]:
        local = super().fail(owner, ip, service, what, *thresholds)
        shared = await self.shared.fail(ip, Thresholds(*thresholds), service, what)
        return local if shared is None else list(shared)

    async def blocked_for(self, owner: object, ip: str) -> float:
        shared = await self.shared.blocked_for(ip) if self.shared.up else None
        return super().blocked_for(owner, ip) if shared is None else shared

    async def blocks(self, owner: object = None) -> list[dict]:
        shared = await self.shared.blocks() if self.shared.up else None
        if shared is None:
            return super().blocks(owner)
        return [block_entry(key, block) for key, block in shared.items()]

    async def unblock(self, owner: object, ip: str) -> list[str]:
        return await self._lift(super().unblock(owner, ip), [client_key(ip)])

    async def unblock_all(self, owner: object) -> list[str]:
        local = super().unblock_all(owner)
        return await self._lift(local, await self.shared.failing() if self.shared.up else None)

    async def exempt(self, owner: object, networks: list) -> list[str]:
        local = super().exempt(owner, networks)  # checks the networks first
        failing = await self.shared.failing() if self.shared.up else None
        exempt = parse_networks(networks)
        return await self._lift(local, None if failing is None else
                                [key for key in failing if covered(key, exempt)])

    async def _lift(self, local: list[str], shared_keys: list[str] | None) -> list[str]:
        """Lift blocks in the shared counters too; the addresses lifted anywhere."""
        shared = await self.shared.unblock(shared_keys) if shared_keys is not None else None
        return sorted(set(local) | set(shared or []))

    async def send(self, owner: object, sender: str, messages: int, interval: float,
                   commit: bool) -> list[bool]:
        check_limit(messages, interval)
        shared = await self.shared.take_send(sender, messages, interval, commit)
        if shared is None:
            return super().send(owner, sender, messages, interval, commit)
        if shared[0] and commit:
            self.sends.note(sender)
        return list(shared)

    async def stats(self, owner: object = None) -> dict:
        stats = super().stats(owner)
        shared = await self.shared.blocks() if self.shared.up else None
        if shared is not None:
            stats["abuse"]["blocked_now"] = len(shared)
        stats["cluster"] = self.shared.state()
        return stats

    def _spawn(self, work) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
