"""What protocol code may ask of a mailbox store (STYLE 8: protocol code never builds a path).

IMAP (and later anything else that reads folders) talks to a `Mailbox` and the `Folder`s it
opens; POP3 to a `Maildrop`. Every method may block on disk: drivers call them in the worker's
thread pool.
Folder names here are Unicode strings with "/" as the hierarchy separator and "INBOX" for the
inbox, whatever the disk layout (Maildir++ `.Sent.2024`); the IMAP layer converts them to and
from modified UTF-7 on the wire. Names under `PUBLIC_PREFIX` are the domain's public folders; under `SHARED_PREFIX`
"#shared/OWNER/folder" the folders another mailbox of the domain (OWNER, its local part)
shares through an access control list (RFC 4314, store/acl.py).
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

from .steps import Steps

SEPARATOR = "/"
INBOX = "INBOX"
PUBLIC_PREFIX = "#public/"
SHARED_PREFIX = "#shared/"

# IMAP's system flags (RFC 3501 2.3.2); \Recent is session state, kept in MessageInfo.recent.
SEEN, ANSWERED, FLAGGED, DELETED, DRAFT = "\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"
SYSTEM_FLAGS = frozenset((SEEN, ANSWERED, FLAGGED, DELETED, DRAFT))


class StoreError(Exception):
    """A store operation failed; the message is safe to show to the client."""


class FolderNotFound(StoreError):
    """No such folder (IMAP answers NO [NONEXISTENT], or [TRYCREATE] for APPEND/COPY/MOVE)."""


class FolderExists(StoreError):
    """CREATE or RENAME onto a name in use (NO [ALREADYEXISTS])."""


class InvalidName(StoreError):
    """A name the store cannot hold, or an operation a folder does not allow (NO [CANNOT])."""


class UnsupportedUse(StoreError):
    """CREATE with a special use (RFC 6154) the store cannot give that folder (NO [USEATTR])."""


class NotPermitted(StoreError):
    """Writing to a public folder, or another action the account may not take (NO [NOPERM])."""


class OverQuota(StoreError):
    """The write would take the mailbox over its quota (NO [OVERQUOTA]; SMTP 552 5.2.2)."""


class MessageGone(StoreError):
    """The message was expunged by another session (IMAP answers NO [EXPUNGEISSUED], RFC 5530)."""


class MaildropBusy(StoreError):
    """Another POP3 session holds the maildrop (POP3 answers -ERR [IN-USE])."""


class FlagMode(enum.Enum):
    REPLACE = "replace"  # STORE FLAGS
    ADD = "add"          # STORE +FLAGS
    REMOVE = "remove"    # STORE -FLAGS

    def applied(self, current: frozenset[str], flags: frozenset[str]) -> frozenset[str]:
        """The flags a message has once `flags` are stored on its `current` ones this way."""
        if self is FlagMode.ADD:
            return current | flags
        if self is FlagMode.REMOVE:
            return current - flags
        return flags


@dataclass(frozen=True, slots=True)
class MessageInfo:
    uid: int
    flags: frozenset[str]   # system flags and keywords, never \Recent
    internal_date: float    # seconds since the epoch (INTERNALDATE)
    size: int               # octets of the CRLF form (RFC822.SIZE)
    recent: bool = False    # \Recent for the session that holds this Folder
    modseq: int = 0         # when it was added or its flags last changed (RFC 7162 MODSEQ)


@dataclass(frozen=True, slots=True)
class MessageSummary:
    """What FETCH and SEARCH need of a message without its body, kept in the folder's summary
    cache (store/cache.py) so that asking for it again opens no message file."""

    header: bytes          # the header block in CRLF form, its blank line included
    envelope: bytes        # ENVELOPE's parenthesised value, as FETCH sends it
    body: bytes            # BODY (no section): the basic body structure
    bodystructure: bytes   # BODYSTRUCTURE, with the extension data


class Summarizer(Protocol):
    """Builds a message's summary from its CRLF bytes (None: not worth keeping). The store
    cannot render IMAP's structures itself, so the IMAP side hands it one of these."""

    # Which rendering the summaries come from: cached ones of another version are ignored,
    # so a fix in how BODYSTRUCTURE is rendered never meets stale copies.
    version: int

    def summarize(self, data: bytes) -> MessageSummary | None: ...


# FolderInfo attributes a folder that cannot be selected has (and a level that only holds
# other folders, RFC 5258 3.4), as LIST shows them.
NOSELECT, NONEXISTENT = "\\Noselect", "\\NonExistent"


@dataclass(frozen=True, slots=True)
class FolderInfo:
    name: str
    # \HasChildren \HasNoChildren \Noselect \NonExistent, and the special-use attribute
    # (\Sent \Drafts \Trash \Junk \Archive, RFC 6154) when the folder has one.
    attributes: frozenset[str]
    subscribed: bool


@dataclass(frozen=True, slots=True)
class FolderStatus:
    messages: int
    recent: int
    unseen: int
    uidnext: int
    uidvalidity: int
    size: int = 0
    highestmodseq: int = 0
    deleted: int = 0        # messages flagged \Deleted (IMAP4rev2's STATUS DELETED)


@dataclass(frozen=True, slots=True)
class Changes:
    """What `Folder.refresh` found changed by other sessions, POP3 or delivery since last time.

    The IMAP layer turns these into untagged EXPUNGE (highest sequence number first, computed
    against its own view before applying), EXISTS/RECENT and FETCH FLAGS responses.
    """

    expunged: tuple[int, ...] = ()           # UIDs gone
    added: tuple[MessageInfo, ...] = ()      # new messages, UID order
    flags: tuple[MessageInfo, ...] = ()      # messages whose flags changed

    def __bool__(self) -> bool:
        return bool(self.expunged or self.added or self.flags)


@dataclass(frozen=True, slots=True)
class Quota:
    """Storage in use and its limits (RFC 9208 STORAGE in octets, MESSAGE in count); None = no limit."""

    used_bytes: int
    used_messages: int
    limit_bytes: int | None = None
    limit_messages: int | None = None


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to append: any line ends (kept as the store keeps them)."""

    data: bytes
    flags: frozenset[str] = frozenset()
    internal_date: float | None = None


@dataclass(frozen=True, slots=True)
class Appended:
    uidvalidity: int
    uids: tuple[int, ...] = field(default=())


class Folder(Protocol):
    """One selected folder, as one session sees it.

    `messages()` is the session's view: it changes only when the session calls `refresh()`
    (so sequence numbers stay stable between commands, as IMAP requires) and when the session
    itself expunges.
    """

    name: str
    read_only: bool
    uidvalidity: int

    @property
    def uidnext(self) -> int: ...

    @property
    def highestmodseq(self) -> int:
        """The highest MODSEQ of the folder when the view was taken, or of the view's own
        change made since when no other came between (RFC 7162 HIGHESTMODSEQ); it never goes
        backwards while UIDVALIDITY stays."""
        ...

    def expunged_since(self, modseq: int) -> list[int] | None:
        """The UIDs expunged after `modseq` and no longer in the view, in order (QRESYNC's
        VANISHED (EARLIER)); None when the folder no longer remembers that far back."""
        ...

    def messages(self) -> Sequence[MessageInfo]:
        """The session's view, in UID order (sequence number n is index n - 1)."""
        ...

    def refresh(self) -> Changes:
        """Take in what others changed since the last refresh and update `messages()`."""
        ...

    def read(self, uid: int) -> bytes:
        """The whole message in CRLF form; FolderNotFound-free, StoreError if it vanished.
        Its summary is kept as a side effect, for `summary` to answer next time."""
        ...

    def summary(self, uid: int, look: bool = True) -> MessageSummary | None:
        """The message's cached summary, read without opening the message; None when it is
        not cached yet (then `read` the message). MessageGone if it left the view. Without
        `look`, only what the cache was already seen to hold (no read of what other sessions
        added since: a command over many messages looks once)."""
        ...

    def set_flags(self, uids: Iterable[int], flags: Iterable[str], mode: FlagMode,
                  unchanged_since: int | None = None) -> list[MessageInfo]:
        """Change flags (no-op on a read-only folder); returns the messages as they are now.
        With `unchanged_since` (RFC 7162 UNCHANGEDSINCE), a message whose MODSEQ is higher by
        then is left alone and out of the result."""
        ...

    def expunge(self, uids: Iterable[int] | None = None) -> list[int]:
        """Remove messages flagged \\Deleted (only those among `uids` when given, UID EXPUNGE);
        returns the UIDs removed, and drops them from `messages()`."""
        ...

    def copy(self, uids: Iterable[int], target: str) -> tuple[int, list[tuple[int, int]]]:
        """Copy to another folder of the same mailbox, flags kept; returns the target's
        UIDVALIDITY and (source uid, new uid) pairs (UIDPLUS COPYUID)."""
        ...

    def move(self, uids: Iterable[int], target: str) -> tuple[int, list[tuple[int, int]]]:
        """COPY then expunge of the sources, as one step for other sessions (RFC 6851)."""
        ...

    def close(self) -> None:
        ...


class Mailbox(Protocol):
    """One account's folders (and its domain's public folders)."""

    address: str

    def folders(self) -> list[FolderInfo]:
        """Every folder, INBOX first; public folders when the domain shares them."""
        ...

    def create(self, name: str, special_use: list[str] | None = None) -> None:
        """`special_use`: the attributes the folder is to carry (UnsupportedUse when the
        store cannot give it those)."""
        ...

    def delete(self, name: str) -> None: ...

    def rename(self, old: str, new: str) -> None:
        """RENAME INBOX moves its messages into the new folder and leaves INBOX empty (RFC 3501)."""
        ...

    def subscribe(self, name: str, subscribed: bool = True) -> None: ...

    def subscriptions(self) -> list[str]: ...

    def names_version(self) -> Hashable:
        """Changes whenever a folder is created, deleted or renamed, or the subscriptions
        change (by any session or process); a few stats, no listing (NOTIFY's MailboxName
        and SubscriptionChange)."""
        ...

    def folder_version(self, name: str) -> Hashable:
        """Changes whenever the folder's messages or flags change; as cheap as an idle
        session's refresh when nothing did (NOTIFY's message events for folders that are
        not selected)."""
        ...

    def select(self, name: str, read_only: bool = False) -> Folder:
        """Open a folder for one session; a read-write select claims \\Recent for that session."""
        ...

    def status(self, name: str) -> FolderStatus: ...

    def append(self, name: str, data: bytes, flags: Iterable[str] = (),
               internal_date: float | None = None) -> Appended:
        """Store a message (any line ends; kept as the store keeps them) durably."""
        ...

    def append_many(self, name: str, messages: Sequence[NewMessage],
                    selected: Folder | None = None) -> Appended:
        """Store messages durably, all or none (MULTIAPPEND). `selected`: the session's
        selected folder, which claims \\Recent of them when it is theirs, read-write."""
        ...

    def append_steps(self, name: str, messages: Sequence[NewMessage],
                     selected: Folder | None = None) -> Steps[Appended]:
        """`append_many` as a change whose syncs the caller runs (store/steps.py)."""
        ...

    def quota(self) -> Quota: ...

    # -- access control (RFC 4314): rights are letters of store.acl.ALL_RIGHTS

    def rights(self, name: str) -> frozenset[str]:
        """MYRIGHTS: what this account may do to the folder (FolderNotFound when nothing)."""
        ...

    def acl(self, name: str) -> dict[str, frozenset[str]]:
        """GETACL: every identifier's rights, the implied ones included (needs "a")."""
        ...

    def fixed_rights(self, name: str, identifier: str) -> frozenset[str]:
        """LISTRIGHTS: the rights `identifier` holds whatever SETACL does (needs "a")."""
        ...

    def set_acl(self, name: str, identifier: str, rights: str) -> None:
        """SETACL: `rights` replaces, "+rights" adds, "-rights" removes (needs "a");
        ValueError for letters that are no rights."""
        ...

    def delete_acl(self, name: str, identifier: str) -> None: ...

    # -- annotations (RFC 5464): entries named in full ("/private/comment"), "" the server's

    def metadata(self, name: str) -> dict[str, bytes]:
        """Every entry of the folder (or the server) this account sees: the shared ones, its
        private ones, and /private/specialuse. Needs "l" and one of "rswip" on a folder."""
        ...

    def set_metadata(self, name: str, changes: dict[str, bytes | None]) -> None:
        """Set or (None) remove entries, all or none; store.metadata.TooBig or TooMany over
        the limits, NotPermitted for /private/specialuse (CREATE's USE sets that)."""
        ...

    def close(self) -> None: ...


class MaildropMessage(Protocol):
    """One message of a maildrop, as POP3 lists it."""

    @property
    def uid(self) -> str:
        """The UIDL (RFC 1939 7): the same for this message in every session."""
        ...

    @property
    def size(self) -> int:
        """Octets of the CRLF form, as POP3 sends it."""
        ...


class Maildrop(Protocol):
    """A POP3 maildrop: one mailbox's messages as they were when it was opened (RFC 1939),
    locked against other POP3 sessions until `close`. Messages are named by their index in
    `messages`; a message delivered meanwhile waits for the next session."""

    @property
    def messages(self) -> Sequence[MaildropMessage]: ...

    def read_start(self, index: int, size: int) -> tuple[bytes, BinaryIO | None]:
        """A message's first `size` bytes as stored (LF line ends), and the file open at that
        point when there is more (else None)."""
        ...

    def delete(self, indexes: Iterable[int]) -> int:
        """Remove messages (POP3's UPDATE state); how many could not be removed."""
        ...

    def close(self) -> None:
        """Release the lock."""
        ...
