"""What a delivery attempt settles beyond local copies: relaying, permanent failures, expiry
and the DSNs they owe. DeliveryAgent (delivery.py) holds a Settler and hands it the entries
it claimed; the Settler never reaches back into the agent.

A permanent failure, or a temporary one past max_queue_time, is reported to the sender in
one DSN per message (notices.py), queued and synced before the message's entry changes; a
message from the null sender is never reported on: it goes to badmail/ instead.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Protocol

from .. import metrics
from ..config import Config
from ..durable import fsync_dir, unlink_quietly, write_new_file
from ..mailauth.sealing import Sealer
from ..mailauth.signing import Signer
from . import dsn, retry
from .entry import Copy, Entry
from .envelope import encode
from .notices import notices_for
from .outbound import OutboundRunner, Result
from .relay import Message
from .spool import ACTIVE, ENV_SUFFIX, MSG_SUFFIX, write_entry_file

log = logging.getLogger("mailforge.delivery")


class CopySink(Protocol):
    """Where a badmail copy goes, to be synced and placed with the attempt's other copies
    (delivery.CopyBatch)."""

    def add(self, copy: Copy) -> None: ...


class Settler:
    """Settles the recipients of claimed entries that no local copy settles; what is left in
    Entry.failed is for the agent to retry."""

    def __init__(self, config: Config, outbound: OutboundRunner,
                 clock: Callable[[], float], signer: Signer | None = None,
                 sealer: Sealer | None = None) -> None:
        self.config = config
        self.outbound = outbound
        self.signer = signer
        self.sealer = sealer
        self.clock = clock
        self.active = config.queue_dir / ACTIVE

    def refuse(self, entry: Entry, rcpt: str, copies: CopySink, status: str, reason: str,
               remote_mta: str = "") -> None:
        """A permanent failure: reported to the sender, or kept in badmail/ when there is none
        to report to (a bounce that cannot be delivered)."""
        if not entry.envelope.sender:
            why = f"{remote_mta} said: {reason}" if remote_mta else f"{status} {reason}"
            copies.add(self._badmail_copy(entry, rcpt, why))
            return
        log.warning("bounced id=%s from=<%s> to=<%s> status=%s reason=%s", entry.id,
                    entry.envelope.sender, rcpt, status, reason)
        entry.outcomes.failed[rcpt] = dsn.RecipientStatus(rcpt, dsn.FAILED, status, reason,
                                                          remote_mta)

    def _badmail_copy(self, entry: Entry, rcpt: str, reason: str) -> Copy:
        """Kept as queued (Maildir form) beside a note of why, for an operator."""
        # Named by attempt too: a deferral shortens the recipient list, and so the indexes.
        env = entry.envelope
        badmail_dir = self.config.badmail_dir
        stem = f"{entry.id}.{env.attempts}.{env.recipients.index(rcpt)}"
        reason_path = badmail_dir / (stem + ".reason")
        msg_path = badmail_dir / (stem + MSG_SUFFIX)
        note = (f"id: {entry.id}\nsender: <{entry.envelope.sender}>\nrecipient: {rcpt}\n"
                f"reason: {reason}\n")
        unlink_quietly(reason_path)  # left by an attempt that crashed before its sync
        unlink_quietly(msg_path)
        fds = [write_new_file(reason_path, note.encode())]
        try:
            fds.append(write_new_file(msg_path, b"".join(entry.chunks())))
        except BaseException:
            os.close(fds[0])
            unlink_quietly(reason_path)
            raise
        log.warning("badmail id=%s from=<%s> to=<%s> reason=%s", entry.id,
                    entry.envelope.sender, rcpt, reason)
        return Copy(entry, rcpt, fds, [reason_path, msg_path], None, badmail_dir)

    def relay(self, entries: list[Entry], heartbeat: Callable[[], None]) -> None:
        """Relay the remote recipients; temporary failures are left for a retry."""
        if not entries:
            return
        try:
            messages = [self._outgoing(entry) for entry in entries]
        except OSError as exc:  # the queue file is unreadable now: all wait for a retry
            for entry in entries:
                entry.failed.update(dict.fromkeys(entry.remote, str(exc)))
            return
        pinned = {mailbox: route for entry in entries
                  for mailbox, route in entry.owner_routes.items()}
        results = self.outbound.deliver(messages, heartbeat, pinned)
        for entry in entries:
            for address in entry.remote:
                self._record(entry, entry.reached_by.get(address, address),
                             results[entry.id][address])

    def _outgoing(self, entry: Entry) -> Message:
        message = entry.outgoing()
        env = entry.envelope
        if env.sign and self.signer:
            message.data = self.signer.sign(message.data)
        elif env.seal_domain and self.sealer:
            message.data = self.sealer.seal(message.data, env.seal_domain)
        return message

    def _record(self, entry: Entry, rcpt: str, result: Result) -> None:
        if result.accepted:
            metrics.inc("messages_delivered_total", via="relay")
            metrics.observe("delivery_latency_seconds",
                            max(0.0, time.time() - entry.envelope.received_at), via="relay")
            if not result.dsn_passed:  # a DSN-aware next hop reports success itself
                entry.outcomes.succeeded[rcpt] = dsn.RecipientStatus(
                    rcpt, dsn.RELAYED, result.status, result.text, result.remote_mta)
        elif result.permanent:
            metrics.inc("messages_bounced_total", via="relay")
            entry.outcomes.failed[rcpt] = dsn.RecipientStatus(
                rcpt, dsn.FAILED, result.status, result.text, result.remote_mta)
        else:
            entry.failed[rcpt] = result.describe()
            if result.untried:
                entry.untried.add(rcpt)

    def expire_or_report(self, entry: Entry, copies: CopySink) -> None:
        """Temporary failures of a message past max_queue_time become permanent, and so do
        full mailboxes past quota_full_bounce_after; a permanent remote failure of a message
        from <> is kept in badmail/."""
        env, config = entry.envelope, self.config.delivery
        now = self.clock()
        age = now - env.received_at
        if retry.expired(now, env.received_at, config.quota_full_bounce_after):
            for rcpt in sorted(entry.over_quota.intersection(entry.failed)):
                del entry.failed[rcpt]
                self.refuse(entry, rcpt, copies, "5.2.2",
                            f"mailbox full: still over its quota after {age:.0f} s in the queue")
        if retry.expired(now, env.received_at, config.max_queue_time):
            for rcpt, why in list(entry.failed.items()):
                del entry.failed[rcpt]
                self.refuse(entry, rcpt, copies, "4.4.7",
                            f"message expired after {age:.0f} s in the queue; last error: {why}")
        if not env.sender:
            for rcpt, status in list(entry.outcomes.failed.items()):
                del entry.outcomes.failed[rcpt]
                self.refuse(entry, rcpt, copies, status.status, status.diagnostic,
                            status.remote_mta)

    def give_up_after(self, entry: Entry, rcpt: str) -> float:
        """The age at which expire_or_report bounces a recipient still failing: the retry
        schedule ends there and a delay notice announces it."""
        config = self.config.delivery
        if rcpt in entry.over_quota:
            return min(config.max_queue_time, config.quota_full_bounce_after)
        return config.max_queue_time

    def send_notices(self, entry: Entry, remaining: list[str]) -> None:
        """Queue the DSNs this attempt owes, durably, before the entry changes."""
        env, config = entry.envelope, self.config.delivery
        now = self.clock()
        local_done = [r for r in env.recipients
                      if r not in remaining and r not in entry.remote and r not in entry.outcomes.failed]
        for rcpt in local_done:
            entry.outcomes.succeeded[rcpt] = dsn.RecipientStatus(rcpt, dsn.DELIVERED, "2.0.0",
                                                                 "delivered to mailbox")
        for alias in entry.expanded:  # in place of its copies' "delivered"
            entry.outcomes.succeeded[alias] = dsn.RecipientStatus(alias, dsn.EXPANDED, "2.0.0",
                                                                  "alias expanded")
        delay_due = (config.delay_notice > 0 and not env.delay_notified
                     and now - env.received_at >= config.delay_notice)
        delayed = {r: entry.failed[r] for r in remaining if r in entry.failed} if delay_due else {}
        if not (entry.outcomes.failed or delayed or self._wants_success(entry)):
            return
        retry_until = {r: env.received_at + self.give_up_after(entry, r) for r in delayed}
        notices = notices_for(env, entry.returned(), entry.outcomes, delayed,
                              self.config.server.hostname, now, retry_until)
        for alias in entry.expanded:  # reported on for good: its later copies are not
            env.notify[alias] = dsn.without_success(env.notify[alias])
        queue_dir = self.config.queue_dir
        for notice in notices:
            write_entry_file(queue_dir, notice.envelope.id, MSG_SUFFIX, notice.message)
            write_entry_file(queue_dir, notice.envelope.id, ENV_SUFFIX, encode(notice.envelope))
            log.info("notice id=%s about=%s to=<%s>", notice.envelope.id, entry.id, env.sender)
        if notices:
            fsync_dir(self.active)
        env.delay_notified |= bool(delayed)

    @staticmethod
    def _wants_success(entry: Entry) -> bool:
        notify = entry.envelope.notify
        return any(dsn.wants(notify.get(r, ""), "SUCCESS") for r in entry.outcomes.succeeded)
