"""The counters every node shares, in Valkey/Redis ([cluster] redis): one node's view of them.

The rate-keeper asks here first when a cluster is configured; `None` from any call means the
server cannot answer now, and the caller decides with this node's own counts (fail open, as a
lost rate-keeper does). The first failure marks the server down (said once in the log, and in
`mailforge status`), so later calls answer `None` at once instead of each waiting for a timeout;
the heartbeat finds it back.

Connections: a dead node must not hold its sessions' counts forever, so each node counts its
sessions in a hash of its own (`conn:<node>`) whose TTL the heartbeat renews every
HEARTBEAT_INTERVAL; a cap is checked against the sum over the live nodes' hashes. A node that
dies stops renewing, and its counts vanish NODE_TTL seconds later (the open script then drops
it from the node set). Windows (failures, blocks, outbound messages) are sorted sets and keys
whose TTL is the window itself.

Catching up: when the server is back (or was restarted empty, or this node's hash expired),
the node writes its hash afresh from its own live-session counts and pushes the blocks it
imposed while alone; failures and messages counted alone stay this node's own.

Sessions come and go while a register is on its way, and its snapshot of them must agree with
what its REGISTER overwrites: a session is in the snapshot exactly when its OPEN (or CLOSE)
reached the hash before REGISTER did. So an OPEN or CLOSE never overlaps the snapshot and
REGISTER: the register waits for those already sent (and for the rate-keeper's own count,
which follows each answer with no await between), and those that come meanwhile wait for it.
A release is decided when the session leaves this node's counts: a snapshot taken since then
has left it out already, and its CLOSE would take it twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Coroutine
from typing import TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from . import shared_lua
from .abuse import Block, Thresholds, client_key
from .counters import OpenVerdict

log = logging.getLogger(__name__)
T = TypeVar("T")

# Every key starts with this, so a Valkey shared with other programs keeps ours apart.
KEY_PREFIX = "mailforge:"
# A node renews its connection hash this often; after NODE_TTL without renewal (a dead node,
# or one cut off from the server) its sessions no longer count anywhere else.
HEARTBEAT_INTERVAL = 1.0
NODE_TTL = 10
# Every accepted connection waits for one round trip: a server slower than this is treated as
# down, so a sick Valkey costs a client a fraction of a second, not its whole session. Well
# under the workers' stall check (client.py STALL_CHECK_INTERVAL), even for an open that must
# register first (three calls). One that comes while a register rewrites this node's hash
# waits for two calls more at most, and only during a catch-up (SharedCounters._change).
REDIS_TIMEOUT = 0.25

# What the rate-keeper gives on catch-up: its sessions by (service, ip), and its blocks in
# force (times in seconds from now).
LiveSessions = Callable[[], dict[tuple[str, str], int]]
LocalBlocks = Callable[[], dict[str, Block]]


def masked(url: str) -> str:
    """The URL without its password, for logs and status: in the user part, or in the query
    (redis-py takes ?password=, the only place a unix:// URL has for one)."""
    base, mark, query = url.partition("?")
    parts = urllib.parse.urlsplit(base)
    if parts.password is not None:
        base = urllib.parse.urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))
    fields = urllib.parse.parse_qsl(query, keep_blank_values=True)
    if any(name == "password" for name, _ in fields):
        query = urllib.parse.urlencode([(name, "***" if name == "password" else value)
                                        for name, value in fields], safe="*")
    return base + mark + query


class SharedCounters:
    def __init__(self, url: str, node: str, live_sessions: LiveSessions,
                 local_blocks: LocalBlocks) -> None:
        self.url, self.node = masked(url), node
        # No retries: a failed call falls back at once; the heartbeat is the retry.
        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT,
            retry=Retry(NoBackoff(), 0), decode_responses=True)
        self._scripts = {name: self._redis.register_script(getattr(shared_lua, name))
                         for name in ("OPEN", "CLOSE", "REGISTER", "FAIL", "ADD_BLOCK", "SEND")}
        self._live_sessions = live_sessions
        self._local_blocks = local_blocks
        self.up = False
        self._changed = time.monotonic()
        self._reason = "not connected yet"
        self.fallbacks = 0  # outages: times this node went back to its own counts
        self._registering: asyncio.Future[bool] | None = None
        # Clear while a register snapshots this node's sessions and rewrites its hash.
        self._writable = asyncio.Event()
        self._writable.set()
        # OPEN and CLOSE calls on their way, which a register waits for.
        self._changing = 0
        self._settled = asyncio.Event()
        self._settled.set()
        self._snapshots = 0  # taken so far: tells a release whether one left it out

    # -- connections -------------------------------------------------------------------------

    async def open(self, service: str, ip: str, max_total: int,
                   max_per_ip: int) -> OpenVerdict | None:
        """The verdict over all nodes; the caller counts it in its own live sessions before it
        awaits anything else (a register's snapshot must see the server's count and ours
        together), or releases it at once."""
        args = [service, ip, client_key(ip), max_total, max_per_ip]
        verdict = await self._change("OPEN", *args)
        # Registered after _change, not in it: the register waits for every OPEN on its way,
        # and this one is back (it counted nothing).
        if verdict == "unregistered" and await self.register():
            verdict = await self._change("OPEN", *args)
        return None if verdict in (None, "unregistered") else OpenVerdict(verdict)

    def release(self, service: str, ip: str,
                count: int) -> Coroutine[object, object, object | None]:
        """Uncount sessions that have just left this node's own counts, by awaiting or spawning
        what this returns: whether a snapshot has left them out is counted from now."""
        return self._change("CLOSE", service, ip, count, left_at=self._snapshots)

    async def register(self) -> bool:
        """Push this node's blocks and write its sessions afresh: the catch-up. One at a
        time: those asked for meanwhile share it, as two snapshots could land out of order."""
        if self._registering is None or self._registering.done():
            self._registering = asyncio.ensure_future(self._register())
        return await asyncio.shield(self._registering)

    async def _register(self) -> bool:
        # Blocks first, as they leave the sessions alone: opens wait for the REGISTER only.
        for address, block in self._local_blocks().items():
            if await self._run("ADD_BLOCK", address, block.until, block.failures,
                               ",".join(block.services), block.why, even_down=True) is None:
                return False
        self._writable.clear()
        try:
            while self._changing:
                await self._settled.wait()
            live = self._live_sessions()
            self._snapshots += 1
            totals: dict[str, int] = {}  # a service's sessions: the sum over its addresses
            for (service, _ip), count in live.items():
                totals[service] = totals.get(service, 0) + count
            fields = [item for service, count in totals.items() for item in (service, count)]
            fields += [item for (service, ip), count in live.items()
                       for item in (f"{service}\t{ip}", count)]
            if await self._run("REGISTER", self.node, NODE_TTL, *fields, even_down=True) is None:
                return False
            # Before the opens go on: one that found the node down would count only here.
            self._mark_up(sum(live.values()))
            return True
        finally:
            self._writable.set()

    async def heartbeat(self) -> None:
        """Keep this node's connection hash alive; register it when it is gone or the server
        was down. Runs for the rate-keeper's life."""
        own = f"{KEY_PREFIX}conn:{self.node}"
        while True:
            if not self.up:
                await self.register()
            else:
                renewed = await self._call(self._redis.expire(own, NODE_TTL))
                if renewed == 0:  # the server lost it (restarted empty): catch up now
                    await self.register()
            await asyncio.sleep(HEARTBEAT_INTERVAL)

    # -- failures and blocks -----------------------------------------------------------------

    async def fail(self, ip: str, thresholds: Thresholds, service: str,
                   what: str) -> tuple[float, float] | None:
        """As FailureCounters.record, counted over all nodes: (delay, seconds blocked)."""
        result = await self._run("FAIL", client_key(ip), thresholds.window,
                                 thresholds.saturation, thresholds.block_after,
                                 thresholds.block_time, service, what)
        if result is None:
            return None
        failures, blocked, imposed = int(result[0]), float(result[1]), result[2]
        if imposed:
            log.warning("rate-keeper: blocked %s on every node for %.0f s after %d failures "
                        "in %.0f s", client_key(ip), thresholds.block_time, failures,
                        thresholds.window)
        return thresholds.delay(failures), blocked

    async def blocked_for(self, ip: str) -> float | None:
        left = await self._call(self._redis.pttl(f"{KEY_PREFIX}block:{client_key(ip)}"))
        return None if left is None else max(0.0, left / 1000)

    async def blocks(self) -> dict[str, Block] | None:
        """The blocks in force on every node, by address; times in seconds from now."""
        keys = await self._call(self._keys("block:*"))
        if keys is None:
            return None
        pipe = self._redis.pipeline(transaction=False)
        pipe.time()
        for key in keys:
            pipe.hgetall(key)
        answers = await self._call(pipe.execute())
        if answers is None:
            return None
        seconds, micros = answers[0]
        now = seconds + micros / 1e6
        found = {}
        for key, fields in zip(keys, answers[1:]):
            if fields:  # else it expired between the scan and the read
                found[key.removeprefix(f"{KEY_PREFIX}block:")] = _block(fields, now)
        return dict(sorted(found.items(), key=lambda item: item[1].since))

    async def unblock(self, addresses: list[str]) -> list[str] | None:
        """Lift the blocks on `addresses` (keys as `blocks` names them) and forget their
        failures; the ones that were blocked."""
        if not addresses:
            return []
        pipe = self._redis.pipeline(transaction=True)
        for address in addresses:
            pipe.delete(f"{KEY_PREFIX}block:{address}")
            pipe.delete(f"{KEY_PREFIX}fail:{address}")
        deleted = await self._call(pipe.execute())
        if deleted is None:
            return None
        return [address for address, removed in zip(addresses, deleted[::2]) if removed]

    async def failing(self) -> list[str] | None:
        """Every address with failures or a block: what `unblock_all` and `exempt` go over."""
        keys = await self._call(self._keys("block:*"))
        failing = await self._call(self._keys("fail:*"))
        if keys is None or failing is None:
            return None
        return sorted({key.split(":", 2)[2] for key in keys + failing})

    # -- outbound messages -------------------------------------------------------------------

    async def take_send(self, sender: str, messages: int, interval: float,
                        commit: bool) -> tuple[bool, bool] | None:
        result = await self._run("SEND", sender, messages, interval, "1" if commit else "0")
        return None if result is None else (bool(result[0]), bool(result[1]))

    # -- state -------------------------------------------------------------------------------

    def state(self) -> dict[str, object]:
        """For `mailforge status` and metrics."""
        return {"redis": self.url, "node": self.node, "shared": self.up,
                "since": round(time.monotonic() - self._changed, 1),
                "reason": None if self.up else self._reason, "fallbacks": self.fallbacks}

    async def close(self) -> None:
        await self._redis.aclose()

    async def _keys(self, pattern: str) -> list[str]:
        return [key async for key in self._redis.scan_iter(match=KEY_PREFIX + pattern, count=1000)]

    async def _change(self, script: str, *args: object,
                      left_at: int | None = None) -> object | None:
        """Run OPEN or CLOSE on this node's hash, never across a register's snapshot and
        REGISTER; `left_at`, for a CLOSE: the snapshots taken when its sessions left this
        node's counts.

        The wait is bounded, and only a catch-up makes one: the register waits for the calls
        already sent, then sends REGISTER, each of which gives up after REDIS_TIMEOUT."""
        while not self._writable.is_set():
            await self._writable.wait()
        if left_at not in (None, self._snapshots):
            return None  # a snapshot since has left these sessions out, and REGISTER with it
        self._changing += 1
        self._settled.clear()
        try:
            return await self._run(script, self.node, *args)
        finally:
            self._changing -= 1
            if not self._changing:
                self._settled.set()

    async def _run(self, script: str, *args: object, even_down: bool = False) -> object | None:
        """A script's answer, or None while the server is down or when it fails now."""
        if not (self.up or even_down):
            return None
        return await self._call(self._scripts[script](args=[KEY_PREFIX, *args]))

    async def _call(self, request: Awaitable[T]) -> T | None:
        try:
            return await request
        except (RedisError, OSError) as exc:
            self._mark_down(str(exc) or type(exc).__name__)
            return None

    def _mark_down(self, reason: str) -> None:
        # Once per outage: every connection would log otherwise.
        if self.up or self.fallbacks == 0:
            self._reason = reason
            self._changed = time.monotonic()
            self.fallbacks += 1
            log.warning("shared counters at %s unreachable (%s): limits count node %s's own "
                        "clients until it is back", self.url, reason, self.node)
        self.up = False

    def _mark_up(self, sessions: int) -> None:
        if not self.up:
            self.up = True
            self._changed = time.monotonic()
            log.warning("shared counters at %s: node %s counts with the other nodes again "
                        "(%d live sessions registered)", self.url, self.node, sessions)


def _block(fields: dict[str, str], now: float) -> Block:
    """A block as stored by the FAIL script (each failure) or ADD_BLOCK (a node's summary);
    times in seconds from `now`."""
    since, until = float(fields["since"]) - now, float(fields["until"]) - now
    if "why" in fields:
        return Block(since, until, int(fields["count"]), tuple(fields["services"].split(",")),
                     fields["why"])
    failures = [tuple(line.split("\t")[1:3]) for line in fields["failures"].split("\n")]
    return Block.of(failures, since, until, float(fields["window"]))  # type: ignore[arg-type]
