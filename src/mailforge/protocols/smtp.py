"""The SMTP server state machine (RFC 5321, with RFC 1870, 2920, 3030, 6152, 2034, 6531, 3461).

Pure: it turns command lines into replies and actions; no sockets, no files and no accounts
lookups. The driver (protocols/smtpd.py) reads input, looks senders and recipients up in the
worker's thread pool, streams bodies into the spool, and tells the machine what it found and
how a body ended. Reply texts follow Postfix's where clients and operators know them.
"""

from __future__ import annotations

import email.utils
import enum
from dataclasses import dataclass, field

from ..addresses import AddressError, parse_address
from ..auth.api import Authenticator, Lookup, RecipientStatus
from ..auth.sasl import AuthExchange, Step, StepKind, mechanisms
from ..policy.relay import RelayPolicy
from ..queue.dsn import DSNParamError, parse_envid, parse_notify, parse_orcpt, parse_ret
from ..speedups import ParseError, parse_path, split_command
from .session import Action, Command, Failure, Reply

# After this many error replies the client is hung up on (Postfix's smtpd_hard_error_limit).
MAX_ERRORS = 20
# RFC 5321 4.5.3.1.4 is 512 octets; ESMTP parameters make lines longer, so the limit is configured.
RFC_LINE_LENGTH = 512
# Verbs of other protocols that no SMTP client sends: a web browser's GET or POST, an HTTP
# proxy's CONNECT. Such a client, and one sending a message's header lines as commands (after
# a refused DATA), gets one reply and is hung up on rather than an error per line until
# MAX_ERRORS (Postfix's smtpd_forbidden_commands = CONNECT GET POST regexp:{{/^[^ ]+:/}}).
FORBIDDEN_VERBS = frozenset({b"CONNECT", b"GET", b"POST"})
# Our own MAIL parameter (an X keyword: RFC 5321 4.1.5), by which a cluster node that relays a
# message to its mailbox's owner passes on its DMARC quarantine verdict, which the owner could
# not reach again (it does not check mail a node relays). Offered to and taken from a cluster
# node only: it is that node's verdict, no client's to give.
JUNK_PARAM = "XJUNK"


class State(enum.IntEnum):
    CONNECTED = 0
    GREETED = 1
    MAIL = 2
    RCPT = 3


MISSING_STEP = {
    State.GREETED: b"503 5.5.1 Error: send HELO/EHLO first\r\n",
    State.MAIL: b"503 5.5.1 Error: need MAIL command\r\n",
    State.RCPT: b"503 5.5.1 Error: need RCPT command\r\n",
}


@dataclass(frozen=True)
class SMTPSettings:
    hostname: str
    max_message_size: int
    max_recipients: int
    max_line_length: int
    relay: RelayPolicy = RelayPolicy("none", ())
    tls_available: bool = False  # STARTTLS is offered (a certificate is there, TLS not yet on)
    require_auth: bool = False  # submission: no MAIL before AUTH (RFC 6409 4.3)
    allow_plaintext_auth: bool = False
    sender_login_match: bool = False
    quota_full_tempfail: bool = True  # a full mailbox at RCPT: 452 4.2.2, else 552 5.2.2
    # [cluster] tls = "starttls": a node relays mail here only inside TLS, so one left at
    # "none" is told so (a temporary error: the mail waits in its queue until it is mended).
    cluster_tls: bool = False


@dataclass
class Transaction:
    sender: str
    body_8bit: bool = False
    smtputf8: bool = False
    recipients: list[str] = field(default_factory=list)
    chunked: bool = False      # BDAT was used: DATA is no longer allowed (RFC 3030 2)
    chunk_failed: bool = False  # a BDAT chunk was refused: the rest is discarded until LAST/RSET
    size: int = 0
    # RFC 3461 DSN requests: for the message, and per recipient.
    envid: str = ""
    ret: str = ""
    notify: dict[str, str] = field(default_factory=dict)
    orcpt: dict[str, str] = field(default_factory=dict)
    requiretls: bool = False  # RFC 8689: to be relayed only over validated TLS
    junk: bool = False  # the cluster node relaying it quarantined it (JUNK_PARAM)


def reply(code: int, enhanced: str, text: str, action: Action = Action.NONE) -> Reply:
    return Reply(f"{code} {enhanced} {text}\r\n".encode(), action)


class SMTPMachine:
    def __init__(self, settings: SMTPSettings, accounts: Authenticator, peer_ip: str,
                 tls_active: bool = False, cluster_peer: bool = False) -> None:
        """`cluster_peer`: the client is a node of our cluster, speaking for itself."""
        self.settings = settings
        self.accounts = accounts
        self.peer_ip = peer_ip
        self.tls_active = tls_active
        self.cluster_peer = cluster_peer
        self.user = ""  # the authenticated user, once AUTH succeeded
        self._auth = AuthExchange(accounts, settings.hostname)
        self.state = State.CONNECTED
        self.helo_name = ""
        self.esmtp = False
        self.transaction: Transaction | None = None
        # MAIL or RCPT waiting for the driver's lookup: the transaction it would start, the
        # recipient it would add with its DSN NOTIFY and ORCPT.
        self._pending_transaction: Transaction | None = None
        self._pending_recipient: tuple[str, str, str] | None = None
        self.errors = 0
        # The BDAT chunk being read: whether it is the last, and the refusal owed after it.
        self._chunk_last = False
        self._chunk_refusal: bytes | None = None
        # What a non-SMTP client sent ("GET", "a header line"), once it has been hung up on.
        self.non_smtp = ""

    def greeting(self) -> bytes:
        return f"220 {self.settings.hostname} ESMTP mailforge\r\n".encode()

    def idle_reply(self) -> bytes:
        return f"421 4.4.2 {self.settings.hostname} Error: timeout exceeded\r\n".encode()

    @property
    def in_transaction(self) -> bool:
        return self.transaction is not None

    def checks_password(self, line: bytes) -> bool:
        """Whether handling `line` may run a password check: deliberately slow (scrypt), so the
        driver runs it off the event loop, where it would stall every other session."""
        return self._auth.active or line[:5].upper() == b"AUTH "

    def handle(self, line: bytes) -> Reply:
        if self._auth.active:
            return self._count(self._auth_reply(self._auth.answer(line)))
        self.non_smtp = _non_smtp(line)
        if self.non_smtp:
            # Postfix's words, which operators and scanners' logs know.
            return reply(221, "2.7.0", "Error: I can break rules, too. Goodbye.", Action.CLOSE)
        try:
            verb, arg = split_command(line)
        except ParseError:
            return self._count(reply(500, "5.5.2", "Error: bad syntax"))
        command = COMMANDS.get(verb)
        if command is None:
            return self._count(reply(500, "5.5.2", "Error: command not recognized"))
        if self.state < command.requires:
            return self._count(Reply(self._missing_step()))
        return self._count(command.handler(self, arg))

    def _missing_step(self) -> bytes:
        return MISSING_STEP[State(self.state + 1)]

    def line_too_long(self) -> Reply:
        return self._count(reply(500, "5.5.2", "Error: line too long"))

    def _count(self, result: Reply) -> Reply:
        if result.is_error:
            self.errors += 1
            if self.errors >= MAX_ERRORS:
                return reply(421, "4.7.0", f"{self.settings.hostname} Error: too many errors",
                             Action.CLOSE)
        return result

    # commands

    def helo(self, arg: bytes, extended: bool = False) -> Reply:
        name = arg.decode("utf-8", "replace").strip()
        if not name or " " in name:
            return reply(501, "5.5.4", f"Syntax: {'EHLO' if extended else 'HELO'} hostname")
        self.helo_name, self.esmtp = name, extended
        self.transaction = None
        self.state = State.GREETED
        if not extended:
            return Reply(f"250 {self.settings.hostname}\r\n".encode())
        lines = [f"{self.settings.hostname} Hello {name} [{self.peer_ip}]", "PIPELINING",
                 f"SIZE {self.settings.max_message_size}", "VRFY", "ENHANCEDSTATUSCODES",
                 "8BITMIME", "SMTPUTF8", "DSN", "CHUNKING"]
        if self.settings.tls_available and not self.tls_active:
            lines.insert(1, "STARTTLS")
        if self._may_requiretls():
            lines.append("REQUIRETLS")  # RFC 8689 4.1: only where MAIL may name it
        if self.cluster_peer:
            lines.append(JUNK_PARAM)
        offered = self._mechanisms()
        if offered and not self.user:
            lines.insert(1, "AUTH " + " ".join(offered))
        text = "".join(f"250-{item}\r\n" for item in lines[:-1]) + f"250 {lines[-1]}\r\n"
        return Reply(text.encode())

    def _may_requiretls(self) -> bool:
        """A client's REQUIRETLS holds only if the message came over TLS (RFC 8689 4.1). A
        cluster node relaying to a mailbox's owner passes on its sender's demand over the
        internal link, TLS or not (queue/outbound.py says why), so that the owner keeps to it
        when it relays the message on (a forward)."""
        return self.tls_active or self.cluster_peer

    def ehlo(self, arg: bytes) -> Reply:
        return self.helo(arg, extended=True)

    def mail(self, arg: bytes) -> Reply:
        if self.transaction is not None:
            return reply(503, "5.5.1", "Error: nested MAIL command")
        if self.settings.require_auth and not self.user:
            return reply(530, "5.7.0", "Authentication required")
        if self.cluster_peer and self.settings.cluster_tls and not self.tls_active:
            return reply(450, "4.7.0", "Must issue a STARTTLS command first: the cluster's "
                                       "link is TLS")
        try:
            sender, params = parse_path(arg, b"FROM")
        except ParseError as exc:
            return reply(501, "5.5.4", str(exc))
        transaction = Transaction(sender)
        problem = self._mail_params(transaction, params)
        if problem:
            return problem
        if sender:
            try:
                parse_address(sender)
            except AddressError as exc:
                return reply(501, "5.1.7", f"Bad sender address syntax: {exc}")
            if not sender.isascii() and not transaction.smtputf8:
                return reply(553, "5.6.7", "Must declare SMTPUTF8 to send UTF8 addresses")
            if self._must_own(sender):
                self._pending_transaction = transaction
                return Reply(b"", Action.LOOK_UP_SENDER, address=sender)
        return self._begin(transaction)

    def _must_own(self, sender: str) -> bool:
        """On submission, a sender must be the user's own address or an alias of it."""
        return (self.settings.require_auth and self.settings.sender_login_match
                and sender.lower() != self.user)

    def sender_found(self, lookup: Lookup) -> Reply:
        """MAIL, continued after LOOK_UP_SENDER: where mail to the sender goes."""
        transaction, self._pending_transaction = self._pending_transaction, None
        assert transaction is not None
        if self.user not in lookup.mailboxes:
            return self._count(reply(553, "5.7.1", f"<{transaction.sender}>: Sender address "
                                     f"rejected: not owned by user {self.user}"))
        return self._begin(transaction)

    def lookup_unavailable(self) -> Reply:
        """MAIL or RCPT, continued when the accounts database could not answer the lookup:
        the sender tries again later (as Postfix's 451 4.3.0 on a failed table lookup)."""
        self._pending_transaction = self._pending_recipient = None
        return reply(451, "4.3.0", "Temporary lookup failure, try again later")

    def _begin(self, transaction: Transaction) -> Reply:
        self.transaction = transaction
        self.state = State.MAIL
        # A logged-in user's messages count against its outbound limit (policy/limits.py).
        return reply(250, "2.1.0", "Ok", Action.CHECK_SENDER if self.user else Action.NONE)

    def sender_limited(self, code: int, enhanced: str, text: str) -> Reply:
        """The outbound limit refused the logged-in user's message (at MAIL or at queueing)."""
        self.reset()
        return self._count(reply(code, enhanced, f"<{self.user}>: {text}"))

    def _mail_params(self, transaction: Transaction, params: dict[str, str | None]) -> Reply | None:
        for key, value in params.items():
            if key == "SIZE" and self.esmtp:
                if value is None or not value.isdigit():
                    return reply(501, "5.5.4", "Bad SIZE parameter")
                if int(value) > self.settings.max_message_size:
                    return reply(552, "5.3.4", "Message size exceeds fixed limit")
            elif key == "BODY" and self.esmtp and value and value.upper() in ("7BIT", "8BITMIME"):
                transaction.body_8bit = value.upper() == "8BITMIME"
            elif key == "SMTPUTF8" and self.esmtp and value is None:
                transaction.smtputf8 = True
            elif key == "REQUIRETLS" and self.esmtp and value is None:
                if not self._may_requiretls():
                    return reply(530, "5.7.10", "REQUIRETLS needs a TLS session (STARTTLS first)")
                transaction.requiretls = True
            elif key == JUNK_PARAM and self.esmtp and self.cluster_peer and value is None:
                transaction.junk = True
            elif key in ("RET", "ENVID") and self.esmtp and value:
                try:
                    if key == "RET":
                        transaction.ret = parse_ret(value)
                    else:
                        transaction.envid = parse_envid(value)
                except DSNParamError as exc:
                    return reply(501, "5.5.4", f"Bad {key} parameter: {exc}")
            else:
                return reply(555, "5.5.4", f"Unsupported option: {key}")
        return None

    def rcpt(self, arg: bytes) -> Reply:
        transaction = self.transaction
        assert transaction is not None
        try:
            address, params = parse_path(arg, b"TO")
        except ParseError as exc:
            return reply(501, "5.5.4", str(exc))
        dsn = self._rcpt_params(params, transaction.smtputf8)
        if isinstance(dsn, Reply):
            return dsn
        if address.lower() == "postmaster":
            # RFC 5321 4.1.1.3 and 4.5.1: RCPT TO:<Postmaster> without a domain MUST be taken.
            # It is completed with our hostname, as Postfix appends $myorigin ($myhostname).
            address = f"postmaster@{self.settings.hostname}"
        try:
            parse_address(address)
        except AddressError as exc:
            return reply(501, "5.1.3", f"Bad recipient address syntax: {exc}")
        if not address.isascii() and not transaction.smtputf8:
            return reply(553, "5.6.7", "Must declare SMTPUTF8 to send UTF8 addresses")
        if len(transaction.recipients) >= self.settings.max_recipients:
            return reply(452, "4.5.3", "Error: too many recipients")
        self._pending_recipient = (address, *dsn)
        return Reply(b"", Action.LOOK_UP_RECIPIENT, address=address)

    def recipient_found(self, lookup: Lookup, over_quota: bool) -> Reply:
        """RCPT, continued after LOOK_UP_RECIPIENT: where mail to the recipient goes, and
        whether a mailbox it reaches is full."""
        transaction, pending = self.transaction, self._pending_recipient
        assert transaction is not None and pending is not None
        self._pending_recipient = None
        address, notify, orcpt = pending
        refusal = self._refuse_recipient(address, lookup, over_quota)
        if refusal:
            return self._count(refusal)
        transaction.recipients.append(address)
        if notify:
            transaction.notify[address] = notify
        if orcpt:
            transaction.orcpt[address] = orcpt
        self.state = State.RCPT
        return reply(250, "2.1.5", "Ok")

    def _rcpt_params(self, params: dict[str, str | None], smtputf8: bool
                     ) -> tuple[str, str] | Reply:
        """RFC 3461 NOTIFY and ORCPT, the only RCPT parameters we know (a utf-8 ORCPT in
        UTF-8 under SMTPUTF8, RFC 6533 3)."""
        notify = orcpt = ""
        for key, value in params.items():
            if key not in ("NOTIFY", "ORCPT") or not self.esmtp or not value:
                return reply(555, "5.5.4", f"Unsupported option: {key}")
            try:
                if key == "NOTIFY":
                    notify = parse_notify(value)
                else:
                    orcpt = parse_orcpt(value, smtputf8)
            except DSNParamError as exc:
                return reply(501, "5.5.4", f"Bad {key} parameter: {exc}")
        return notify, orcpt

    def _refuse_recipient(self, address: str, lookup: Lookup, over_quota: bool) -> Reply | None:
        status = lookup.status
        if status is RecipientStatus.OK:
            if over_quota:
                # 452: the sender retries while the user makes room; 552: it bounces at once.
                if self.settings.quota_full_tempfail:
                    return reply(452, "4.2.2", f"<{address}>: Mailbox full")
                return reply(552, "5.2.2", f"<{address}>: Mailbox full")
            return None
        if status is RecipientStatus.NOT_LOCAL:
            if self.settings.relay.may_relay(self.peer_ip, bool(self.user)):
                return None
            return reply(554, "5.7.1", f"<{address}>: Relay access denied")
        if status is RecipientStatus.DISABLED:
            return reply(550, "5.2.1", f"<{address}>: Recipient address rejected: mailbox disabled")
        unknown = reply(550, "5.1.1", f"<{address}>: Recipient address rejected: User unknown")
        unknown.failure = Failure.RECIPIENT
        return unknown

    def data(self, arg: bytes) -> Reply:
        if arg:
            return reply(501, "5.5.4", "Syntax: DATA")
        assert self.transaction is not None
        if self.transaction.chunked:
            return reply(503, "5.5.1", "Error: BDAT in progress, DATA not allowed")
        return Reply(b"354 End data with <CR><LF>.<CR><LF>\r\n", Action.READ_DATA)

    def bdat(self, arg: bytes) -> Reply:
        size_text, _, last = arg.partition(b" ")
        if not size_text.isdigit() or last.strip().upper() not in (b"", b"LAST"):
            # Without a valid size nobody knows where the chunk ends: hang up (as Postfix does).
            return reply(501, "5.5.4", "Syntax: BDAT count [LAST]", Action.CLOSE)
        size = int(size_text)
        self._chunk_last = bool(last.strip())
        transaction = self.transaction
        if self.state < State.RCPT or transaction is None:
            self._chunk_refusal = self._missing_step()
            return Reply(b"", Action.READ_CHUNK, size, keep=False)
        transaction.chunked = True
        keep = not transaction.chunk_failed and transaction.size + size <= self.settings.max_message_size
        return Reply(b"", Action.READ_CHUNK, size, keep)

    def chunk_done(self, size: int, kept: bool) -> Reply | None:
        """After a BDAT chunk: the reply, or None when LAST arrived and the message must be queued."""
        if self._chunk_refusal is not None:
            refusal, self._chunk_refusal = self._chunk_refusal, None
            return self._count(Reply(refusal))
        transaction = self.transaction
        assert transaction is not None
        transaction.chunk_failed |= not kept
        transaction.size += size
        if transaction.chunk_failed:
            if self._chunk_last:
                self.reset()
            return self._count(reply(552, "5.3.4", "Message size exceeds fixed limit"))
        if not self._chunk_last:
            return reply(250, "2.0.0", f"Ok: {size} octets received")
        return None

    def body_done(self, size: int, bare_newline: bool) -> Reply | None:
        """After DATA: the refusal, or None when the message must be queued."""
        if bare_newline:
            self.reset()
            return self._count(reply(550, "5.5.2", "Message refused: bare CR or LF in message "
                                     "(RFC 5321 2.3.8); send lines ending in CRLF"))
        if size > self.settings.max_message_size:
            self.reset()
            return self._count(reply(552, "5.3.4", "Message size exceeds fixed limit"))
        return None

    def too_many_hops(self) -> Reply:
        """The message has been through more MTAs than any real path has: a mail loop."""
        self.reset()
        return self._count(reply(554, "5.4.6", "Too many hops: mail loop detected"))

    def refused_by_policy(self, temporary: bool, text: str) -> Reply:
        """The sender's DMARC policy refuses the message (550 5.7.1), or could not be checked
        for want of DNS (451 4.4.3, RFC 3463: routing server failure)."""
        self.reset()
        if temporary:
            return reply(451, "4.4.3", text)
        return self._count(reply(550, "5.7.1", text))

    def queued(self, queue_id: str) -> Reply:
        self.reset()
        return reply(250, "2.0.0", f"Ok: queued as {queue_id}")

    def queue_failed(self, no_space: bool = False) -> Reply:
        """The message could not be queued; `no_space`: for want of disk space (RFC 3463 4.3.1)."""
        self.reset()
        if no_space:
            return self._count(reply(452, "4.3.1", "Error: insufficient system storage"))
        return self._count(reply(451, "4.3.0", "Error: queue file write error"))

    def queue_full(self) -> Reply:
        """MAIL refused while the queue is over its limit (queue/flow.py), before the client
        sends a body. Quiet: the server's condition, not the client's error, and the supervisor
        logs it once, not once per message."""
        self.reset()
        refused = reply(451, "4.3.1", "Insufficient system storage: the queue is full, "
                                      "try again later")
        refused.quiet = True
        return refused

    def reset(self) -> None:
        self.transaction = None
        if self.state > State.GREETED:
            self.state = State.GREETED

    def rset(self, arg: bytes) -> Reply:
        self.reset()
        return reply(250, "2.0.0", "Ok")

    def noop(self, arg: bytes) -> Reply:
        return reply(250, "2.0.0", "Ok")

    def quit(self, arg: bytes) -> Reply:
        return reply(221, "2.0.0", "Bye", Action.CLOSE)

    def help(self, arg: bytes) -> Reply:
        return reply(214, "2.0.0", "Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY")

    def vrfy(self, arg: bytes) -> Reply:
        if not arg:
            return reply(501, "5.5.4", "Syntax: VRFY address")
        # Answering truthfully would let anyone harvest addresses (RFC 5321 3.5.3 allows 252).
        return reply(252, "2.0.0", "Cannot VRFY user, but will accept message and attempt delivery")

    def expn(self, arg: bytes) -> Reply:
        return reply(502, "5.5.1", "Error: EXPN not available")

    def starttls(self, arg: bytes) -> Reply:
        if arg:
            return reply(501, "5.5.4", "Syntax: STARTTLS")
        if self.tls_active:
            return reply(554, "5.5.1", "Error: TLS already active")
        if not self.settings.tls_available:
            return reply(454, "4.7.0", "TLS not available")
        return Reply(b"220 2.0.0 Ready to start TLS\r\n", Action.STARTTLS)

    def tls_started(self) -> None:
        """RFC 3207 4.2: after the handshake the client starts afresh with EHLO."""
        self.tls_active = True
        self.transaction = None
        self.helo_name, self.esmtp = "", False
        self.state = State.CONNECTED

    def _mechanisms(self) -> list[str]:
        return mechanisms(self.tls_active, self.settings.allow_plaintext_auth)

    def auth(self, arg: bytes) -> Reply:
        if self.user:
            return reply(503, "5.5.1", "Error: already authenticated")
        if self.transaction is not None:
            return reply(503, "5.5.1", "Error: MAIL transaction in progress")
        name, _, initial = arg.decode("ascii", "replace").partition(" ")
        return self._auth_reply(self._auth.start(name, initial.strip() or None, self._mechanisms()))

    def _auth_reply(self, step: Step) -> Reply:
        match step.kind:
            case StepKind.CHALLENGE:
                return Reply(f"334 {step.challenge}\r\n".encode())
            case StepKind.SUCCESS:
                self.user = step.user
                return reply(235, "2.7.0", "Authentication successful")
            case StepKind.CANCELLED:
                return reply(501, "5.7.0", "Authentication cancelled")
            case StepKind.NEEDS_TLS:
                return reply(538, "5.7.11", "Encryption required for requested authentication "
                             "mechanism")
            case StepKind.UNSUPPORTED:
                return reply(504, "5.5.4", "Unsupported authentication mechanism")
            case StepKind.UNAVAILABLE:
                return reply(454, "4.7.0", "Temporary authentication failure, try again later")
        # FAILURE: one reply for every one, so unknown user and wrong password look the same.
        failed = reply(535, "5.7.8", "Error: authentication failed")
        failed.failure = Failure.AUTH
        return failed

    # trace

    def trace_header(self, queue_id: str) -> bytes:
        """The Received: header (RFC 5321 4.4) for the transaction in progress."""
        transaction = self.transaction
        assert transaction is not None
        protocol = ("UTF8SMTP" if transaction.smtputf8 else "ESMTP") if self.esmtp else "SMTP"
        if self.esmtp:  # RFC 3848: S for TLS, A for an authenticated client
            protocol += ("S" if self.tls_active else "") + ("A" if self.user else "")
        target = f"\r\n\tfor <{transaction.recipients[0]}>" if len(transaction.recipients) == 1 else ""
        helo = "".join(c if c.isprintable() and c not in "()\\" else "?" for c in self.helo_name)
        date = email.utils.format_datetime(email.utils.localtime())
        return (f"Received: from {helo} ([{self.peer_ip}])\r\n\tby {self.settings.hostname} "
                f"(mailforge) with {protocol} id {queue_id}{target};\r\n\t{date}\r\n").encode()


def _non_smtp(line: bytes) -> str:
    """What `line` is when it is plainly no SMTP command ("" when it may be one): a forbidden
    verb, or a header line ("Host: ...", "Subject: ..."): its first word holds a colon, which
    no command verb does."""
    first = line.split(b" ", 1)[0]
    if first.upper() in FORBIDDEN_VERBS:
        return first.upper().decode()
    return "a header line" if b":" in first else ""


COMMANDS: dict[str, Command] = {
    "HELO": Command(SMTPMachine.helo),
    "EHLO": Command(SMTPMachine.ehlo),
    "MAIL": Command(SMTPMachine.mail, State.GREETED),
    "RCPT": Command(SMTPMachine.rcpt, State.MAIL),
    "DATA": Command(SMTPMachine.data, State.RCPT),
    # BDAT checks its own state: its octets must be read even when the command is refused.
    "BDAT": Command(SMTPMachine.bdat),
    "RSET": Command(SMTPMachine.rset),
    "NOOP": Command(SMTPMachine.noop),
    "QUIT": Command(SMTPMachine.quit),
    "HELP": Command(SMTPMachine.help),
    "VRFY": Command(SMTPMachine.vrfy),
    "EXPN": Command(SMTPMachine.expn),
    "STARTTLS": Command(SMTPMachine.starttls),
    "AUTH": Command(SMTPMachine.auth, State.GREETED),
}
