"""A worker's link to the rate-keeper: one Unix connection, many requests in flight.

Fail safe: the rate-keeper only protects us from abuse, so when it is unreachable, slow or dead,
`open_session` answers OK rather than refusing mail, and the client reconnects in the
background with backoff. A restarted rate-keeper starts from fresh counters: sessions counted
before the restart are not counted again, so caps are loose until those sessions end.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
from pathlib import Path

import msgpack

from .abuse import Thresholds
from .counters import OpenVerdict

log = logging.getLogger(__name__)

# Every accepted connection waits for the rate-keeper's answer. A request still unanswered
# after one to two of these intervals means it is wedged: we drop the connection, which lets
# the waiting sessions in uncounted. (One check per interval instead of a timer per request:
# a timer would cost about a tenth of the round trip.)
STALL_CHECK_INTERVAL = 0.5
CONNECT_TIMEOUT = 1.0
# Reconnect delays: quick at first (a supervisor restarts the rate-keeper in well under a
# second), doubling to a ceiling so a long outage costs one attempt every few seconds.
RECONNECT_DELAY_MIN = 0.05
RECONNECT_DELAY_MAX = 5.0


class RateKeeperError(Exception):
    """The rate-keeper rejected a request: a bug in the caller, not an outage."""


class _Unavailable(Exception):
    """The connection closed before the reply came."""


class _Connection(asyncio.Protocol):
    """One connection to the rate-keeper, with its requests in flight by id."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._pending: dict[int, asyncio.Future] = {}
        self._ids = itertools.count(1)
        self._oldest_seen: int | None = None
        self._packer = msgpack.Packer()
        self._unpacker = msgpack.Unpacker(raw=False)
        self.lost = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    async def call(self, op: str, *args: object) -> object:
        # Lost, but the client has not noticed yet: a write now would vanish unanswered.
        if self._gone():
            raise _Unavailable()
        req_id = next(self._ids)
        reply = self._loop.create_future()
        self._pending[req_id] = reply
        self._transport.write(self._packer.pack([req_id, op, *args]))
        try:
            return await reply
        finally:
            self._pending.pop(req_id, None)

    def stalled(self) -> bool:
        """Is the oldest request in flight the same one as at the previous check?"""
        oldest = next(iter(self._pending), None)
        stalled = oldest is not None and oldest == self._oldest_seen
        self._oldest_seen = oldest
        return stalled

    def notify(self, op: str, *args: object) -> None:
        """Send a request that wants no reply (req_id None); none to a keeper that is gone,
        whose replacement starts counting afresh."""
        if not self._gone():
            self._transport.write(self._packer.pack([None, op, *args]))

    def _gone(self) -> bool:
        # uvloop raises on a write to a closed transport (asyncio's own ignores it), and the
        # transport closes before connection_lost runs: a rate-keeper killed between the two
        # made a session's closing write raise.
        return self.lost.is_set() or self._transport.is_closing()

    def data_received(self, data: bytes) -> None:
        self._unpacker.feed(data)
        for req_id, result in self._unpacker:
            reply = self._pending.get(req_id)
            # Absent or done: the caller timed out and stopped waiting.
            if reply is not None and not reply.done():
                reply.set_result(result)

    def close(self) -> None:
        self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        for reply in self._pending.values():
            if not reply.done():
                reply.set_exception(_Unavailable())
        self.lost.set()


class RateKeeperClient:
    """One per worker process; safe to call from many sessions at once."""

    def __init__(self, socket_path: str | Path) -> None:
        self._path = str(socket_path)
        self._conn: _Connection | None = None
        self._keeper: asyncio.Task | None = None
        self._first_attempt = asyncio.Event()
        self._down = False
        self._closed = False

    async def open_session(self, service: str, ip: str, max_total: int,
                           max_per_ip: int) -> OpenVerdict:
        """Count a new session: OK, or why it is refused (a cap, or a blocked address)."""
        result = await self._ask(OpenVerdict.OK, "open", service, ip, max_total, max_per_ip)
        try:
            return OpenVerdict(result)
        except ValueError:
            raise RateKeeperError(f"open_session({service!r}, {ip!r}): {result!r}") from None

    async def report_failure(self, ip: str, service: str, what: str,
                             thresholds: Thresholds) -> tuple[float, float]:
        """Count a failed login or probe (`what`) from `ip` in `service`: (delay before
        answering it, seconds the address is blocked for, 0.0 if not). (0.0, 0.0) while the
        rate-keeper is unreachable."""
        result = await self._ask(
            [0.0, 0.0], "fail", ip, service, what, float(thresholds.window),
            int(thresholds.tarpit_after),
            float(thresholds.tarpit_delay), float(thresholds.tarpit_max),
            int(thresholds.block_after), float(thresholds.block_time))
        delay, blocked = _pair(result, f"report_failure({ip!r})")
        return float(delay), float(blocked)

    async def blocked_for(self, ip: str) -> float:
        """Seconds left of the block on `ip` (0.0: none, or the rate-keeper is unreachable)."""
        result = await self._ask(0.0, "blocked_for", ip)
        if not isinstance(result, float):
            raise RateKeeperError(f"blocked_for({ip!r}): {result!r}")
        return result

    async def take_send(self, sender: str, messages: int, interval: float,
                        commit: bool) -> tuple[bool, bool]:
        """May `sender` send one more message (counted when `commit`)? (allowed, new_event),
        see ratekeeper/outbound.py. (True, False) while the rate-keeper is unreachable."""
        result = await self._ask([True, False], "send", sender, int(messages), float(interval),
                                 bool(commit))
        allowed, new_event = _pair(result, f"take_send({sender!r})")
        return bool(allowed), bool(new_event)

    async def _ask(self, unavailable: object, op: str, *args: object) -> object:
        """The rate-keeper's answer to one request, or `unavailable` (fail open) when it cannot
        answer."""
        conn = self._conn or await self._connection()
        if conn is None:
            return unavailable
        try:
            return await conn.call(op, *args)
        except _Unavailable:
            return unavailable

    async def close_session(self, service: str, ip: str) -> None:
        """Uncount a session that open_session let in. Sent without waiting for a reply."""
        if self._conn is not None:
            self._conn.notify("close", service, ip)

    async def close(self) -> None:
        self._closed = True
        if self._keeper is not None:
            self._keeper.cancel()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _connection(self) -> _Connection | None:
        """The live connection; the first call waits for one connect attempt, later ones don't."""
        if self._conn is None and not self._closed:
            if self._keeper is None:
                self._keeper = asyncio.create_task(self._keep_connected())
            await self._first_attempt.wait()
        return self._conn

    async def _keep_connected(self) -> None:
        loop = asyncio.get_running_loop()
        delay = RECONNECT_DELAY_MIN
        while True:
            try:
                # A listener that stopped accepting leaves connect() pending once its backlog
                # fills; TimeoutError is an OSError, so that counts as unreachable too.
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    _, conn = await loop.create_unix_connection(_Connection, self._path)
            except OSError as exc:
                self._report_down(str(exc))
                self._first_attempt.set()
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_DELAY_MAX)
                continue
            self._report_up()
            self._conn = conn
            self._first_attempt.set()
            delay = RECONNECT_DELAY_MIN
            await self._watch(conn)
            self._conn = None
            self._report_down("connection lost")

    async def _watch(self, conn: _Connection) -> None:
        """Return when `conn` is lost; close it first if the rate-keeper stops answering."""
        while True:
            try:
                await asyncio.wait_for(conn.lost.wait(), STALL_CHECK_INTERVAL)
                return
            except TimeoutError:
                if conn.stalled():
                    log.warning("rate-keeper at %s stopped answering; reconnecting", self._path)
                    conn.close()

    def _report_down(self, reason: str) -> None:
        # Once per outage, not per call: every accepted connection would log otherwise.
        if not self._down:
            self._down = True
            log.warning("rate-keeper at %s unreachable (%s): connection caps are not enforced "
                        "until it is back", self._path, reason)

    def _report_up(self) -> None:
        if self._down:
            self._down = False
            log.warning("rate-keeper at %s is back; its counts restart from zero", self._path)


def _pair(result: object, request: str) -> list:
    if not (isinstance(result, list) and len(result) == 2):
        raise RateKeeperError(f"{request}: {result!r}")
    return result


def query_stats(socket_path: str | Path, timeout: float = 1.0) -> dict | None:
    """The rate-keeper's counters, for `mailforge status`; None if it does not answer."""
    result = ask(socket_path, timeout, "stats")
    return result if isinstance(result, dict) else None


def ask(socket_path: str | Path, timeout: float, op: str, *args: object) -> object | None:
    """One request from outside the workers (the supervisor: status, `mailforge abuse`, a
    reload), blocking for `timeout` at most; None if the rate-keeper does not answer or
    rejects it."""
    unpacker = msgpack.Unpacker(raw=False)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(socket_path))
            sock.sendall(msgpack.packb([1, op, *args]))
            while True:
                data = sock.recv(65536)
                if not data:
                    return None
                unpacker.feed(data)
                for _req_id, result in unpacker:
                    return None if isinstance(result, dict) and "error" in result else result
    except (OSError, ValueError, TypeError, msgpack.UnpackException):
        return None
