"""Drives one POP3 session: the transport's input into the state machine, the maildrop's
messages out to the client.

Disk work (locking and listing the maildrop, reading a message, the deletes at QUIT) runs in
the worker's thread pool so that one large mailbox does not stall every other session. The
maildrop lock is released however the session ends; a session that ends without QUIT
(dropped, timed out, worker stopping) deletes nothing (RFC 1939 6).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ..auth.accounts import Accounts
from ..policy.abuse import AbuseGuard
from ..store.pop3box import Maildrop, MaildropBusy
from .pop3 import POP3Machine, POP3Settings
from .session import Action, Reply, StopSignal
from .transport import Connection, ConnectionClosed, LineTooLong

log = logging.getLogger("mailforge.pop3")
T = TypeVar("T")

# The longest line read: RFC 2449 4 allows commands of 255 octets, but AUTH answers (base64
# SCRAM or PLAIN messages) are longer; auth.sasl refuses them past its own limit.
MAX_LINE = 8192 + 2


@dataclass
class POP3Context:
    """What every session of one worker shares."""

    settings: POP3Settings
    accounts: Accounts
    store_dir: Path
    executor: Executor
    worker: StopSignal
    guard: AbuseGuard
    tls_context: ssl.SSLContext | None = None


def refusal(verdict: str, hostname: str) -> bytes:
    """The reply for a connection over a cap or from a blocked address (rate-keeper verdict)."""
    if verdict == "blocked":
        return b"-ERR [SYS/TEMP] Too many failed attempts from your address, try again later\r\n"
    if verdict == "ip_full":
        return b"-ERR [SYS/TEMP] Too many connections from your IP address\r\n"
    return b"-ERR [SYS/TEMP] Too many connections, try again later\r\n"


def shutdown_reply(hostname: str) -> bytes:
    return b"-ERR [SYS/TEMP] Server shutting down\r\n"


def message_lines(crlf: bytes, lines: int | None) -> bytes:
    """The multi-line body of RETR (lines None) or TOP: byte-stuffed, ended by "." (RFC 1939 3).

    TOP sends the header, the blank line and the first `lines` lines of the body.
    """
    if lines is not None:
        crlf = _top(crlf, lines)
    stuffed = crlf.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    # A file without a final line end (not one of ours) still needs the "." on a line of its own.
    if stuffed and not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"


def _top(crlf: bytes, lines: int) -> bytes:
    # Prefixed with CRLF so that a message starting with the blank line (no header) is found.
    blank = (b"\r\n" + crlf).find(b"\r\n\r\n")
    if blank < 0:
        return crlf  # all header
    head_end = blank + 2
    end = head_end
    for _ in range(lines):
        next_end = crlf.find(b"\r\n", end)
        if next_end < 0:
            return crlf
        end = next_end + 2
    return crlf[:end]


class POP3Driver:
    def __init__(self, conn: Connection, ctx: POP3Context) -> None:
        self.conn = conn
        self.ctx = ctx
        self.machine = POP3Machine(ctx.settings, ctx.accounts, tls_active=conn.tls)
        self.maildrop: Maildrop | None = None

    async def run(self) -> None:
        conn, machine = self.conn, self.machine
        conn.idle_reply = machine.idle_reply()
        conn.write(machine.greeting())
        try:
            while True:
                if self.ctx.worker.stopping:
                    self.conn.queue_reply(shutdown_reply(self.ctx.settings.hostname))
                    return
                result = await self._next_reply()
                if result.failure is not None and await self.ctx.guard.answer_failure(
                        conn, "pop3", result, refusal("blocked", self.ctx.settings.hostname)):
                    return
                if result.text:
                    self.conn.queue_reply(result.text)
                if result.action is Action.CLOSE:
                    return
                if result.action is Action.STARTTLS:
                    self.conn.flush()
                    assert self.ctx.tls_context is not None
                    await conn.start_tls(self.ctx.tls_context)
                    machine.tls_started()
                    continue
                # Replies to pipelined commands (RFC 2449 6.6) go out together.
                if not conn.has_buffered_line():
                    self.conn.flush()
        except ConnectionClosed:
            pass
        finally:
            self.conn.flush()
            if self.maildrop is not None:
                self.maildrop.close()

    async def _next_reply(self) -> Reply:
        # Waiting for a command, the session may always be cut: nothing is changed before QUIT.
        self.conn.interruptible = True
        try:
            line = await self.conn.readline(MAX_LINE)
        except LineTooLong:
            return self.machine.line_too_long()
        finally:
            self.conn.interruptible = False
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
        try:
            self.maildrop = await self._in_thread(Maildrop.for_user, self.ctx.store_dir, user)
        except MaildropBusy:
            log.info("%s: maildrop in use, refused login from %s", user, self.conn.peer_ip)
            return self.machine.maildrop_busy()
        except OSError as exc:
            log.error("%s: cannot open maildrop: %s", user, exc)
            return self.machine.maildrop_failed()
        log.info("%s: POP3 login from %s, %d messages", user, self.conn.peer_ip,
                 len(self.maildrop.messages))
        return self.machine.maildrop_opened([(m.uid, m.size) for m in self.maildrop.messages])

    async def _send_message(self, request: Reply) -> Reply:
        assert self.maildrop is not None
        try:
            crlf = await self._in_thread(self.maildrop.read, request.message)
        except OSError as exc:
            log.error("%s: cannot read message %d: %s", self.machine.user, request.message + 1, exc)
            return Reply(b"-ERR [SYS/TEMP] Cannot read the message\r\n")
        self.conn.queue_reply(request.text)
        return Reply(message_lines(crlf, request.lines))

    async def _update(self) -> Reply:
        assert self.maildrop is not None
        deleted = sorted(self.machine.deleted)
        failed = await self._in_thread(self.maildrop.delete, deleted)
        if failed:
            log.error("%s: %d of %d deleted messages not removed", self.machine.user, failed,
                      len(deleted))
        return self.machine.updated(failed)

    async def _in_thread(self, function: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.ctx.executor, function, *args)



async def serve(conn: Connection, ctx: POP3Context) -> None:
    await POP3Driver(conn, ctx).run()
