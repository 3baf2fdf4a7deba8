"""Turn what happened to a queued message's recipients into DSN messages to queue.

One notice per message per event (a failure, a delay, successes), to the envelope sender,
never to the null sender, only for recipients whose NOTIFY asks for it (RFC 3461 4.1).
Its queue id is derived from the message's id, the attempt and the recipients it reports on,
so an attempt repeated after a crash rewrites the same notice instead of sending a second one.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from . import dsn
from .envelope import Envelope

KIND_LETTER = {dsn.FAILED: "B", dsn.DELAYED: "D", dsn.DELIVERED: "S", dsn.RELAYED: "S",
               dsn.EXPANDED: "S"}
EVENT = {dsn.FAILED: "FAILURE", dsn.DELAYED: "DELAY", dsn.DELIVERED: "SUCCESS",
         dsn.RELAYED: "SUCCESS", dsn.EXPANDED: "SUCCESS"}


@dataclass
class Outcomes:
    """Per recipient, what one delivery attempt settled (beside those left to retry)."""

    failed: dict[str, dsn.RecipientStatus] = field(default_factory=dict)
    succeeded: dict[str, dsn.RecipientStatus] = field(default_factory=dict)


@dataclass
class Notice:
    envelope: Envelope
    message: bytes  # queue form: delivery headers, then the report


def notices_for(env: Envelope, message: bytes, outcomes: Outcomes, delayed: dict[str, str],
                reporting_mta: str, now: float, retry_until: dict[str, float]) -> list[Notice]:
    """The notices an attempt owes; `delayed` is rcpt → last error, for a delay notice, and
    `retry_until` rcpt → when the queue gives up on it."""
    if not env.sender:
        return []
    original = dsn.Original(env.id, env.sender, env.received_at, message, env.envid, env.ret)
    groups = [
        [s for s in outcomes.failed.values() if _wants(env, s)],
        [s for s in outcomes.succeeded.values() if _wants(env, s)],
        [dsn.RecipientStatus(r, dsn.DELAYED, _status_of(why), why, orcpt=env.orcpt.get(r, ""),
                             retry_until=retry_until[r])
         for r, why in delayed.items() if dsn.wants(env.notify.get(r, ""), "DELAY")],
    ]
    notices = []
    for statuses in groups:
        if not statuses:
            continue
        for s in statuses:
            s.orcpt = s.orcpt or env.orcpt.get(s.recipient, "")
        report = dsn.build_report(original, statuses, reporting_mta, now)
        notices.append(_queued(env, statuses, report, now))
    return notices


def _wants(env: Envelope, status: dsn.RecipientStatus) -> bool:
    return dsn.wants(env.notify.get(status.recipient, ""), EVENT[status.action])


def _status_of(why: str) -> str:
    """The enhanced code at the start of an error text we keep, else a generic one."""
    for word in why.replace(":", " ").split():
        if word[:2] == "4." and word.count(".") == 2:
            return word
    return "4.0.0"


def notice_id(entry_id: str, attempts: int, action: str, recipients: list[str]) -> str:
    """The queue id of the notice of `action` about `recipients` that an attempt on the entry
    owes (`attempts`: the envelope's count before it)."""
    # The attempt alone does not name a notice: one that did not count (no connection to
    # spare, delivery.py) leaves `attempts` as it was, and the next attempt's notice would
    # replace this one while it waits in the queue. A recipient is reported on once for each
    # kind of notice, so its recipients tell attempts apart; a repeat after a crash reports on
    # the same ones and rewrites the same notice.
    about = zlib.crc32("\n".join(sorted(recipients)).encode())
    return f"{entry_id}-{KIND_LETTER[action]}{attempts}-{about:08x}"


def _queued(env: Envelope, statuses: list[dsn.RecipientStatus], report: bytes,
            now: float) -> Notice:
    about = [s.recipient for s in statuses]
    prefix = f"Return-Path: <>\nDelivered-To: {env.sender}\n".encode()
    message = prefix + report
    # RFC 8689 4.4: a notice tells what the message was (its header at least, RET=FULL all of
    # it): it goes back under the sender's demand for validated TLS, or not at all.
    notice = Envelope(id=notice_id(env.id, env.attempts, statuses[0].action, about), sender="",
                      recipients=[env.sender], received_at=now, client_ip="", helo="",
                      size=len(message), prefix_size=len(prefix), delivered_to=env.sender,
                      smtputf8=not message.isascii(),
                      body_8bit=not report.isascii(), sign=True, requiretls=env.requiretls)
    return Notice(notice, message)
