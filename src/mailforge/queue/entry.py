"""What one delivery attempt works on: a claimed queue entry, and the copies written for it.

Shared by the delivery worker (delivery.py), which claims entries and places their copies,
and the settlement of what else an attempt owes (settle.py): relaying, refusals, notices.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..store.maildir import TmpMessage
from .envelope import Envelope
from .notices import Outcomes
from .relay import Message, says_tls_not_required
from .routing import Destination

READ_CHUNK = 64 * 1024


@dataclass
class Entry:
    """One claimed queue entry: locked, its envelope read, its copies being written."""

    id: str
    lock_fd: int | None  # the .env's lock; None for a segment record (its segment is locked)
    envelope: Envelope
    msg_path: Path | None  # None for a segment record, whose message is `body`
    body: bytes = b""
    pending: dict[str, int] = field(default_factory=dict)  # rcpt → copies not yet published
    failed: dict[str, str] = field(default_factory=dict)  # rcpt → why it must be retried
    mailboxes: set[str] = field(default_factory=set)  # a mailbox gets one copy per message
    remote: list[str] = field(default_factory=list)  # recipients to relay
    # Mailboxes another node owns (mailbox routing), relayed to it as recipients of their own
    # (among `remote`, each the mailbox with the recipient's subaddress): relayed address → the
    # recipient that reached it, and → the owner's port.
    reached_by: dict[str, str] = field(default_factory=dict)
    owner_routes: dict[str, Destination] = field(default_factory=dict)
    outcomes: Outcomes = field(default_factory=Outcomes)  # settled for good: to report on
    # Failed recipients that were never tried: their destination had no connection to spare,
    # or the accounts database did not answer where their mail goes.
    untried: set[str] = field(default_factory=set)
    # Failed recipients that reach a mailbox over its quota ([delivery] quota_full_bounce_after).
    over_quota: set[str] = field(default_factory=set)
    # Aliases of several targets to report on as expanded (queue/forwarding.py).
    expanded: list[str] = field(default_factory=list)

    def relay_to_owner(self, rcpt: str, mailbox: str, address: str, owner: Destination) -> None:
        """`mailbox`, reached by `rcpt`, is another node's: relay it there under `address`,
        never store it here."""
        self.mailboxes.add(mailbox)
        self.remote.append(address)
        self.reached_by[address] = rcpt
        self.owner_routes[address] = owner

    def movable(self, rcpt: str) -> bool:
        """Is the queue file itself this recipient's copy (its only one, headers in place)?"""
        return (self.msg_path is not None and self.envelope.recipients == [rcpt]
                and self.envelope.delivered_to == rcpt)

    def chunks(self, offset: int = 0) -> Iterator[bytes]:
        """The queued message from `offset` on."""
        if self.msg_path is None:
            yield self.body[offset:]
            return
        with open(self.msg_path, "rb") as fh:
            fh.seek(offset)
            yield from iter(lambda: fh.read(READ_CHUNK), b"")

    def outgoing(self) -> Message:
        """The message as relayed: without our delivery headers, CRLF line ends."""
        env = self.envelope
        data = b"".join(self.chunks(env.prefix_size)).replace(b"\n", b"\r\n")
        return Message(self.id, env.sender, list(self.remote), data, env.smtputf8, env.body_8bit,
                       env.envid, env.ret, env.notify, env.orcpt, env.requiretls,
                       # RFC 8689 5: with REQUIRETLS asked for, the header field is ignored.
                       not env.requiretls and says_tls_not_required(data), env.junk)

    def returned(self) -> bytes:
        """The message as a DSN returns it: without our delivery headers."""
        return b"".join(self.chunks(self.envelope.prefix_size))

    def remaining(self) -> list[str]:
        return [r for r in self.envelope.recipients if r in self.failed or self.pending.get(r)]


@dataclass
class Copy:
    entry: Entry
    rcpt: str
    fds: list[int]
    paths: list[Path]  # files written; removed if the batch fails
    maildir_tmp: TmpMessage | None  # published into new/ after the sync; None for badmail
    directory: Path  # fsynced once the copy is in place
    log_line: tuple[str, ...] = ()
    move: tuple[Path, Path] | None = None  # the queue file itself, renamed into new/
