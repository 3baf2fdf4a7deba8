"""What the SMTP, POP3 and IMAP drivers share: the loop that feeds a session's input to its
state machine and sends the replies, and each protocol's words for refusing a connection.

A driver subclass reads the next command and turns it into a Reply (`next_reply`, with the
protocol's own transfers: DATA, RETR, literals, IDLE); the loop here does the rest the same
way for every protocol: the worker stopping, the session record, failed logins and RCPTs to
the abuse guard, STARTTLS, pipelined replies going out together, and the close.
"""

from __future__ import annotations

import asyncio
import math
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Awaitable, Protocol, TypeVar

from ...auth.api import Node
from ...policy.abuse import AbuseGuard
from ...process.pool import WorkerPool
from ...ratekeeper.counters import OpenVerdict
from .owners import ClusterRouting, marked_login_refused
from .record import ServiceMeters, SessionRecord, reply_code
from ..session import Action, Reply, StopSignal
from .transport import Connection, ConnectionClosed
from .upstream import Upstream, splice

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Refusals:
    """A protocol's replies, each a format with {hostname}, for ending a session unserved."""

    # The address is blocked for failed logins or unknown recipients; {seconds}: how long
    # it has left, so that a user (or their admin) knows to wait rather than retry.
    blocked: str
    ip_full: str  # the address has its most connections
    full: str     # the worker has its most connections
    shutdown: str  # the worker is stopping

    def refusal(self, verdict: OpenVerdict, hostname: str, blocked_for: float = 0.0) -> bytes:
        """For a rate-keeper verdict other than OK; `blocked_for`: the seconds a block has
        left, for BLOCKED."""
        words = {OpenVerdict.BLOCKED: self.blocked,
                 OpenVerdict.IP_FULL: self.ip_full}.get(verdict, self.full)
        return _line(words, hostname, math.ceil(blocked_for))

    def shutdown_reply(self, hostname: str) -> bytes:
        return _line(self.shutdown, hostname)


def _line(words: str, hostname: str, seconds: int = 0) -> bytes:
    return (words.format(hostname=hostname, seconds=seconds) + "\r\n").encode()


class Machine(Protocol):
    user: str

    def greeting(self) -> bytes: ...
    def idle_reply(self) -> bytes: ...
    def tls_started(self) -> None: ...


class Settings(Protocol):
    hostname: str


@dataclass(kw_only=True)
class SessionContext:
    """What every session of one worker shares, whatever its protocol; each protocol's
    context adds its own."""

    settings: Settings
    executor: WorkerPool  # the worker's bounded pool for disk work and password checks
    worker: StopSignal
    guard: AbuseGuard
    meters: ServiceMeters
    tls_context: ssl.SSLContext | None = None
    # POP3 and IMAP in a cluster: mailbox routing (None: every mailbox is served here)
    cluster: ClusterRouting | None = None


class SessionDriver:
    """Subclasses set `service` (as the abuse guard counts it) and `refusals`, make `machine`
    after calling this `__init__`, and write `next_reply`; the hooks below default to nothing."""

    service: str
    refusals: Refusals
    machine: Machine

    def __init__(self, conn: Connection, ctx: SessionContext) -> None:
        self.conn = conn
        self.ctx = ctx
        self.record = SessionRecord(ctx.meters, conn.peer_ip)
        # The connection to the mailbox's owner node, once it logged the user in.
        self.upstream: Upstream | None = None
        # The cluster's proxied logins, where this session's peer may make them.
        self.proxy_logins = ctx.cluster.logins_from(conn) if ctx.cluster is not None else None

    async def run(self) -> None:
        conn, machine = self.conn, self.machine
        conn.idle_reply = machine.idle_reply()
        self.record.opened(conn.tls)
        conn.write(machine.greeting())
        try:
            while True:
                if self.ctx.worker.stopping and self.may_stop():
                    conn.queue_reply(self.refusals.shutdown_reply(self.ctx.settings.hostname))
                    return
                result = await self.next_reply()
                self.record.reply(result.failure, self.error_code(result), machine.user)
                if result.failure is not None and await self._answer_failure(result):
                    return
                if result.text:
                    conn.queue_reply(result.text)
                if result.action is Action.CLOSE:
                    return
                if result.action is Action.STARTTLS:
                    conn.flush()
                    assert self.ctx.tls_context is not None
                    await conn.start_tls(self.ctx.tls_context)
                    machine.tls_started()
                    self.tls_started()
                    continue
                if result.action is Action.PROXY:
                    assert self.upstream is not None
                    conn.flush()
                    await splice(conn, self.upstream)
                    return
                if not await self.replied(result):
                    return
                # Replies to pipelined commands go out together, once no whole command waits.
                if not conn.has_buffered_line() or self.flush_after(result):
                    conn.flush()
                # No next command while the client leaves its replies unread (Dovecot's POP3
                # does the same): a pipeline of RETRs or FETCHes it does not read waits in its
                # socket, not in our memory.
                await conn.drain()
        except ConnectionClosed:
            pass
        finally:
            conn.flush()
            if self.upstream is not None:
                self.upstream.close()
            await self.closing()
            self.record.closed(conn.bytes_in, conn.bytes_out)

    async def _answer_failure(self, result: Reply) -> bool:
        """For a reply the machine marked as a failure: the abuse guard counts it, the tarpit
        holds it back, and a client now blocked gets it followed by the protocol's refusal.
        True means the session must end."""
        assert result.failure is not None
        conn = self.conn
        conn.flush()  # replies already due go out before the tarpit holds this one back
        verdict = await self.ctx.guard.count_failure(self.service, conn.peer_ip,
                                                     result.failure.value)
        if verdict.delay:
            await asyncio.sleep(verdict.delay)
        if not verdict.blocked_for:
            return False
        refusal = self.refusals.refusal(OpenVerdict.BLOCKED, self.ctx.settings.hostname,
                                        verdict.blocked_for)
        conn.queue_reply(result.text + refusal)
        return True

    async def next_reply(self) -> Reply:
        raise NotImplementedError

    def error_code(self, result: Reply) -> str | None:
        """The code the session record keeps for a failed command (None for a success)."""
        return reply_code(result.text) if result.is_error and not result.quiet else None

    def may_stop(self) -> bool:
        """Whether a stopping worker may end the session now (not in the middle of a message)."""
        return True

    def tls_started(self) -> None:
        """After the handshake: forget what was read before it."""

    async def replied(self, result: Reply) -> bool:
        """The reply is queued: whatever the protocol does after it (IDLE, say); whether the
        session goes on."""
        return True

    def flush_after(self, result: Reply) -> bool:
        """Whether the reply must go out even while more commands wait."""
        return False

    async def closing(self) -> None:
        """The session is over, however it ended: release what it holds."""

    async def owner_elsewhere(self) -> Node | None:
        """The node that owns the logged-in user's mailbox, when it is another one (mailbox
        routing); AccountsUnavailable when the accounts database cannot say."""
        cluster = self.ctx.cluster
        if cluster is None:
            return None
        return await self.in_thread(cluster.owner_elsewhere, self.machine.user)

    def login_refused(self, via: str) -> bool:
        """Whether the login just made (`via`: the node of a proxied one, else "") must be
        refused all the same, with a temporary error (owners.marked_login_refused,
        ClusterRouting.cleartext_login_refused)."""
        user, cluster = self.machine.user, self.ctx.cluster
        if marked_login_refused(self.conn, user, via):
            return True
        return cluster is not None and cluster.cleartext_login_refused(self.conn, user, via)

    async def log_in_at_owner(self, owner: Node,
                              login: Callable[[Upstream, bytes], Awaitable[T]]) -> T:
        """`login` done at `owner` for the user (upstream.OwnerUnavailable otherwise): what it
        gave back. A reply with Action.PROXY then carries the session there."""
        assert self.ctx.cluster is not None
        self.upstream, answer = await self.ctx.cluster.log_in_at_owner(
            self.conn, self.service, self.machine.user, owner, login)
        return answer

    async def in_thread(self, function: Callable[..., T], *args: object) -> T:
        """Run blocking work (disk, password hashing) in the worker's bounded pool."""
        return await self.ctx.executor.run(function, *args)
