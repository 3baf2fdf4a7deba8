"""What every protocol state machine shares: replies, actions and the command table entry."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class Action(enum.Enum):
    """What the transport must do after sending a reply."""

    NONE = "none"
    CLOSE = "close"
    READ_DATA = "read_data"      # stream a dot-terminated body
    READ_CHUNK = "read_chunk"    # read a length-framed body chunk (BDAT)
    STARTTLS = "starttls"        # switch the connection to TLS, then tell the machine
    OPEN_MAILDROP = "open_maildrop"  # POP3, IMAP: open the logged-in user's mailbox, then tell the machine
    SEND_MESSAGE = "send_message"    # POP3 RETR/TOP: send a message of the maildrop after the reply
    UPDATE = "update"                # POP3 QUIT: remove the deleted messages, then tell the machine
    CHECK_SENDER = "check_sender"    # SMTP MAIL of a logged-in user: ask the outbound limit
    # SMTP MAIL on submission: look the sender up (thread pool), then tell the machine
    LOOK_UP_SENDER = "look_up_sender"
    # SMTP RCPT: look the recipient and its mailboxes' quota up (thread pool), then tell the machine
    LOOK_UP_RECIPIENT = "look_up_recipient"
    IDLE = "idle"                    # IMAP IDLE: push updates until the client says DONE
    COMPRESS = "compress"            # IMAP COMPRESS: deflate both directions after the reply
    # POP3, IMAP: the mailbox's owner node took the session (mailbox routing): after the reply
    # (its answer to the login), carry the session there both ways until either side closes
    PROXY = "proxy"


class Failure(enum.Enum):
    """A reply that the harvesting and brute-force defence counts (policy/abuse.py)."""

    AUTH = "failed login"                 # wrong password, unknown or disabled user
    RECIPIENT = "unknown local recipient"  # an address probe


@dataclass(slots=True)
class Reply:
    text: bytes
    action: Action = Action.NONE
    # For READ_CHUNK: how many octets follow, and whether they are to be kept.
    size: int = 0
    keep: bool = True
    # For SEND_MESSAGE: which message of the maildrop (0-based), and how many body lines
    # (TOP), None for the whole message (RETR).
    message: int = 0
    lines: int | None = None
    # For LOOK_UP_SENDER and LOOK_UP_RECIPIENT: the address.
    address: str = ""
    failure: Failure | None = None
    # A refusal the client expects and falls back from (POP3 LAST): neither counted toward the
    # session's error limit nor logged as a failed command.
    quiet: bool = False

    @property
    def is_error(self) -> bool:
        return self.text[:1] in (b"4", b"5", b"-")  # SMTP 4xx/5xx, POP3 -ERR


@dataclass(frozen=True, slots=True)
class Command:
    """One row of a protocol's command table (Postfix's smtpd_cmd_table, Dovecot's imap-commands)."""

    handler: Callable[..., Reply]
    # The lowest session state the command is legal in; legality is checked once, centrally.
    requires: int = 0
    # The highest state it is legal in (POP3's USER, PASS, AUTH, STLS: AUTHORIZATION only).
    until: int | None = None
    # What else the dispatcher must know about it (IMAP: "store" runs in the thread pool,
    # "sequence" uses message sequence numbers, "trycreate" answers a missing target so).
    flags: frozenset[str] = frozenset()


class StopSignal(Protocol):
    """The worker as its sessions see it: told to stop, they end at the next command boundary."""

    stopping: bool
