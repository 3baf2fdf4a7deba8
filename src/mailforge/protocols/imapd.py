"""Drives one IMAP session: the transport's input through the incremental command parser into
the state machine (protocols/imap/state.py), its replies back out.

Commands that touch the store run in the worker's thread pool, one at a time per session, so
one large folder does not stall every other session. Literals: a synchronizing `{n}` gets its
"+" continuation once the parser asks for it; `{n+}` (LITERAL+) does not. IDLE polls the
folder for changes every IDLE_POLL seconds (cheap in the store when nothing changed), so a
message delivered to an idling client is pushed within a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..auth.api import AccountsUnavailable, Authenticator
from .connection.driver import Refusals, SessionContext, SessionDriver
from .connection.record import imap_error_code
from .connection.transport import Connection, LineTooLong
from .connection.upstream import OwnerUnavailable
from .ownerlogin import imap_login
from .imap.state import Blocking, IMAPMachine, IMAPSettings, State
from ..ratekeeper.client import RateKeeperClient
from ..ratekeeper.counters import OpenVerdict
from .session import Action, Reply
from ..speedups import Command as ParsedCommand, CommandParser, ParseError
from ..store.api import Mailbox

log = logging.getLogger("mailforge.imap")

# How often an idling session looks for changes: a new message is pushed within a second.
IDLE_POLL = 0.5
# RFC 2177 3: clients re-IDLE every 29 minutes; a periodic "still here" finds dead peers
# without cutting live ones.
IDLE_KEEPALIVE = 120.0
# An AUTHENTICATE answer line (base64): auth.sasl refuses longer ones itself.
MAX_SASL_LINE = 8192 + 2
# The rate-keeper counts sessions per user as a "service" of its own, keyed by the address.
USER_SESSIONS = "imap-users"


@dataclass(kw_only=True)
class IMAPContext(SessionContext):
    settings: IMAPSettings
    accounts: Authenticator
    open_mailbox: Callable[[str], Mailbox]
    ratekeeper: RateKeeperClient
    max_sessions_per_user: int


REFUSALS = Refusals(
    blocked="* BYE [UNAVAILABLE] Your address is blocked for {seconds} s after repeated failures, "
            "try again then",
    ip_full="* BYE [UNAVAILABLE] Too many connections from your IP address",
    full="* BYE [UNAVAILABLE] Too many connections, try again later",
    shutdown="* BYE [UNAVAILABLE] Server shutting down")


class IMAPDriver(SessionDriver):
    service = "imap"
    refusals = REFUSALS

    ctx: IMAPContext

    def __init__(self, conn: Connection, ctx: IMAPContext) -> None:
        super().__init__(conn, ctx)
        self.machine = IMAPMachine(ctx.settings, ctx.accounts, ctx.open_mailbox,
                                   tls_active=conn.tls, proxy_logins=self.proxy_logins)
        self.parser = CommandParser(max_literal=ctx.settings.max_append)
        self.counted_user = ""  # the user this session is counted against in the rate-keeper

    def error_code(self, result: Reply) -> str | None:
        return imap_error_code(result.text)

    def tls_started(self) -> None:
        # Whatever the parser held from before the handshake is not to be trusted.
        self.parser = CommandParser(max_literal=self.ctx.settings.max_append)

    async def replied(self, result: Reply) -> bool:
        if result.action is Action.IDLE:
            return await self._idle()
        if result.action is Action.COMPRESS:
            self.conn.flush()  # the OK goes out as it is, everything after it deflated
            self.conn.start_compression()
        return True

    async def closing(self) -> None:
        await self.in_thread(self.machine.close)
        if self.counted_user:
            await self.ctx.ratekeeper.close_session(USER_SESSIONS, self.counted_user)

    async def next_reply(self) -> Reply:
        machine = self.machine
        if machine.in_sasl:
            self.conn.flush()
            try:
                line = await self.conn.readline(MAX_SASL_LINE)
            except LineTooLong:
                return machine.sasl_too_long()
            result = await self.in_thread(machine.sasl_line, line)
        else:
            command = await self._read_command()
            if isinstance(command, Reply):
                return command
            on_loop = None if machine.runs_in_thread(command) else machine.handle_on_loop(command)
            while isinstance(on_loop, Blocking):  # a sync of a change made on the loop
                try:
                    await self.in_thread(on_loop.step)
                except Exception as exc:  # noqa: BLE001 - the change's to answer
                    on_loop = machine.resume_on_loop(on_loop, exc)
                else:
                    on_loop = machine.resume_on_loop(on_loop, None)
            if on_loop is None:  # it syncs, or on the loop it would have waited for a lock
                result = await self.in_thread(machine.handle, command)
            else:
                result = on_loop
        if result.action is Action.OPEN_MAILDROP:
            return await self._open_mailbox(result)
        return result

    async def _read_command(self) -> ParsedCommand | Reply:
        """The next whole command, literals included; or the BAD for one the parser refused."""
        conn = self.conn
        # Waiting for a new command, the session may be cut by a stopping worker at once.
        conn.interruptible = not conn.has_buffered_line()
        # From a literal's first octet to the end of its command, input is held to the minimum
        # transfer rate (each trickled byte would reset the idle timer); the command's lines,
        # literals left out, to the idle timeout from their first octet (conn.line_pending).
        # (An ExitStack only once a literal comes: most commands have none.)
        timed: contextlib.ExitStack | None = None
        try:
            while True:
                if self.parser.in_literal and timed is None:
                    timed = contextlib.ExitStack()
                    timed.enter_context(conn.transfer())
                chunk = await conn.read_chunk()
                conn.interruptible = False
                try:
                    command, used = self.parser.feed(chunk)
                except ParseError as exc:
                    conn.unread(chunk[exc.consumed:])
                    return self.machine.parse_error(exc)
                conn.unread(chunk[used:])
                if command is not None:
                    return command
                if self.parser.in_literal:
                    conn.line_paused()
                else:
                    conn.line_pending()
                # Waiting for more of this command: what was answered so far goes out first
                # (a BAD for the command whose literal is being skipped, too).
                conn.flush()
                if self.parser.wants_continuation:
                    conn.write(b"+ Ready for literal data\r\n")
        finally:
            conn.interruptible = False
            conn.line_done()
            if timed is not None:
                timed.close()

    async def _open_mailbox(self, pending: Reply) -> Reply:
        """After good credentials: count the user's sessions, then open the mailbox; or for
        a mailbox another node owns, hand the session over to it."""
        machine = self.machine
        if self.login_refused(machine.via):
            return self._unavailable(pending)
        try:
            owner = await self.owner_elsewhere()
            if owner is not None:
                untagged, completion = await self.log_in_at_owner(owner, imap_login)
                return Reply(pending.text + machine.login_proxied(untagged, completion).text,
                             Action.PROXY)
        except AccountsUnavailable as exc:
            log.error("%s: cannot find the node that owns the mailbox: %s", machine.user, exc)
            return self._unavailable(pending)
        except OwnerUnavailable:  # logged
            return self._unavailable(pending)
        verdict = await self.ctx.ratekeeper.open_session(
            USER_SESSIONS, machine.user, 0, self.ctx.max_sessions_per_user)
        if verdict is not OpenVerdict.OK:
            log.warning("%s: too many IMAP sessions, refused login from %s", machine.user,
                        self.conn.peer_ip)
            return Reply(pending.text + machine.login_refused(
                "Too many sessions for this user", "LIMIT").text)
        self.counted_user = machine.user
        result = await self.in_thread(machine.mailbox_opened)
        if machine.state is State.NOT_AUTHENTICATED:
            await self.ctx.ratekeeper.close_session(USER_SESSIONS, self.counted_user)
            self.counted_user = ""
            log.error("%s: cannot open the mailbox", machine.user)
        else:
            log.info("%s: IMAP login from %s%s", machine.user, self.conn.peer_ip,
                     f" via node {machine.via}" if machine.via else "")
        return Reply(pending.text + result.text, result.action)

    def _unavailable(self, pending: Reply) -> Reply:
        return Reply(pending.text + self.machine.login_refused(
            "Cannot open the mailbox, try again later", "UNAVAILABLE").text)

    async def _idle(self) -> bool:
        """RFC 2177: push changes until the client's DONE (which ends the wait for a line);
        whether the session goes on."""
        conn, machine = self.conn, self.machine
        conn.queue_reply(b"+ idling\r\n")
        conn.flush()
        keepalive = time.monotonic() + IDLE_KEEPALIVE
        line_reader = asyncio.ensure_future(conn.readline(MAX_SASL_LINE))
        try:
            while True:
                conn.interruptible = True
                done, _ = await asyncio.wait({line_reader}, timeout=IDLE_POLL)
                conn.interruptible = False
                if done:
                    break
                if self.ctx.worker.stopping:
                    return True  # the loop says goodbye
                updates = await self.in_thread(machine.idle_poll)
                now = time.monotonic()
                # An idling client is not idle; a dead one is found by the keepalive's write.
                conn.last_activity = now
                if not updates and now >= keepalive:
                    updates = b"* OK Still here\r\n"
                if updates:
                    keepalive = now + IDLE_KEEPALIVE
                    conn.write(updates)
                if machine.farewell:
                    return False
        finally:
            if not line_reader.done():
                line_reader.cancel()
        try:
            line = line_reader.result()
        except LineTooLong:
            line = b""
        done_reply = machine.idle_done(line)
        conn.queue_reply(done_reply.text)
        return done_reply.action is not Action.CLOSE

