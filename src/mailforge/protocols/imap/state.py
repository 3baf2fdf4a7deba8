"""The IMAP4rev1 session state machine (RFC 3501 3): NOT_AUTHENTICATED, AUTHENTICATED,
SELECTED, LOGOUT, and the command table every command is dispatched through.

Pure: no sockets, no paths. It takes parsed commands (speedups.CommandParser) and gives back
the reply octets with an action for the driver (protocols/imapd.py): start TLS, open the
user's mailbox after a login, idle, close. It reaches mail only through the store's
`Mailbox`/`Folder` interface (store/api.py), whose calls may block: commands flagged "store"
are run by the driver in the worker's thread pool, one at a time per session — except, in
SELECTED state, those that sync nothing (messages.runs_on_loop: FETCH without \\Seen,
STORE, EXPUNGE, NOOP, STATUS, LIST...), which are tried on the event loop, where the store
refuses to wait for a lock or to read many octets of messages (store/waiting.py) and such a
command goes to the pool.

Before the tagged reply of a command in SELECTED state, the folder is refreshed and what other
sessions changed is reported (RFC 3501 5.2) — except after FETCH, STORE and SEARCH, which use
sequence numbers and must not see EXPUNGEs (RFC 3501 7.4.1); their UID forms may.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import GeneratorType
from typing import TypeVar

from ...addresses import normalize_address
from ...auth.api import AccountsUnavailable, Authenticator
from ...auth.proxylogin import ProxyLogins
from ...auth.sasl import AuthExchange, Step, StepKind, mechanisms
from ...speedups import Command as ParsedCommand
from ...speedups import LiteralTooBig, ParseError
from ...store import steps, waiting
from ...store.api import Mailbox, StoreError
from ...store.waiting import WouldWait
from ..session import Action, Command, Failure, Reply
from . import acl, condstore, context, folders, listing, messages, metadata, notify, ordering
from .responses import (Bad, Status, Tagged, accounts_unavailable, bad, continuation, count,
                        disk_error, no, ok, store_error, text)
from .selected import Selected

log = logging.getLogger("mailforge.imap")

T = TypeVar("T")

# After this many BAD or NO replies in a row of mistakes the client is hung up on, as SMTP
# and POP3 do.
MAX_ERRORS = 30
# One answer for every failed login, which the brute-force defence counts (policy/abuse.py).
AUTHENTICATION_FAILED = "AUTHENTICATIONFAILED"


class State(enum.IntEnum):
    NOT_AUTHENTICATED = 0
    AUTHENTICATED = 1
    SELECTED = 2
    LOGOUT = 3


@dataclass(frozen=True)
class IMAPSettings:
    hostname: str
    tls_available: bool = False  # STARTTLS is offered (a certificate is there, TLS not yet on)
    allow_plaintext_auth: bool = False
    max_append: int = 36_700_160  # APPENDLIMIT (RFC 7889): the literal limit of the parser


# Always offered, whatever the state (RFC 3501 7.2.1 and the extensions' RFCs).
BASE_CAPABILITIES = ("IMAP4rev1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE",
                     "UNSELECT", "CHILDREN", "UIDPLUS", "MOVE", "SPECIAL-USE", "XLIST", "QUOTA",
                     "QUOTA=RES-STORAGE", "QUOTA=RES-MESSAGE",
                     "LIST-EXTENDED", "LIST-STATUS", "CREATE-SPECIAL-USE", "MULTIAPPEND",
                     "COMPRESS=DEFLATE", "BINARY", "CATENATE", "ACL", "RIGHTS=texk")
# The search family (issue #15): SEARCH's RETURN options, `$` and OLDER/YOUNGER.
SEARCH_CAPABILITIES = ("ESEARCH", "SEARCHRES", "WITHIN", "SORT", "SORT=DISPLAY", "ESORT",
                       "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES",
                       "CONTEXT=SEARCH", "CONTEXT=SORT")
# What a client switches on with ENABLE to get the protocol's newer forms (RFC 9051, 6855).
FORM_CAPABILITIES = ("IMAP4rev2", "UTF8=ACCEPT")
# Events from other folders and sessions (RFC 5465).
NOTIFY_CAPABILITIES = ("NOTIFY",)


@dataclass(frozen=True)
class Blocking:
    """A step of a command made on the event loop that must not run there (a sync: store/
    steps.py): the driver runs `step` in the thread pool, then IMAPMachine.resume_on_loop."""

    step: steps.Step
    resume: Callable[[Exception | None], Reply | Blocking]


@dataclass(frozen=True)
class _Run:
    """A command being handled: what its answer and the refresh after it need."""

    tag: str
    name: str
    entry: Command
    said: int  # untagged lines said before it, kept should it run again in the pool


def _on_loop(call: Callable[[], Reply | Blocking]) -> Reply | Blocking | None:
    """`call` where the store may not wait (store/waiting.py); None when it would have."""
    with waiting.refused(messages.LOOP_READ_LIMIT):
        try:
            return call()
        except WouldWait:
            return None


def _advance(change: steps.Steps[Tagged], error: Exception | None) -> steps.Step | Tagged:
    """The change's next step, or its answer once it is done; `error` thrown into it."""
    try:
        return change.throw(error) if error is not None else next(change)
    except StopIteration as done:
        return done.value


class IMAPMachine:
    def __init__(self, settings: IMAPSettings, accounts: Authenticator,
                 open_mailbox: Callable[[str], Mailbox], tls_active: bool = False,
                 proxy_logins: ProxyLogins | None = None) -> None:
        """`proxy_logins`: the cluster's proxied logins, where this session's peer may make
        them (auth.proxylogin)."""
        self.settings = settings
        self.accounts = accounts
        self.open_mailbox = open_mailbox
        self.tls_active = tls_active
        self.state = State.NOT_AUTHENTICATED
        self.user = ""
        self.via = ""  # the cluster node that logged the user in, for a proxied login
        self.mailbox: Mailbox | None = None
        self.selected: Selected | None = None
        self.errors = 0
        self._untagged: list[bytes] = []
        self._auth = AuthExchange(accounts, settings.hostname, proxy_logins)
        self._pending_tag = ""   # AUTHENTICATE, login and IDLE finish later with this tag
        # Set when the selected folder cannot be followed any more (deleted, or rebuilt under
        # a new UIDVALIDITY, by another session): the BYE that ends the session.
        self.farewell = b""
        self.compressed = False  # COMPRESS DEFLATE is on (RFC 4978)
        self.sync = condstore.SyncExtensions()
        self.notifier: notify.Notifier | None = None

    # --- what the driver calls ---------------------------------------------------------------

    def greeting(self) -> bytes:
        return (f"* OK [CAPABILITY {self.capabilities()}] {self.settings.hostname} "
                "IMAP4rev1 mailforge ready\r\n").encode()

    @staticmethod
    def idle_reply() -> bytes:
        return b"* BYE Autologout; idle for too long\r\n"

    @property
    def in_sasl(self) -> bool:
        """An AUTHENTICATE exchange waits for the client's next line (not a command)."""
        return self._auth.active

    def runs_in_thread(self, command: ParsedCommand) -> bool:
        """Whether the driver runs the command in the thread pool; else on the event loop,
        through `handle_on_loop`."""
        entry = COMMANDS.get(command.name)
        if entry is None:
            return False
        if self.notifier is not None:
            return True  # NOTIFY's look reads other folders
        if self.state is not State.SELECTED:
            return "store" in entry.flags
        assert self.selected is not None
        if "store" not in entry.flags:
            return bool(self.selected.contexts)  # the refresh after it may search again
        return not messages.runs_on_loop(self, command.name, command.args)

    def handle_on_loop(self, command: ParsedCommand) -> Reply | Blocking | None:
        """`handle` on the event loop, where the store waits for no lock and reads little
        (store/waiting.py): None when the command would have waited before it changed
        anything, and then the driver runs it in the thread pool, where waiting is harmless.
        A change with syncs (APPEND) gives each sync back as Blocking: the driver runs its
        step in the pool and then `resume_on_loop`."""
        return _on_loop(lambda: self._handle(command, on_loop=True))

    def resume_on_loop(self, blocking: Blocking, error: Exception | None
                       ) -> Reply | Blocking | None:
        """The command of `blocking` carried on once its step was done (`error`: what the
        step raised); None as for `handle_on_loop`, the change given up unmade."""
        return _on_loop(lambda: blocking.resume(error))

    def handle(self, command: ParsedCommand) -> Reply:
        """A command run where it may block (the thread pool), its syncs included."""
        reply = self._handle(command, on_loop=False)
        assert isinstance(reply, Reply)
        return reply

    def _handle(self, command: ParsedCommand, on_loop: bool) -> Reply | Blocking:
        tag = command.tag
        entry = COMMANDS.get(command.name)
        if entry is None:
            return self._finish(tag, bad(f"Unknown command {command.name[:40]}"))
        if self.state < entry.requires or (entry.until is not None and self.state > entry.until):
            return self._finish(tag, bad(f"{command.name} is not valid in this state"))
        run = _Run(tag, command.name, entry, len(self._untagged))
        result = self._call(run, lambda: entry.handler(self, tag, command.args))
        if isinstance(result, GeneratorType):  # a change with syncs (store/steps.py)
            if on_loop:
                return self._carry_on(run, result, None)
            change = result
            result = self._call(run, lambda: steps.run(change))
        return self._complete(run, result)

    def _carry_on(self, run: _Run, change: steps.Steps[Tagged], error: Exception | None
                  ) -> Reply | Blocking:
        """A change made on the loop taken to its next step, which goes back to the driver
        (Blocking), or to its answer."""
        result = self._call(run, lambda: _advance(change, error))
        if isinstance(result, Tagged):
            return self._complete(run, result)
        return Blocking(result, lambda failed: self._carry_on(run, change, failed))

    def _call(self, run: _Run, call: Callable[[], T]) -> T | Tagged:
        """The handler's work, what it raised made the command's answer."""
        try:
            return call()
        except WouldWait:
            del self._untagged[run.said:]  # said again when the command runs again in the pool
            raise
        except Bad as exc:
            return bad(str(exc))
        except StoreError as exc:
            return store_error(exc, "trycreate" in run.entry.flags)
        except OSError as exc:
            # The disk failed or is full, or the folder went away under the command (deleted
            # by another session): a NO for it, and the refresh below tells which.
            log.error("%s: %s failed: %s", self.user, run.name, exc)
            return disk_error(exc)

    def _complete(self, run: _Run, result: Tagged) -> Reply:
        try:
            if self.state is State.SELECTED and self._refreshes_after(run.entry):
                self.report_changes(by_uid=run.name.startswith("UID "))
            self.report_context_updates()
            self.report_notifications()
        except WouldWait:
            pass  # on the loop, a lock is held elsewhere: the changes are told after a later command
        return self._finish(run.tag, result)

    def _refreshes_after(self, entry: Command) -> bool:
        """NOTIFY's SELECTED filter lets expunges be told after any command but SELECT."""
        if not entry.flags & UNREFRESHED:
            return True
        return "opens" not in entry.flags and bool(self.notifier and
                                                    self.notifier.immediate_expunges)

    def parse_error(self, error: ParseError) -> Reply:
        """What the parser refused: BAD, and the session goes on with the next command."""
        tag = error.tag or "*"
        if isinstance(error, LiteralTooBig):
            return self._finish(tag, bad(
                f"Literal too big (the limit is {self.settings.max_append} octets)", "TOOBIG"))
        return self._finish(tag, bad(f"Syntax error: {error}"))

    def _finish(self, tag: str, result: Tagged) -> Reply:
        if result.status is Status.OK:
            self.errors = 0
        elif result.status is not Status.CONTINUE:
            self.errors += 1
        lines, self._untagged = self._untagged, []
        if self.farewell:
            # An IDLE about to start has no completion yet: the BYE alone ends it.
            done = b"" if result.action is Action.IDLE else result.render(tag)
            return Reply(b"".join(lines) + done + self.farewell, Action.CLOSE)
        if self.errors >= MAX_ERRORS:
            lines.append(b"* BYE Too many errors\r\n")
            return Reply(b"".join(lines) + result.render(tag), Action.CLOSE)
        if result.action in (Action.IDLE, Action.OPEN_MAILDROP):
            # Not finished yet: the driver idles, or opens the mailbox, and the tagged reply
            # comes from idle_done() or mailbox_opened().
            self._pending_tag = tag
            return Reply(b"".join(lines), result.action)
        failure = Failure.AUTH if result.code == AUTHENTICATION_FAILED else None
        return Reply(b"".join(lines) + result.render(tag), result.action, failure=failure)

    def untagged(self, line: bytes) -> None:
        self._untagged.append(line)

    def report_changes(self, by_uid: bool = False) -> None:
        assert self.selected is not None
        try:
            changes = self.selected.folder.refresh()
        except StoreError as exc:
            # Its messages' sequence numbers cannot be kept: as Dovecot does, disconnect.
            self.close_folder()
            reason = str(exc)
            self.farewell = f"* BYE {reason[:1].upper()}{reason[1:]}, have to disconnect\r\n".encode()
            return
        if changes:
            self._untagged += self.selected.changes(changes, by_uid)
            if changes.added and self.notifier is not None:
                self._untagged += self.notifier.new_messages(self.selected, changes.added)

    def report_notifications(self) -> None:
        """NOTIFY: what changed in the other folders watched (RFC 5465)."""
        if self.notifier is None or self.mailbox is None or self.state is State.LOGOUT:
            return
        name = self.selected.folder.name if self.selected is not None else None
        self._untagged += self.notifier.look(self.mailbox, name)
        if self.notifier.overflowed:
            self.notifier = None

    def report_context_updates(self) -> None:
        """RFC 5267: what changed in the results of SEARCH/SORT ... RETURN (UPDATE)."""
        if self.selected is not None:
            self._untagged += self.selected.context_updates()

    # --- any state ---------------------------------------------------------------------------

    def capabilities(self) -> str:
        caps = list(BASE_CAPABILITIES)
        caps += SEARCH_CAPABILITIES
        caps += FORM_CAPABILITIES
        caps += condstore.CAPABILITIES
        caps += NOTIFY_CAPABILITIES
        caps += metadata.CAPABILITIES
        caps.append(f"APPENDLIMIT={self.settings.max_append}")
        if self.state is State.NOT_AUTHENTICATED:
            if self.settings.tls_available and not self.tls_active:
                caps.append("STARTTLS")
            if not self._plaintext_allowed():
                caps.append("LOGINDISABLED")
            caps += [f"AUTH={name}" for name in self._mechanisms()]
        return " ".join(caps)

    def capability(self, tag: str, args: list) -> Tagged:
        count(args, 0, syntax="CAPABILITY")
        self.untagged(f"* CAPABILITY {self.capabilities()}\r\n".encode())
        return ok("CAPABILITY completed")

    def noop(self, tag: str, args: list) -> Tagged:
        count(args, 0, syntax="NOOP")
        return ok("NOOP completed")

    def logout(self, tag: str, args: list) -> Tagged:
        count(args, 0, syntax="LOGOUT")
        self.close_folder()
        self.state = State.LOGOUT
        self.untagged(b"* BYE Logging out\r\n")
        return ok("LOGOUT completed", action=Action.CLOSE)

    def id_command(self, tag: str, args: list) -> Tagged:
        """RFC 2971: the client's list is accepted whatever it holds; ours names the server."""
        count(args, 1, syntax="ID (field value ...) | NIL")
        if not (args[0] == "NIL" or (isinstance(args[0], list) and len(args[0]) % 2 == 0
                                     and len(args[0]) <= 60)):
            raise Bad("Syntax: ID (field value ...) | NIL")
        self.untagged(b'* ID ("name" "mailforge" "vendor" "mailforge")\r\n')
        return ok("ID completed")

    def enable(self, tag: str, args: list) -> Tagged:
        """RFC 5161: CONDSTORE and QRESYNC (which implies CONDSTORE, RFC 7162 3.2.3), UTF8=ACCEPT
        and IMAP4rev2 (whose mailbox names are UTF-8 too, RFC 9051 5.1) are the extensions
        served that need enabling; the others named are left off, silently."""
        count(args, 1, 100, syntax="ENABLE capability ...")
        names = {arg.upper() for arg in args if isinstance(arg, str)}
        enabled = []
        if "IMAP4REV2" in names and not self.sync.rev2:
            self.sync.rev2 = True
            enabled.append("IMAP4rev2")
        if "UTF8=ACCEPT" in names and not self.sync.utf8:
            self.sync.utf8 = True
            enabled.append("UTF8=ACCEPT")
        if "QRESYNC" in names and not self.sync.qresync:
            self.sync.qresync = True
            enabled.append("QRESYNC")
        if names & set(condstore.CAPABILITIES) and not self.sync.condstore:
            condstore.start_condstore(self)
            enabled.insert(0, "CONDSTORE")
        self.untagged(" ".join(["* ENABLED", *enabled]).encode() + b"\r\n")
        return ok("ENABLE completed")

    def compress(self, tag: str, args: list) -> Tagged:
        """RFC 4978: the driver deflates both directions once the OK is out."""
        count(args, 1, syntax="COMPRESS DEFLATE")
        if not isinstance(args[0], str) or args[0].upper() != "DEFLATE":
            return bad("Unknown compression mechanism")
        if self.compressed:
            return no("DEFLATE is active already", "COMPRESSIONACTIVE")
        self.compressed = True
        return ok("DEFLATE active", action=Action.COMPRESS)

    # --- NOT_AUTHENTICATED -------------------------------------------------------------------

    def starttls(self, tag: str, args: list) -> Tagged:
        count(args, 0, syntax="STARTTLS")
        if self.tls_active:
            return bad("TLS is already active")
        if not self.settings.tls_available:
            return no("TLS is not available")
        return ok("Begin TLS negotiation now", action=Action.STARTTLS)

    def tls_started(self) -> None:
        """RFC 3501 6.2.1: still NOT_AUTHENTICATED, and the client asks CAPABILITY again."""
        self.tls_active = True

    def login(self, tag: str, args: list) -> Tagged:
        count(args, 2, syntax="LOGIN user password")
        if not self._plaintext_allowed():
            return no("Plaintext authentication disallowed on non-secure connections; "
                      "use STARTTLS first", "PRIVACYREQUIRED")
        user, password = text(args[0]), text(args[1])
        try:
            if not self.accounts.check_password(user, password):
                return no("Authentication failed", AUTHENTICATION_FAILED)
        except AccountsUnavailable:
            return accounts_unavailable()
        return self._logged_in(normalize_address(user))

    def authenticate(self, tag: str, args: list) -> Tagged:
        count(args, 1, 2, syntax="AUTHENTICATE mechanism [initial-response]")
        name = args[0] if isinstance(args[0], str) else ""
        initial = text(args[1]) if len(args) == 2 else None
        self._pending_tag = tag
        return self._auth_reply(self._auth.start(name, initial, self._mechanisms()))

    def sasl_line(self, line: bytes) -> Reply:
        """The client's answer to an AUTHENTICATE challenge (runs in the thread pool: the
        password checks are deliberately slow)."""
        return self._finish(self._pending_tag, self._auth_reply(self._auth.answer(line)))

    def sasl_too_long(self) -> Reply:
        self._auth.abort()
        return self._finish(self._pending_tag, bad("Authentication line too long"))

    def _auth_reply(self, step: Step) -> Tagged:
        match step.kind:
            case StepKind.CHALLENGE:
                return continuation(step.challenge)
            case StepKind.SUCCESS:
                self.via = step.via
                return self._logged_in(step.user)
            case StepKind.CANCELLED:
                return bad("Authentication cancelled")
            case StepKind.NEEDS_TLS:
                return no("Plaintext authentication disallowed on non-secure connections; "
                          "use STARTTLS first", "PRIVACYREQUIRED")
            case StepKind.UNSUPPORTED:
                return no("Unsupported authentication mechanism", "CANNOT")
            case StepKind.UNAVAILABLE:
                return accounts_unavailable()
        return no("Authentication failed", AUTHENTICATION_FAILED)  # FAILURE

    def _logged_in(self, user: str) -> Tagged:
        """The credentials are good: the driver checks the user's session count and opens the
        mailbox (`mailbox_opened`)."""
        self.user = user
        return ok("", action=Action.OPEN_MAILDROP)

    def mailbox_opened(self) -> Reply:
        """Runs in the thread pool: opening a mailbox may create it on disk."""
        try:
            self.mailbox = self.open_mailbox(self.user)
        except (StoreError, OSError, AccountsUnavailable):
            return self.login_refused("Cannot open the mailbox, try again later", "UNAVAILABLE")
        self.state = State.AUTHENTICATED
        return self._finish(self._pending_tag, ok("Logged in", f"CAPABILITY {self.capabilities()}"))

    def login_proxied(self, untagged: bytes, completion: bytes) -> Reply:
        """The mailbox's owner node took the session (mailbox routing): its answer to the
        login, under this client's tag; the driver carries the session there from now on."""
        return Reply(untagged + self._pending_tag.encode() + b" " + completion, Action.PROXY)

    def login_refused(self, reason: str, code: str) -> Reply:
        self.user = ""
        return self._finish(self._pending_tag, no(reason, code))

    def _plaintext_allowed(self) -> bool:
        return self.tls_active or self.settings.allow_plaintext_auth

    def _mechanisms(self) -> list[str]:
        return mechanisms(self.tls_active, self.settings.allow_plaintext_auth)

    # --- AUTHENTICATED and SELECTED ----------------------------------------------------------

    def select_folder(self, selected: Selected | None) -> None:
        self.close_folder()
        self.selected = selected
        self.state = State.AUTHENTICATED if selected is None else State.SELECTED

    def close_folder(self) -> None:
        if self.selected is not None:
            self.selected.folder.close()
            self.selected = None
            self.state = State.AUTHENTICATED

    def close(self) -> None:
        """The session ended, however it did: release the folder and the mailbox."""
        self.close_folder()
        if self.mailbox is not None:
            self.mailbox.close()
            self.mailbox = None

    def idle(self, tag: str, args: list) -> Tagged:
        count(args, 0, syntax="IDLE")
        if self.state is State.SELECTED:
            self.report_changes()
        return ok("", action=Action.IDLE)

    def idle_poll(self) -> bytes:
        """During IDLE (thread pool): what changed since the last look, as untagged responses."""
        if self.state is State.SELECTED:
            self.report_changes()
            self.report_context_updates()
        self.report_notifications()
        lines, self._untagged = self._untagged, []
        return b"".join(lines) + self.farewell

    def idle_done(self, line: bytes) -> Reply:
        if line.strip().upper() != b"DONE":
            return self._finish(self._pending_tag, bad("Expected DONE"))
        return self._finish(self._pending_tag, ok("IDLE terminated"))


N, A, S = State.NOT_AUTHENTICATED, State.AUTHENTICATED, State.SELECTED
STORE = frozenset({"store"})
SEQUENCE = frozenset({"store", "sequence"})
TRYCREATE = frozenset({"store", "trycreate"})
# SELECT and EXAMINE answer with the folder as they just listed it: nothing to refresh.
OPENS = frozenset({"store", "opens"})
# Commands after which the folder is not refreshed (see the module's docstring).
UNREFRESHED = frozenset({"sequence", "opens"})

COMMANDS: dict[str, Command] = {
    "CAPABILITY": Command(IMAPMachine.capability),
    "NOOP": Command(IMAPMachine.noop, flags=STORE),
    "LOGOUT": Command(IMAPMachine.logout, flags=STORE),
    "ID": Command(IMAPMachine.id_command),
    "ENABLE": Command(IMAPMachine.enable, A),
    "COMPRESS": Command(IMAPMachine.compress, A),
    "STARTTLS": Command(IMAPMachine.starttls, until=N),
    "LOGIN": Command(IMAPMachine.login, until=N, flags=STORE),
    "AUTHENTICATE": Command(IMAPMachine.authenticate, until=N, flags=STORE),
    "IDLE": Command(IMAPMachine.idle, A, flags=STORE),
    "NOTIFY": Command(notify.notify, A, flags=STORE),
    "GETMETADATA": Command(metadata.getmetadata, A, flags=STORE),
    "SETMETADATA": Command(metadata.setmetadata, A, flags=STORE),
    "SELECT": Command(folders.select, A, flags=OPENS),
    "EXAMINE": Command(folders.examine, A, flags=OPENS),
    "CREATE": Command(folders.create, A, flags=STORE),
    "DELETE": Command(folders.delete, A, flags=STORE),
    "RENAME": Command(folders.rename, A, flags=STORE),
    "SUBSCRIBE": Command(folders.subscribe, A, flags=STORE),
    "UNSUBSCRIBE": Command(folders.unsubscribe, A, flags=STORE),
    "LIST": Command(listing.list_command, A, flags=STORE),
    "XLIST": Command(listing.xlist, A, flags=STORE),
    "LSUB": Command(listing.lsub, A, flags=STORE),
    "STATUS": Command(folders.status, A, flags=STORE),
    "APPEND": Command(folders.append, A, flags=TRYCREATE),
    "NAMESPACE": Command(folders.namespace, A),
    "GETQUOTA": Command(folders.getquota, A, flags=STORE),
    "GETQUOTAROOT": Command(folders.getquotaroot, A, flags=STORE),
    "SETQUOTA": Command(folders.setquota, A),
    "GETACL": Command(acl.getacl, A, flags=STORE),
    "SETACL": Command(acl.setacl, A, flags=STORE),
    "DELETEACL": Command(acl.deleteacl, A, flags=STORE),
    "LISTRIGHTS": Command(acl.listrights, A, flags=STORE),
    "MYRIGHTS": Command(acl.myrights, A, flags=STORE),
    "CHECK": Command(messages.check, S, flags=STORE),
    "CLOSE": Command(messages.close, S, flags=STORE),
    "UNSELECT": Command(messages.unselect, S, flags=STORE),
    "EXPUNGE": Command(messages.expunge, S, flags=STORE),
    "SEARCH": Command(messages.search, S, flags=SEQUENCE),
    "FETCH": Command(messages.fetch, S, flags=SEQUENCE),
    "STORE": Command(messages.store, S, flags=SEQUENCE),
    "COPY": Command(messages.copy, S, flags=TRYCREATE),
    "MOVE": Command(messages.move, S, flags=TRYCREATE),
    "UID SEARCH": Command(messages.uid_search, S, flags=STORE),
    "UID FETCH": Command(messages.uid_fetch, S, flags=STORE),
    "UID STORE": Command(messages.uid_store, S, flags=STORE),
    "UID COPY": Command(messages.uid_copy, S, flags=TRYCREATE),
    "UID MOVE": Command(messages.uid_move, S, flags=TRYCREATE),
    "UID EXPUNGE": Command(messages.uid_expunge, S, flags=STORE),
    "SORT": Command(ordering.sort, S, flags=SEQUENCE),
    "UID SORT": Command(ordering.uid_sort, S, flags=STORE),
    "THREAD": Command(ordering.thread, S, flags=SEQUENCE),
    "UID THREAD": Command(ordering.uid_thread, S, flags=STORE),
    "CANCELUPDATE": Command(context.cancel_update, S, flags=STORE),
}
