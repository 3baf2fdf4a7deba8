"""Maildir message file names, as mutt and Dovecot write them: the one module that knows them.

A message file is `<base>[,S=<size>][,W=<crlf size>][:2,<flags>]`. The base name (the
Maildir spec's "unique name") is the message's identity for every reader (our UID index,
POP3's UIDL) and never changes; the rest changes when flags change or a reader records sizes.
`,S=` is the size of the file as stored (Maildir++ quota counts it), `,W=` the size of its CRLF
form (Dovecot's "virtual size": what IMAP's RFC822.SIZE and POP3's LIST report), so that
neither is read from the file again. Flags are letters after ":2," (flags.py says what each
letter means).

Base names are `<arrival second>.<unique part>.<host>` (Dovecot's form), so sorting by the
leading number puts messages in arrival order in every session.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
import zlib
from collections.abc import Iterable

INFO = ":2,"


def maildir_hostname(host: str | None = None) -> str:
    """The host part of a Maildir name; "/" and ":" would break the name, so Dovecot escapes them."""
    host = socket.gethostname() if host is None else host
    return host.replace("/", "\\057").replace(":", "\\072")


_HOSTNAME = maildir_hostname()


def message_base(received_at: float, queue_id: str, mailbox: str) -> str:
    """A delivered message's base, `<sec>.Q<queue id>M<mailbox hash>.<host>`: unique because a
    queue id is, and the same on every attempt, so a delivery that was cut short after the
    rename into new/ can tell that the message is already there (maildir.delivered_bases)."""
    mailbox_hash = zlib.crc32(mailbox.encode())
    return f"{int(received_at)}.Q{queue_id}M{mailbox_hash:08x}.{_HOSTNAME}"


def new_base() -> str:
    """A fresh base for a message a session stores itself (IMAP APPEND, COPY):
    `<sec>.M<random>P<pid>.<host>`, unique without asking anyone."""
    return f"{int(time.time())}.M{secrets.token_hex(6)}P{os.getpid()}.{_HOSTNAME}"


def sized_name(base: str, size: int, crlf_size: int | None = None) -> str:
    """A new message's name without flags: its base with `,S=<size>`, and `,W=<crlf size>`
    when known."""
    if crlf_size is None:
        return f"{base},S={size}"
    return f"{base},S={size},W={crlf_size}"


def base_of(name: str) -> str:
    """The identity part of a Maildir file name (pop3box's UIDL is the same string)."""
    return name.split(":", 1)[0].split(",", 1)[0]


def field_of(name: str, key: str) -> int | None:
    """A numeric `,K=<n>` field of the name (S = file size, W = CRLF size), if present."""
    for item in name.split(":", 1)[0].split(",")[1:]:
        if item.startswith(key + "=") and item[2:].isdigit():
            return int(item[2:])
    return None


def letters_of(name: str) -> str:
    _head, sep, info = name.partition(":")
    return info[2:] if sep and info.startswith("2,") else ""


def with_size(name: str, crlf_size: int) -> str:
    """The name with `,W=<crlf size>` recorded (before the info part)."""
    if field_of(name, "W") is not None:
        return name
    head, sep, info = name.partition(":")
    return f"{head},W={crlf_size}{sep}{info}"


def with_letters(name: str, letters: Iterable[str]) -> str:
    """The name carrying exactly `letters` as flags, sorted as the Maildir spec asks."""
    head = name.split(":", 1)[0]
    return f"{head}{INFO}{''.join(sorted(set(letters)))}"


def claimed_name(name: str, crlf_size: int) -> str:
    """The name a message from new/ gets in cur/: its CRLF size recorded and, when it had no
    info part, an empty one (seen by a reader, no flags yet)."""
    claimed = with_size(name, crlf_size)
    return claimed if ":" in claimed else claimed + INFO


def arrival_order(name: str) -> tuple[int, str]:
    """Sort key for names (or bases): the arrival second they start with, then the name;
    a name not of our form sorts first (as second 0)."""
    head = name.split(".", 1)[0]
    return (int(head) if head.isdigit() and len(head) < 12 else 0, name)


def crlf_size(data: bytes) -> int:
    """Octets of the CRLF form (pop3box.crlf_form) without building it."""
    return len(data) + data.count(b"\n") - data.count(b"\r\n")
