"""What a session leaves behind: its metrics and its log lines, one line per event.

Every line of a session carries its id, the client's address and (once known) the user. A
command is logged when it fails, by its reply code only: the command line itself may be an
AUTH payload or a password (POP3 PASS, a SASL continuation), which must never reach a log.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from typing import Any

from ... import metrics
from ..session import Failure

log = logging.getLogger("mailforge.session")

# Session ids: the worker's pid and a counter, so they are unique across the server without
# a syscall or a random draw per connection.
_serial = itertools.count(1)
# Commands are added to the shared counters in batches of this many (and at the end of the
# session): a metric update costs a lock and a getpid() in prometheus-client, a command here
# costs two integer additions, and a long IMAP session still shows up within a few commands.
COMMAND_BATCH = 32


class ServiceMeters:
    """The labelled metric values one service's sessions update, looked up once per worker."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.ok = metrics.child("commands_total", service=service, outcome="ok")
        self.error = metrics.child("commands_total", service=service, outcome="error")
        self.auth_success = metrics.child("auth_total", service=service, result="success")
        self.auth_failure = metrics.child("auth_total", service=service, result="failure")
        self.received = metrics.child("messages_received_total", service=service)


class SessionRecord:
    def __init__(self, meters: ServiceMeters, client_ip: str) -> None:
        self.meters = meters
        self.id = f"{os.getpid():x}.{next(_serial):x}"
        self.client_ip = client_ip
        self.user = ""
        self.commands = 0
        self.errors = 0
        self._unpublished = 0  # commands not yet in the shared counters
        self._unpublished_errors = 0
        self.started = time.monotonic()

    def event(self, name: str, level: int = logging.INFO, **fields: Any) -> None:
        if log.isEnabledFor(level):
            log.log(level, "%s", name, extra={"fields": {
                "session": self.id, "service": self.meters.service, "client": self.client_ip,
                "user": self.user or None, "event": name, **fields}})

    def opened(self, tls: bool) -> None:
        self.event("connect", tls=tls)

    def command(self, error_code: str | None) -> None:
        """One command done; `error_code` is its reply code when it failed, else None."""
        self.commands += 1
        self._unpublished += 1
        if error_code is not None:
            self.errors += 1
            self._unpublished_errors += 1
            self.event("command failed", reply=error_code)
        if self._unpublished >= COMMAND_BATCH:
            self._publish()

    def _publish(self) -> None:
        if self._unpublished > self._unpublished_errors:
            self.meters.ok.inc(self._unpublished - self._unpublished_errors)
        if self._unpublished_errors:
            self.meters.error.inc(self._unpublished_errors)
        self._unpublished = self._unpublished_errors = 0

    def logged_in(self, user: str) -> None:
        self.user = user
        self.meters.auth_success.inc()
        self.event("login")

    def login_failed(self) -> None:
        self.meters.auth_failure.inc()
        self.event("login failed", level=logging.WARNING)

    def reply(self, failure: Failure | None, error_code: str | None, user: str) -> None:
        """One command's outcome, as every driver reports it: its error code (None when it
        succeeded), whether it was a failed login, and the machine's user once logged in."""
        self.command(error_code)
        if failure is Failure.AUTH:
            self.login_failed()
        elif user and user != self.user:
            self.logged_in(user)

    def message_received(self, **fields: Any) -> None:
        self.meters.received.inc()
        self.event("message queued", **fields)

    def closed(self, bytes_in: int, bytes_out: int) -> None:
        """The session is over; `bytes_in`/`bytes_out`: the octets it read and wrote."""
        self._publish()
        self.event("disconnect", commands=self.commands, errors=self.errors,
                   bytes_in=bytes_in, bytes_out=bytes_out,
                   duration=round(time.monotonic() - self.started, 3))


def reply_code(text: bytes) -> str:
    """The code of an SMTP or POP3 reply, safe to log: "535 5.7.8", "-ERR [AUTH]"."""
    if text.startswith(b"-ERR"):
        bracket = text[5:].split(b"]", 1)[0] + b"]" if text[5:6] == b"[" else b""
        return ("-ERR " + bracket.decode("ascii", "replace")).rstrip()
    words = text[:16].split(b" ", 2)
    code = words[0][:3].decode("ascii", "replace")
    if len(words) > 1 and words[1][:1].isdigit() and words[1].count(b".") == 2:
        code += " " + words[1].decode("ascii", "replace")
    return code


def imap_error_code(text: bytes) -> str | None:
    """The status of an IMAP reply's tagged line when it is not OK, safe to log:
    "NO [AUTHENTICATIONFAILED]", "BAD"; None for OK (or no tagged line yet)."""
    # Only the last line is looked at (a FETCH reply can be megabytes of untagged lines).
    end = len(text)
    while end and text[end - 1] in b"\r\n":
        end -= 1
    start = text.rfind(b"\r\n", 0, end)
    start = start + 2 if start >= 0 else 0
    # Most commands succeed: a tagged line whose second word is not NO or BAD is done with
    # before any copy or split (this runs after every command).
    space = text.find(b" ", start, end)
    if space < 0 or not text.startswith((b"NO", b"BAD"), space + 1):
        return None
    last = text[start:end]
    words = last.split(b" ", 3)
    if len(words) < 2 or words[0] in (b"*", b"+") or words[1] not in (b"NO", b"BAD"):
        return None
    code = words[2].split(b"]", 1)[0] + b"]" if len(words) > 2 and words[2][:1] == b"[" else b""
    return (words[1] + b" " + code).decode("ascii", "replace").rstrip()
