"""Outbound message limits: the regulator that keeps a hacked account from becoming a spam cannon.

An authenticated sender may send at most N messages per interval. The limit is the sender's
own, else its domain's, else the system's (accounts database, set by `mailforge limits`);
the count is kept in the rate-keeper, so every worker of every SMTP service shares it.
At the limit, "throttle" defers further messages with 451 until the window allows one more,
and "disable" stops the account from sending (550) until `mailforge user enable`. Either way
the administrator gets one message per event, not one per refused message.

SMTP asks twice per message: at MAIL FROM without counting (so a limited sender does not send
its body for nothing), and before the message is queued, counting it: that second, atomic
step is what makes the limit exact however many sessions race for the last slot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from ..auth.api import AccountsUnavailable, SendLimit, SendLimitSource
from ..ratekeeper.client import RateKeeperClient

log = logging.getLogger("mailforge.limits")

THROTTLE, DISABLE = "throttle", "disable"


@dataclass(frozen=True, slots=True)
class Refusal:
    code: int
    enhanced: str
    text: str


THROTTLED = Refusal(451, "4.7.1", "sending limit reached, try again later")
# The accounts database could not say which limit applies: the sender tries again later.
UNKNOWN_LIMIT = Refusal(451, "4.3.0", "cannot check the sending limit now, try again later")
DISABLED = Refusal(550, "5.7.1", "sending is disabled for this account; contact your "
                                 "administrator")

# Queues a message the server writes itself: (recipient, message with CRLF line ends).
Notifier = Callable[[str, bytes], Awaitable[object]]


@dataclass
class SendLimiter:
    send_limits: SendLimitSource
    ratekeeper: RateKeeperClient
    executor: Executor
    hostname: str
    notify: str           # the administrator's address; "" = a log line only
    queue_notice: Notifier

    async def check(self, sender: str, client_ip: str, commit: bool) -> Refusal | None:
        """None when `sender` (a logged-in user) may send one more message; else the refusal.
        With `commit`, the message is counted."""
        loop = asyncio.get_running_loop()
        try:
            status = await loop.run_in_executor(self.executor, self.send_limits.send_status, sender)
        except AccountsUnavailable as exc:
            log.warning("outbound limit of %s: %s", sender, exc)
            return UNKNOWN_LIMIT
        if status.disabled:
            return DISABLED
        limit = status.limit
        if limit is None:
            return None
        allowed, new_event = await self.ratekeeper.take_send(sender, limit.messages,
                                                             limit.interval, commit)
        if allowed:
            return None
        if limit.action == DISABLE:
            await loop.run_in_executor(self.executor, self.send_limits.send_disable, sender)
        if new_event:
            await self._report(sender, client_ip, limit)
        return DISABLED if limit.action == DISABLE else THROTTLED

    async def _report(self, sender: str, client_ip: str, limit: SendLimit) -> None:
        what = ("sending is disabled until `mailforge user enable`" if limit.action == DISABLE
                else "further messages are deferred until the window allows")
        log.warning("%s reached the outbound limit of %d messages per %g s (%s limit) from %s: %s",
                    sender, limit.messages, limit.interval, limit.scope, client_ip, what)
        if not self.notify:
            return
        try:
            await self.queue_notice(self.notify, self._notice(sender, client_ip, limit, what))
        except Exception as exc:  # the refusal stands even when the notice cannot be queued
            log.error("cannot queue the limit notice for %s to %s: %s", sender, self.notify, exc)

    def _notice(self, sender: str, client_ip: str, limit: SendLimit, what: str) -> bytes:
        notice = EmailMessage()
        notice["From"] = f"Mail Delivery System <MAILER-DAEMON@{self.hostname}>"
        notice["To"] = self.notify
        notice["Subject"] = f"Outbound limit reached by {sender}"
        notice["Date"] = formatdate(localtime=True)
        notice["Message-ID"] = make_msgid(domain=self.hostname)
        notice["Auto-Submitted"] = "auto-generated"
        scope = "system" if limit.scope == "system" else f"{limit.scope} {limit.name}"
        notice.set_content(
            f"The account {sender} sent {limit.messages} messages within {limit.interval:g} "
            f"seconds, the outbound limit that applies to it ({scope}).\n"
            f"Last client address: {client_ip}\n\n"
            f"Action: {limit.action}: {what}.\n"
            "If the account was not expected to send this much, its password may be known to "
            "someone else: change it (`mailforge user passwd`).\n")
        return notice.as_bytes(policy=notice.policy.clone(linesep="\r\n"))
