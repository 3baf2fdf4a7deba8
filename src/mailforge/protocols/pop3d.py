"""Drives one POP3 session: the transport's input into the state machine, the maildrop's
messages out to the client.

Disk work (locking and listing the maildrop, reading a message, the deletes at QUIT) runs in
the worker's thread pool so that one large mailbox does not stall every other session. The
maildrop lock is released however the session ends; a session that ends without QUIT
(dropped, timed out, worker stopping) deletes nothing (RFC 1939 6).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from ..auth.api import AccountsUnavailable, APOPAuthenticator
from .connection.driver import Refusals, SessionContext, SessionDriver
from .connection.transport import Connection, LineTooLong
from .connection.upstream import OwnerUnavailable
from .ownerlogin import pop3_login
from .pop3 import POP3Machine, POP3Settings
from .session import Action, Reply
from ..store.api import Maildrop, MaildropBusy, MessageGone

log = logging.getLogger("mailforge.pop3")

# How much of a message RETR reads at a time: sessions' memory stays bounded by it.
READ_CHUNK = 64 * 1024
# The longest line read: RFC 2449 4 allows commands of 255 octets, but AUTH answers (base64
# SCRAM or PLAIN messages) are longer; auth.sasl refuses them past its own limit.
MAX_LINE = 8192 + 2


@dataclass(kw_only=True)
class POP3Context(SessionContext):
    settings: POP3Settings
    accounts: APOPAuthenticator
    # A canonical address → its maildrop, locked (MaildropBusy when another session has it).
    open_maildrop: Callable[[str], Maildrop]


REFUSALS = Refusals(
    blocked="-ERR [SYS/TEMP] Your address is blocked for {seconds} s after repeated failures, "
            "try again then",
    ip_full="-ERR [SYS/TEMP] Too many connections from your IP address",
    full="-ERR [SYS/TEMP] Too many connections, try again later",
    shutdown="-ERR [SYS/TEMP] Server shutting down")


class MessageLines:
    """The multi-line body of RETR (lines None) or TOP, made as the file is read: line ends
    made CRLF, lines byte-stuffed, ended by "." (RFC 1939 3). TOP sends the header, the blank
    line and the first `lines` lines of the body.

    `feed` takes the file's bytes in chunks of any size and returns what can be sent; `finish`
    returns the rest. Only a partial line is held between chunks, so a message of any size is
    sent with one chunk in memory.
    """

    def __init__(self, lines: int | None = None) -> None:
        self._body_lines = lines
        self._in_header = lines is not None
        self._tail = b""
        self.done = False  # TOP has sent all it must: the rest of the file is not needed

    def feed(self, data: bytes) -> bytes:
        if self.done:
            return b""
        data = self._tail + data
        cut = data.rfind(b"\n") + 1
        self._tail = data[cut:]
        return self._lines(data[:cut])

    def finish(self) -> bytes:
        # A file without a final line end (not one of ours) still needs the "." on a line of its own.
        last = b"" if self.done or not self._tail else self._lines(self._tail + b"\n")
        self.done = True
        return last + b".\r\n"

    def _lines(self, block: bytes) -> bytes:
        """Whole lines (ending in LF or CRLF), from the start of a line."""
        if not block:
            return b""
        if self._body_lines is not None:
            block = self._top_part(block)
        crlf = block.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        # Every block starts a line, so its first line is stuffed as the others are.
        return (b"\r\n" + crlf).replace(b"\r\n.", b"\r\n..")[2:]

    def _top_part(self, block: bytes) -> bytes:
        assert self._body_lines is not None
        end = 0
        while end < len(block):
            if not self._in_header and self._body_lines == 0:
                self.done = True
                break
            line_end = block.index(b"\n", end) + 1
            line = block[end:line_end]
            if self._in_header:
                self._in_header = line not in (b"\n", b"\r\n")
            else:
                self._body_lines -= 1
            end = line_end
        if not self._in_header and self._body_lines == 0:
            self.done = True
        return block[:end]


class POP3Driver(SessionDriver):
    service = "pop3"
    refusals = REFUSALS

    ctx: POP3Context

    def __init__(self, conn: Connection, ctx: POP3Context) -> None:
        super().__init__(conn, ctx)
        self.machine = POP3Machine(ctx.settings, ctx.accounts, tls_active=conn.tls,
                                   proxy_logins=self.proxy_logins)
        self.maildrop: Maildrop | None = None

    async def closing(self) -> None:
        if self.maildrop is not None:
            self.maildrop.close()

    async def next_reply(self) -> Reply:
        # Waiting for a command, the session may always be cut: nothing is changed before QUIT.
        self.conn.interruptible = True
        try:
            line = await self.conn.readline(MAX_LINE)
        except LineTooLong:
            return self.machine.line_too_long()
        finally:
            self.conn.interruptible = False
        if self.machine.checks_password(line):
            result = await self.in_thread(self.machine.handle, line)
        else:
            result = self.machine.handle(line)
        if result.action is Action.OPEN_MAILDROP:
            return await self._open_maildrop()
        if result.action is Action.SEND_MESSAGE:
            return await self._send_message(result)
        if result.action is Action.UPDATE:
            return await self._update()
        return result

    async def _open_maildrop(self) -> Reply:
        user = self.machine.user
        if self.login_refused(self.machine.via):
            return self.machine.maildrop_failed()
        try:
            owner = await self.owner_elsewhere()
            if owner is not None:
                return Reply(await self.log_in_at_owner(owner, pop3_login), Action.PROXY)
        except AccountsUnavailable as exc:
            log.error("%s: cannot find the node that owns the mailbox: %s", user, exc)
            return self.machine.maildrop_failed()
        except OwnerUnavailable:  # logged
            return self.machine.maildrop_failed()
        try:
            self.maildrop = await self.in_thread(self.ctx.open_maildrop, user)
        except MaildropBusy:
            log.info("%s: maildrop in use, refused login from %s", user, self.conn.peer_ip)
            return self.machine.maildrop_busy()
        except (OSError, AccountsUnavailable) as exc:
            log.error("%s: cannot open maildrop: %s", user, exc)
            return self.machine.maildrop_failed()
        log.info("%s: POP3 login from %s%s, %d messages", user, self.conn.peer_ip,
                 f" via node {self.machine.via}" if self.machine.via else "",
                 len(self.maildrop.messages))
        return self.machine.maildrop_opened([(m.uid, m.size) for m in self.maildrop.messages])

    async def _send_message(self, request: Reply) -> Reply:
        """RETR/TOP: the reply, then the message streamed from its file, one chunk at a time."""
        assert self.maildrop is not None
        try:
            chunk, message = await self.in_thread(self.maildrop.read_start, request.message,
                                                  READ_CHUNK)
        except MessageGone:  # expunged over IMAP since this session's login
            return Reply(b"-ERR The message was deleted by another session\r\n")
        except OSError as exc:
            log.error("%s: cannot read message %d: %s", self.machine.user, request.message + 1, exc)
            return Reply(b"-ERR [SYS/TEMP] Cannot read the message\r\n")
        lines = MessageLines(request.lines)
        self.conn.queue_reply(request.text + lines.feed(chunk))
        if message is None:  # all of it read already
            return Reply(lines.finish())
        try:
            self.conn.flush()
            while not lines.done:  # TOP may want no more of the file
                await self.conn.drain()
                chunk = await self.in_thread(message.read, READ_CHUNK)
                if not chunk:
                    break
                self.conn.write(lines.feed(chunk))
            return Reply(lines.finish())
        finally:
            message.close()

    async def _update(self) -> Reply:
        assert self.maildrop is not None
        deleted = sorted(self.machine.deleted)
        failed = await self.in_thread(self.maildrop.delete, deleted)
        if failed:
            log.error("%s: %d of %d deleted messages not removed", self.machine.user, failed,
                      len(deleted))
        return self.machine.updated(failed)

