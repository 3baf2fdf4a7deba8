"""The POP3 server state machine (RFC 1939, with RFC 2449 CAPA, 2595 STLS, 3206 response codes
and 5034 AUTH).

Pure: it turns command lines into replies and actions; no sockets and no files. The driver
(protocols/pop3d.py) opens the maildrop after a login, sends messages and removes the deleted
ones at QUIT, telling the machine how that went. The machine only holds the snapshot's
listing: unique-ids and sizes.

APOP (RFC 1939 7) needs the shared secret itself on the server, while passwords are stored
hashed; so APOP checks a separate secret that an administrator sets for the mailboxes whose
clients still need it (`mailforge user apop ADDR`), as qpopper's popauth did. The greeting's
timestamp is unique per session, as the digest's freshness depends on it. CRAM-MD5 and
SCRAM-SHA-256 through AUTH give the same protection without a stored secret.
"""

from __future__ import annotations

import enum
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from ..addresses import normalize_address
from ..auth.api import AccountsUnavailable, APOPAuthenticator
from ..auth.proxylogin import ProxyLogins
from ..auth.sasl import AuthExchange, Step, StepKind, mechanisms
from ..speedups import ParseError, parse_pop3
from .session import Action, Command, Failure, Reply

# After this many error replies the client is hung up on, as SMTP does.
MAX_ERRORS = 20
# A message number or line count longer than this is no number we could hold (and int() of
# thousands of digits is slow, or refused).
MAX_NUMBER_DIGITS = 10


class State(enum.IntEnum):
    AUTHORIZATION = 0
    TRANSACTION = 1


@dataclass(frozen=True)
class POP3Settings:
    hostname: str
    tls_available: bool = False  # STLS is offered (a certificate is there, TLS not yet on)
    allow_plaintext_auth: bool = False


def ok(text: str, action: Action = Action.NONE) -> Reply:
    return Reply(f"+OK {text}\r\n".encode(), action)


def err(text: str, action: Action = Action.NONE) -> Reply:
    return Reply(f"-ERR {text}\r\n".encode(), action)


def accounts_unavailable() -> Reply:
    """The accounts database could not answer: not a failed login (RFC 3206's SYS/TEMP)."""
    return err("[SYS/TEMP] Cannot check the login now, try again later")


def auth_failed() -> Reply:
    # One reply for every failure: unknown user and wrong password look the same.
    failed = err("[AUTH] Authentication failed")
    failed.failure = Failure.AUTH
    return failed


def multiline(first: str, lines: list[str]) -> Reply:
    """A multi-line reply of our own lines (none starts with "."), ended by "." (RFC 1939 3)."""
    return Reply("".join(f"{line}\r\n" for line in [f"+OK {first}", *lines, "."]).encode())


class POP3Machine:
    def __init__(self, settings: POP3Settings, accounts: APOPAuthenticator,
                 tls_active: bool = False, proxy_logins: ProxyLogins | None = None) -> None:
        """`proxy_logins`: the cluster's proxied logins, where this session's peer may make
        them (auth.proxylogin)."""
        self.settings = settings
        self.accounts = accounts
        self.tls_active = tls_active
        self.state = State.AUTHORIZATION
        self.user = ""        # the authenticated user, once the login succeeded
        self.via = ""         # the cluster node that logged the user in, for a proxied login
        self._user_arg = ""   # the name given by USER, waiting for PASS
        self._auth = AuthExchange(accounts, settings.hostname, proxy_logins)
        # The snapshot: (unique-id, size) per message, and the indexes marked by DELE.
        self.listing: list[tuple[str, int]] = []
        self.deleted: set[int] = set()
        self.errors = 0
        # RFC 1939 7: "<process-ID.clock@hostname>"; random rather than a clock, so no two
        # sessions (in any worker) share one and a recorded APOP digest cannot be replayed.
        self.timestamp = f"<{os.getpid()}.{secrets.token_hex(8)}@{settings.hostname}>"

    def greeting(self) -> bytes:
        return f"+OK {self.settings.hostname} POP3 mailforge ready {self.timestamp}\r\n".encode()

    @staticmethod
    def idle_reply() -> bytes:
        return b"-ERR Disconnected for inactivity\r\n"

    def checks_password(self, line: bytes) -> bool:
        """Whether handling `line` may run a password check: deliberately slow (scrypt), so the
        driver runs it off the event loop, where it would stall every other session."""
        return self._auth.active or line[:4].upper() in (b"PASS", b"APOP", b"AUTH")

    def handle(self, line: bytes) -> Reply:
        if self._auth.active:
            return self._count(self._auth_reply(self._auth.answer(line)))
        try:
            verb, args = parse_pop3(line)
        except ParseError as exc:
            return self._count(err(f"Bad command: {exc}"))
        command = COMMANDS.get(verb)
        if command is None:
            return self._count(err("Unknown command"))
        if self.state < command.requires:
            return self._count(err(f"{verb} is only valid after login"))
        if command.until is not None and self.state > command.until:
            return self._count(err(f"{verb} is only valid before login"))
        return self._count(command.handler(self, args, line.partition(b" ")[2]))

    def line_too_long(self) -> Reply:
        self._auth.abort()  # an AUTH answer that long is no answer: the exchange is over
        return self._count(err("Line too long"))

    def _count(self, result: Reply) -> Reply:
        if result.is_error and not result.quiet:
            self.errors += 1
            if self.errors >= MAX_ERRORS:
                return err("Too many errors, closing connection", Action.CLOSE)
        return result

    # AUTHORIZATION

    def capa(self, args: list[bytes], rest: bytes) -> Reply:
        lines = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        if self.state is State.AUTHORIZATION:
            if self._plaintext_allowed():
                lines.append("USER")
            lines.append("SASL " + " ".join(self._mechanisms()))
            if self.settings.tls_available and not self.tls_active:
                lines.append("STLS")
        lines.append("IMPLEMENTATION mailforge")
        return multiline("Capability list follows", lines)

    def user_command(self, args: list[bytes], rest: bytes) -> Reply:
        if not self._plaintext_allowed():
            return err("[AUTH] Plaintext authentication disallowed on non-secure connections; "
                       "use STLS first")
        if len(args) != 1:
            return err("Syntax: USER name")
        self._user_arg = args[0].decode("utf-8", "replace")
        return ok("Send your password")

    def pass_command(self, args: list[bytes], rest: bytes) -> Reply:
        # The password is the rest of the line: it may hold spaces (RFC 1939 7).
        user, self._user_arg = self._user_arg, ""
        if not user:
            return err("Send USER first")
        if not rest:
            return err("Syntax: PASS password")
        try:
            if not self.accounts.check_password(user, rest.decode("utf-8", "replace")):
                return auth_failed()
        except AccountsUnavailable:
            return accounts_unavailable()
        # The canonical form, as SASL gives: the maildrop (and its lock) is found by it.
        return self._logged_in(normalize_address(user))

    def apop(self, args: list[bytes], rest: bytes) -> Reply:
        self._user_arg = ""
        if len(args) != 2:
            return err("Syntax: APOP name digest")
        user, digest = (arg.decode("utf-8", "replace") for arg in args)
        try:
            if not self.accounts.verify_apop(user, self.timestamp, digest):
                return auth_failed()
        except AccountsUnavailable:
            return accounts_unavailable()
        return self._logged_in(normalize_address(user))

    def auth(self, args: list[bytes], rest: bytes) -> Reply:
        self._user_arg = ""
        if not args:  # the RFC 1734 listing, which some clients still ask for
            return multiline("Supported mechanisms follow", self._mechanisms())
        if len(args) > 2:
            return err("Syntax: AUTH mechanism [initial-response]")
        name = args[0].decode("ascii", "replace")
        initial = args[1].decode("ascii", "replace") if len(args) == 2 else None
        return self._auth_reply(self._auth.start(name, initial, self._mechanisms()))

    def _auth_reply(self, step: Step) -> Reply:
        match step.kind:
            case StepKind.CHALLENGE:
                return Reply(f"+ {step.challenge}\r\n".encode())
            case StepKind.SUCCESS:
                self.via = step.via
                return self._logged_in(step.user)
            case StepKind.CANCELLED:
                return err("Authentication cancelled")
            case StepKind.NEEDS_TLS:
                return err("[AUTH] Plaintext authentication disallowed on non-secure connections; "
                           "use STLS first")
            case StepKind.UNSUPPORTED:
                return err("Unsupported authentication mechanism")
            case StepKind.UNAVAILABLE:
                return accounts_unavailable()
        return auth_failed()  # FAILURE

    def _logged_in(self, user: str) -> Reply:
        """The credentials are good: the driver now locks the maildrop (maildrop_opened)."""
        self.user = user
        return Reply(b"", Action.OPEN_MAILDROP)

    def maildrop_opened(self, listing: list[tuple[str, int]]) -> Reply:
        self.listing, self.deleted = listing, set()
        self.state = State.TRANSACTION
        return ok(f"Logged in, {self._summary()}")

    def maildrop_busy(self) -> Reply:
        self.user = ""
        return self._count(err("[IN-USE] Mailbox is locked by another POP3 session"))

    def maildrop_failed(self) -> Reply:
        self.user = ""
        return self._count(err("[SYS/TEMP] Cannot open the mailbox, try again later"))

    def stls(self, args: list[bytes], rest: bytes) -> Reply:
        if args:
            return err("Syntax: STLS")
        if self.tls_active:
            return err("TLS already active")
        if not self.settings.tls_available:
            return err("TLS not available")
        return ok("Begin TLS negotiation", Action.STARTTLS)

    def tls_started(self) -> None:
        """RFC 2595 4: still AUTHORIZATION; nothing said before the handshake counts."""
        self.tls_active = True
        self._user_arg = ""

    def _plaintext_allowed(self) -> bool:
        return self.tls_active or self.settings.allow_plaintext_auth

    def _mechanisms(self) -> list[str]:
        return mechanisms(self.tls_active, self.settings.allow_plaintext_auth)

    # TRANSACTION

    def stat(self, args: list[bytes], rest: bytes) -> Reply:
        if args:
            return err("Syntax: STAT")
        return ok("{} {}".format(*self._remaining()))

    def list_command(self, args: list[bytes], rest: bytes) -> Reply:
        return self._scan(args, "LIST", lambda number, uid, size: f"{number} {size}")

    def uidl(self, args: list[bytes], rest: bytes) -> Reply:
        return self._scan(args, "UIDL", lambda number, uid, size: f"{number} {uid}")

    def _scan(self, args: list[bytes], verb: str, line: Callable[[int, str, int], str]) -> Reply:
        if len(args) > 1:
            return err(f"Syntax: {verb} [message]")
        if args:
            index = self._message(args[0])
            if isinstance(index, Reply):
                return index
            return ok(line(index + 1, *self.listing[index]))
        lines = [line(i + 1, uid, size) for i, (uid, size) in enumerate(self.listing)
                 if i not in self.deleted]
        return multiline(self._summary(), lines)

    def retr(self, args: list[bytes], rest: bytes) -> Reply:
        if len(args) != 1:
            return err("Syntax: RETR message")
        index = self._message(args[0])
        if isinstance(index, Reply):
            return index
        return Reply(f"+OK {_counted(self.listing[index][1], 'octet')}\r\n".encode(),
                     Action.SEND_MESSAGE, message=index)

    def top(self, args: list[bytes], rest: bytes) -> Reply:
        if len(args) != 2 or not _is_number(args[1]):
            return err("Syntax: TOP message lines")
        index = self._message(args[0])
        if isinstance(index, Reply):
            return index
        return Reply(b"+OK\r\n", Action.SEND_MESSAGE, message=index, lines=int(args[1]))

    def dele(self, args: list[bytes], rest: bytes) -> Reply:
        if len(args) != 1:
            return err("Syntax: DELE message")
        index = self._message(args[0])
        if isinstance(index, Reply):
            return index
        self.deleted.add(index)
        return ok(f"Message {index + 1} deleted")

    def rset(self, args: list[bytes], rest: bytes) -> Reply:
        if args:
            return err("Syntax: RSET")
        self.deleted.clear()
        return ok(self._summary())

    def noop(self, args: list[bytes], rest: bytes) -> Reply:
        return err("Syntax: NOOP") if args else Reply(b"+OK\r\n")

    def last(self, args: list[bytes], rest: bytes) -> Reply:
        """RFC 1460's LAST (removed by RFC 1725), which fetchmail still tries before UIDL. Its
        "highest message number accessed" is per session: every poll of a client that keeps
        mail on the server would start from 0 and fetch everything again. Refused, the client
        falls back to UIDL, which is exact; quietly, as the client expects the refusal."""
        refused = err("LAST was removed from POP3 (RFC 1725); use UIDL")
        refused.quiet = True
        return refused

    def quit(self, args: list[bytes], rest: bytes) -> Reply:
        if self.state is State.TRANSACTION and self.deleted:
            return Reply(b"", Action.UPDATE)
        return ok("Logging out", Action.CLOSE)

    def updated(self, failed: int) -> Reply:
        """After the UPDATE state removed the deleted messages (`failed` of them could not be)."""
        if failed:
            return err(f"[SYS/TEMP] {_counted(failed, 'deleted message')} not removed",
                       Action.CLOSE)
        return ok(f"Logging out, {_counted(len(self.deleted), 'message')} deleted", Action.CLOSE)

    def _message(self, arg: bytes) -> int | Reply:
        """The 0-based index of a message number that names a message not marked deleted."""
        if not _is_number(arg):
            return err("Invalid message number")
        number = int(arg)
        if not 1 <= number <= len(self.listing):
            return err(f"There is no message {number}")
        if number - 1 in self.deleted:
            return err(f"Message {number} is deleted")
        return number - 1

    def _remaining(self) -> tuple[int, int]:
        """How many messages are not marked deleted, and their octets."""
        sizes = [size for i, (_, size) in enumerate(self.listing) if i not in self.deleted]
        return len(sizes), sum(sizes)

    def _summary(self) -> str:
        """The messages not marked deleted, in RFC 1939's words: "2 messages (320 octets)"."""
        count, octets = self._remaining()
        return f"{_counted(count, 'message')} ({_counted(octets, 'octet')})"


def _counted(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _is_number(arg: bytes) -> bool:
    return arg.isdigit() and len(arg) <= MAX_NUMBER_DIGITS


COMMANDS: dict[str, Command] = {
    "CAPA": Command(POP3Machine.capa),
    "QUIT": Command(POP3Machine.quit),
    "USER": Command(POP3Machine.user_command, until=State.AUTHORIZATION),
    "PASS": Command(POP3Machine.pass_command, until=State.AUTHORIZATION),
    "APOP": Command(POP3Machine.apop, until=State.AUTHORIZATION),
    "AUTH": Command(POP3Machine.auth, until=State.AUTHORIZATION),
    "STLS": Command(POP3Machine.stls, until=State.AUTHORIZATION),
    "STAT": Command(POP3Machine.stat, State.TRANSACTION),
    "LIST": Command(POP3Machine.list_command, State.TRANSACTION),
    "UIDL": Command(POP3Machine.uidl, State.TRANSACTION),
    "RETR": Command(POP3Machine.retr, State.TRANSACTION),
    "TOP": Command(POP3Machine.top, State.TRANSACTION),
    "DELE": Command(POP3Machine.dele, State.TRANSACTION),
    "RSET": Command(POP3Machine.rset, State.TRANSACTION),
    "NOOP": Command(POP3Machine.noop, State.TRANSACTION),
    "LAST": Command(POP3Machine.last, State.TRANSACTION),
}
