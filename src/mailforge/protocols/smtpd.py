"""Drives one SMTP session: the transport's input into the state machine, bodies into the spool.

Replies to pipelined commands are collected and sent in one write once no complete command is
waiting (RFC 2920). DATA and BDAT bodies stream into the spool file chunk by chunk, so a
session's memory stays bounded whatever the message size. A body that cannot be written (a
full disk) is still read to its end, then refused with a temporary failure (452 4.3.1), and the
session goes on. What blocks (the accounts DB at MAIL and RCPT, a mailbox's quota file,
password checks) runs in the worker's thread pool, so that one slow lookup does not stall
every other session of the worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from .. import metrics
from ..auth.api import (AccountsUnavailable, Authenticator, Lookup, RecipientResolver,
                        RecipientStatus)
from .connection.driver import Refusals, SessionContext, SessionDriver
from .connection.transport import Connection, LineTooLong
from .hops import HopCounter
from ..policy.limits import Refusal, SendLimiter
from ..process import board
from ..queue.flow import FlowState
from ..queue.envelope import Envelope
from ..mailauth.inbound import DEFER, QUARANTINE, REJECT, InboundChecker, remove_forged_results
from ..queue.spool import Spool, SpoolError, SpoolFile
from .session import Action, Reply
from .smtp import SMTPMachine, SMTPSettings
from ..speedups import DotUnstuffer

log = logging.getLogger("mailforge.smtp")
T = TypeVar("T")


@dataclass(kw_only=True)
class SMTPContext(SessionContext):
    settings: SMTPSettings
    spool: Spool
    accounts: Authenticator
    recipients: RecipientResolver
    limiter: SendLimiter
    mailbox_full: Callable[[str], bool]  # over quota? (store.quota)
    in_flow_delay: float = 0.0  # [queue] in_flow_delay
    # SPF/DKIM/DMARC/ARC for mail over port 25 without AUTH; None: taken unchecked.
    checker: InboundChecker | None = None
    # [authentication] authserv_id where it is set: the one every node of a cluster names in
    # its Authentication-Results; "": each node names its own [server] hostname.
    shared_authserv_id: str = ""


REFUSALS = Refusals(
    blocked="421 4.7.0 {hostname} Error: your address is blocked for {seconds} s after repeated "
            "failures, try again then",
    ip_full="421 4.7.0 {hostname} Error: too many connections from your IP address",
    full="421 4.3.2 {hostname} Error: too many connections, try again later",
    shutdown="421 4.3.2 {hostname} Service shutting down, closing connection")


class SMTPDriver(SessionDriver):
    service = "smtp"
    refusals = REFUSALS

    ctx: SMTPContext
    machine: SMTPMachine

    def __init__(self, conn: Connection, ctx: SMTPContext) -> None:
        super().__init__(conn, ctx)
        self.machine = SMTPMachine(ctx.settings, ctx.accounts, conn.peer_ip, tls_active=conn.tls,
                                   cluster_peer=conn.peer_speaks_for_itself)
        self.body: Body | None = None  # the BDAT message being received

    def may_stop(self) -> bool:
        return not self.machine.in_transaction

    def flush_after(self, result: Reply) -> bool:
        return result.action is not Action.NONE

    async def replied(self, result: Reply) -> bool:
        if not self.machine.in_transaction:
            self._drop_chunks()
        return True

    async def closing(self) -> None:
        self._drop_chunks()

    async def next_reply(self) -> Reply:
        machine = self.machine
        starting = not machine.in_transaction
        self.conn.interruptible = starting
        try:
            line = await self.conn.readline(self.ctx.settings.max_line_length)
        except LineTooLong:
            return machine.line_too_long()
        finally:
            self.conn.interruptible = False
        if machine.checks_password(line):
            result = await self.in_thread(machine.handle, line)
        else:
            result = machine.handle(line)
        if machine.non_smtp:
            # The verb only: a line is never logged whole (it may hold a secret).
            self.record.event("non-SMTP command", logging.WARNING, command=machine.non_smtp)
        if result.action is Action.LOOK_UP_SENDER:
            lookup = await self._look_up(self.ctx.recipients.lookup_recipient, result.address)
            result = (machine.sender_found(lookup) if lookup is not None
                      else machine.lookup_unavailable())
        if starting and machine.in_transaction:  # MAIL began a transaction
            refused = await self._admit()
            if refused:
                return refused
        if result.action is Action.LOOK_UP_RECIPIENT:
            found = await self._look_up(self._look_up_recipient, result.address)
            return (machine.recipient_found(*found) if found is not None
                    else machine.lookup_unavailable())
        if result.action is Action.READ_DATA:
            self.conn.queue_reply(result.text)
            self.conn.flush()
            return await self._receive_data()
        if result.action is Action.READ_CHUNK:
            return await self._receive_chunk(result)
        if result.action is Action.CHECK_SENDER:
            refusal = await self._limit(commit=False)
            return self._limited(refusal) if refusal else Reply(result.text)
        return result

    async def _admit(self) -> Reply | None:
        """Backpressure, before MAIL is answered (queue/flow.py): a refusal while the queue is
        over its limit; while it grows past its backlog, the answer comes in_flow_delay late."""
        state = board.flow_state()
        if state is FlowState.REFUSING:
            metrics.inc("inflow_refused_total", service=self.ctx.meters.service)
            return self.machine.queue_full()
        if state is FlowState.DELAYING and self.ctx.in_flow_delay:
            metrics.inc("inflow_delayed_total", service=self.ctx.meters.service)
            await asyncio.sleep(self.ctx.in_flow_delay)
        return None

    async def _look_up(self, function: Callable[[str], T], address: str) -> T | None:
        """`function(address)` in the thread pool; None when the accounts database could not
        answer (the reply is then a temporary failure)."""
        try:
            return await self.in_thread(function, address)
        except AccountsUnavailable as exc:
            log.warning("lookup of %s: %s", address, exc)
            return None

    def _look_up_recipient(self, address: str) -> tuple[Lookup, bool]:
        """Where mail to `address` goes, and whether a mailbox it reaches is over quota (which
        may mean counting the mailbox's files again)."""
        lookup = self.ctx.recipients.lookup_recipient(address)
        over_quota = (lookup.status is RecipientStatus.OK
                      and any(map(self.ctx.mailbox_full, lookup.mailboxes)))
        return lookup, over_quota

    async def _limit(self, commit: bool) -> Refusal | None:
        user = self.machine.user
        if not user:
            return None
        return await self.ctx.limiter.check(user, self.conn.peer_ip, commit)

    def _limited(self, refusal: Refusal) -> Reply:
        return self.machine.sender_limited(refusal.code, refusal.enhanced, refusal.text)

    async def _receive_data(self) -> Reply:
        body = self._start_message()
        try:
            reader = DotUnstuffer()
            size, limit = 0, self.ctx.settings.max_message_size
            with self.conn.transfer():
                while not reader.done:
                    chunk = await self.conn.read_chunk()
                    data, used = reader.feed(chunk)
                    if used < len(chunk):
                        self.conn.unread(chunk[used:])
                    size += len(data)
                    if size <= limit and not reader.bare_newline:
                        body.write(data)
            refused = self.machine.body_done(size, reader.bare_newline) or self._refusal(body)
        except BaseException:
            body.abort()
            raise
        if refused:
            body.abort()
            return refused
        return await self._accept(body)

    async def _receive_chunk(self, request: Reply) -> Reply:
        remaining = request.size
        if request.keep and self.body is None:
            self.body = self._start_message()
        with self.conn.transfer():
            while remaining:
                chunk = await self.conn.read_up_to(remaining)
                remaining -= len(chunk)
                if request.keep:
                    assert self.body is not None
                    self.body.write(chunk)
        if self.body is not None and self.body.error is not None:
            # LAST or not, the message is lost: answered now, and the transaction is over.
            body, self.body = self.body, None
            return self.machine.queue_failed(body.error.no_space)
        result = self.machine.chunk_done(request.size, request.keep)
        if result is not None:
            return result
        body, self.body = self.body, None
        assert body is not None
        refused = self._refusal(body)
        if refused:
            body.abort()
            return refused
        return await self._accept(body)

    def _start_message(self) -> Body:
        transaction = self.machine.transaction
        assert transaction is not None
        # Port 25 without AUTH: held in memory until checked (bounded by max_message_size).
        # Not from a cluster node relaying to a mailbox's owner: the node that took the mail
        # from its sender checked it, and SPF would only see that node's address.
        checked = (self.ctx.checker is not None and not self.machine.user
                   and not self.conn.peer_speaks_for_itself)
        return Body(self.ctx.spool, transaction.sender, transaction.recipients,
                    self.machine.trace_header, held=checked or self._may_bear_forged_results())

    def _may_bear_forged_results(self) -> bool:
        """Is this a cluster node relaying a message that may still hold Authentication-Results
        headers claiming to be ours (RFC 8601 5)? The node that checked it removed those
        naming itself and added its own. With a shared authserv-id that is all of them. Else
        it named its [server] hostname, the EHLO name it relays under: where ours is another,
        any naming us came from its sender, and our checks that would remove them are skipped
        for a node's mail."""
        return (self.conn.peer_speaks_for_itself and not self.ctx.shared_authserv_id
                and self.machine.helo_name.lower() != self.machine.settings.hostname.lower())

    def _refusal(self, body: Body) -> Reply | None:
        """Once the whole body is in: why it cannot be queued, if it cannot."""
        if body.error is not None:
            return self.machine.queue_failed(body.error.no_space)
        if body.hops.exceeded:
            return self.machine.too_many_hops()
        return None

    async def _accept(self, body: Body) -> Reply:
        """Queue the message received whole. A held one goes in without the
        Authentication-Results headers that claim to be ours: checked first (inbound.py),
        with our own header on top, or refused by DMARC policy; or, relayed by a cluster
        node, with the verdict of the node that checked it."""
        junk = False
        if body.held is not None:
            message = bytes(body.held)
            if self.conn.peer_speaks_for_itself:
                body.release(remove_forged_results(message, self.machine.settings.hostname))
            else:
                checker, transaction = self.ctx.checker, self.machine.transaction
                assert checker is not None and transaction is not None
                verdict = await self.in_thread(checker.check, message, self.conn.peer_ip,
                                               self.machine.helo_name, transaction.sender)
                self.record.event("mail authentication", action=verdict.action,
                                  **verdict.results)
                if verdict.action in (REJECT, DEFER):
                    body.abort()
                    return self.machine.refused_by_policy(verdict.action == DEFER, verdict.reason)
                body.release(verdict.header + remove_forged_results(message, checker.authserv_id))
                junk = verdict.action == QUARANTINE
            refused = self._refusal(body)
            if refused:
                body.abort()
                return refused
        return await self._commit(body.take(), junk)

    async def _commit(self, spool_file: SpoolFile, junk: bool = False) -> Reply:
        transaction = self.machine.transaction
        assert transaction is not None
        envelope = Envelope(
            id=spool_file.id, sender=transaction.sender, recipients=list(transaction.recipients),
            received_at=time.time(), client_ip=self.conn.peer_ip, helo=self.machine.helo_name,
            smtputf8=transaction.smtputf8, body_8bit=transaction.body_8bit,
            envid=transaction.envid, ret=transaction.ret, notify=dict(transaction.notify),
            orcpt=dict(transaction.orcpt), sign=bool(self.machine.user),
            # Quarantined by our checks, or by the node that relayed it to us, its owner.
            junk=junk or transaction.junk,
            requiretls=transaction.requiretls)
        refusal = await self._limit(commit=True)
        if refusal:
            spool_file.abort()
            return self._limited(refusal)
        try:
            await spool_file.commit(envelope)
        except SpoolError as exc:
            log.error("%s: queue write failed: %s", spool_file.id, exc)
            spool_file.abort()
            return self.machine.queue_failed(exc.no_space)
        self.record.message_received(id=spool_file.id, sender=transaction.sender,
                                     recipients=",".join(transaction.recipients), size=envelope.size)
        return self.machine.queued(spool_file.id)

    def _drop_chunks(self) -> None:
        if self.body is not None:
            self.body.abort()
            self.body = None


class Body:
    """A message body on its way into the spool, and the count of its Received: hops.

    A failed write (the disk is full) is logged and kept, not raised: what was written is
    removed at once, and the driver reads the rest of the body and drops it, so that it stays
    in step with the client, then answers the failure.
    """

    def __init__(self, spool: Spool, sender: str, recipients: list[str],
                 trace_header: Callable[[str], bytes], held: bool = False) -> None:
        self.hops = HopCounter()
        self.error: SpoolError | None = None
        # The message as received, while it waits for its checks; None: straight to the spool.
        self.held: bytearray | None = bytearray() if held else None
        self._file: SpoolFile | None = spool.create(sender, recipients)
        self._write(trace_header(self._file.id))

    def write(self, data: bytes) -> None:
        if self.held is not None:
            self.held += data
            self.hops.feed(data)
        elif self._write(data):
            self.hops.feed(data)

    def release(self, message: bytes) -> None:
        """The checked message (its new headers on top) into the spool."""
        self.held = None
        self._write(message)

    def _write(self, data: bytes) -> bool:
        if self._file is None:
            return False
        try:
            self._file.write(data)
        except SpoolError as exc:
            log.error("%s: queue write failed: %s", self._file.id, exc)
            self.error = exc
            self.abort()
            return False
        return True

    def take(self) -> SpoolFile:
        """The spool file, to commit: the body was received whole and written."""
        assert self._file is not None and self.error is None
        spool_file, self._file = self._file, None
        return spool_file

    def abort(self) -> None:
        self.held = None
        if self._file is not None:
            self._file.abort()
            self._file = None

