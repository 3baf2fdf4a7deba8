"""Aliases that forward to remote addresses: a queued message's alias recipient is replaced,
in its envelope, by the remote targets its aliases reach, which are then relayed like any
remote recipient (retried, backed off, bounced to the envelope sender). The alias itself stays
a recipient while it also reaches local mailboxes, for their copies.

Each target takes the alias's NOTIFY, and the alias as its ORCPT (RFC 3461 4.2) unless the
client gave one: the next hop is told, and a DSN names as Original-Recipient the address the
sender used. `Envelope.forwarded` records the expansion, so a retry of the alias's local copies
does not forward again; the queue file is not copied, the message is queued once.

An alias that reaches several targets (mailboxes and forwards together) for a sender who asked
NOTIFY=SUCCESS is reported on once, as "expanded" (RFC 3461 6.2.7.3, RFC 3464 2.3.3), not
once per target: its targets take its ORCPT and its NOTIFY without SUCCESS (NEVER when that
was all), as Postfix's local delivery does, so the sender still hears only of what it asked
for; the alias's NOTIFY loses SUCCESS once the notice is queued (settle.py), so that its own
copies are not reported on as delivered.

The MAIL FROM is kept (as Postfix forwards, without SRS), so SPF fails at the next hop; the ARC
set the relay adds for mail from outside (mailauth/sealing.py) lets that hop trust our verdict.
A loop through a remote forwarder back to the alias ends at the hop count limit (554 5.4.6 at
DATA, protocols/hops.py), which the sender hears of in a bounce.
"""

from __future__ import annotations

from ..addresses import AddressError
from ..auth.api import AccountsUnavailable, Lookup, RecipientResolver, RecipientStatus
from . import dsn
from .envelope import Envelope
from .routing import domain_of


def expand_forwards(env: Envelope, recipients: RecipientResolver) -> list[str]:
    """Put the remote targets of env's forwarding aliases among its recipients; return the
    aliases to report on as expanded."""
    expanded: list[str] = []
    reported: list[str] = []
    for rcpt in env.recipients:
        try:
            lookup = recipients.lookup_recipient(rcpt)
        except (AddressError, AccountsUnavailable):
            expanded.append(rcpt)  # the delivery worker answers for it as for any recipient
            continue
        if _reports_expansion(env, rcpt, lookup):
            reported.append(rcpt)
        if lookup.status is not RecipientStatus.OK or not lookup.forwards:
            expanded.append(rcpt)
            continue
        if lookup.mailboxes:
            expanded.append(rcpt)
        if rcpt in env.forwarded.values():
            continue  # forwarded on an earlier attempt
        for target in lookup.forwards:
            if target in env.recipients or target in expanded:
                continue  # the client named it too: one copy is enough
            expanded.append(target)
            env.forwarded[target] = rcpt
            env.orcpt[target] = env.orcpt.get(rcpt) or dsn.typed_address(rcpt)
            if rcpt in reported:
                env.notify[target] = dsn.without_success(env.notify[rcpt])
            elif rcpt in env.notify:
                env.notify[target] = env.notify[rcpt]
        if not env.sign and not env.seal_domain:
            env.seal_domain = domain_of(rcpt)
    env.recipients = expanded
    return reported


def _reports_expansion(env: Envelope, rcpt: str, lookup: Lookup) -> bool:
    """Is `rcpt` an alias of several targets whose NOTIFY still asks for SUCCESS?"""
    return (lookup.status is RecipientStatus.OK
            and len(lookup.mailboxes) + len(lookup.forwards) > 1
            and dsn.wants(env.notify.get(rcpt, ""), "SUCCESS"))
