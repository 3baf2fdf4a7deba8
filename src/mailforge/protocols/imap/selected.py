"""The selected folder as one session sees it: sequence numbers, sets, and what changed.

`Folder.messages()` is the session's view in UID order, so sequence number n is index n - 1
and a UID's sequence number is a bisection. Changes from other sessions become untagged
responses here (RFC 3501 7.4.1, 5.2): EXPUNGEs highest number first, so that each one is
right against the view the client holds after the ones before it, then FLAGS and PERMANENTFLAGS
when a message carries a keyword the client was not told of yet, then EXISTS and RECENT for
new messages, then FETCH FLAGS. Once the session enabled QRESYNC, one `* VANISHED` replaces
the EXPUNGEs; once CONDSTORE, every FETCH with FLAGS carries MODSEQ too (RFC 7162 3.2.10,
3.1.4).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from operator import attrgetter

from ...speedups import STAR, FetchAttribute, ParseError, parse_sequence_set
from ...store.acl import ALL_RIGHTS
from ...store.api import Changes, Folder, MessageInfo
from . import wire
from .condstore import SyncExtensions
from .context import SearchContexts
from .fetch import fetch_response
from .responses import Bad
from .results import SAVED_RESULT, sequence_set

_FLAGS_OF = attrgetter("flags")
_RECENT_OF = attrgetter("recent")

# RFC 3501 2.3.1.1: UIDs are 32-bit; "n:*" past the highest names the highest.
MAX_UID = 0xFFFFFFFF
# The flags every folder has, in the order FLAGS lists them.
SYSTEM_FLAG_ORDER = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


def _uid_of(info: MessageInfo) -> int:
    return info.uid


class Selected:
    def __init__(self, folder: Folder, rights: frozenset[str] = frozenset(ALL_RIGHTS),
                 sync: SyncExtensions | None = None) -> None:
        self.folder = folder
        self.rights = rights  # RFC 4314 MYRIGHTS at SELECT: which changes STORE may make
        # The session's: ENABLE may switch these on while the folder is selected.
        self.sync = sync if sync is not None else SyncExtensions()
        # The keywords this session's FLAGS named: a client may take a keyword in a FETCH that
        # FLAGS did not name for a protocol error (RFC 3501 7.2.6, imaptest checks it).
        self._keywords: frozenset[str] = frozenset()
        # RFC 5182: the UIDs of the last SEARCH ... RETURN (SAVE), which `$` names; a new
        # SELECT starts a new Selected, and so an empty one.
        self.saved_result: list[int] = []
        # RFC 5267: the results of SEARCH/SORT ... RETURN (UPDATE) kept up to date.
        self.contexts = SearchContexts()

    @property
    def read_only(self) -> bool:
        return self.folder.read_only

    def messages(self) -> Sequence[MessageInfo]:
        return self.folder.messages()

    def seq_of(self, uid: int) -> int:
        """The sequence number of a UID in the view (0 when it is not there)."""
        view = self.folder.messages()
        index = bisect.bisect_left(view, uid, key=_uid_of)
        return index + 1 if index < len(view) and view[index].uid == uid else 0

    def resolve(self, text: str, by_uid: bool) -> list[tuple[int, MessageInfo]]:
        """(sequence number, message) for every message a sequence or UID set names, once
        each, in order. A sequence number past the view is the client's mistake (BAD); a UID
        set may name UIDs that are gone, which are left out (RFC 3501 6.4.8). `$` is the
        saved result, in either form (RFC 5182 2.1); messages expunged since are left out."""
        if text == SAVED_RESULT:
            saved = set(self.saved_result)
            return [(seq, info) for seq, info in enumerate(self.folder.messages(), 1)
                    if info.uid in saved]
        try:
            ranges = parse_sequence_set(text)
        except ParseError:
            raise Bad("Invalid sequence set") from None
        view = self.folder.messages()
        if len(ranges) == 1:  # most sets are one range: in order and once each already
            span = (self._uid_range(view, *ranges[0]) if by_uid
                    else self._seq_range(len(view), *ranges[0]))
            return [(index + 1, view[index]) for index in span]
        indexes: set[int] = set()
        for first, last in ranges:
            if by_uid:
                indexes.update(self._uid_range(view, first, last))
            else:
                indexes.update(self._seq_range(len(view), first, last))
        return [(index + 1, view[index]) for index in sorted(indexes)]

    @staticmethod
    def _seq_range(size: int, first: int, last: int) -> range:
        low, high = (size if first == STAR else first), (size if last == STAR else last)
        low, high = min(low, high), max(low, high)
        if not size or high > size:
            raise Bad("Invalid sequence number" if size else "No messages")
        return range(low - 1, high)

    @staticmethod
    def _uid_range(view: Sequence[MessageInfo], first: int, last: int) -> range:
        highest = view[-1].uid if view else 0
        low, high = (highest if first == STAR else first), (highest if last == STAR else last)
        low, high = min(low, high), max(low, high)
        return range(bisect.bisect_left(view, low, key=_uid_of),
                     bisect.bisect_right(view, high, key=_uid_of))

    # --- untagged responses -----------------------------------------------------------------

    def expunged(self, uids: Iterable[int]) -> list[bytes]:
        """`* n EXPUNGE` for UIDs just dropped from the view, highest sequence number first.

        Each one's number in the view before it went: the messages still there below it (a
        bisection of the view as it is now) plus the dropped ones below it. New messages
        cannot be below it: their UIDs are higher than any the view held.
        """
        gone = sorted(set(uids))
        view = self.folder.messages()
        numbers = [bisect.bisect_left(view, uid, key=_uid_of) + rank + 1
                   for rank, uid in enumerate(gone)]
        lines = self.contexts.expunged(dict(zip(gone, numbers))) if self.contexts else []
        if self.sync.qresync:
            return lines + [b"* VANISHED %s\r\n" % sequence_set(gone)] if gone else lines
        return lines + [b"* %d EXPUNGE\r\n" % number for number in reversed(numbers)]

    def context_updates(self) -> list[bytes]:
        """ESEARCH ADDTO/REMOVEFROM for the search contexts whose results changed."""
        if not self.contexts:
            return []
        return self.contexts.updates(self.folder.messages(), self.seq_of)

    def changes(self, changes: Changes, by_uid: bool = False) -> list[bytes]:
        lines = self.expunged(changes.expunged)
        lines += self.keyword_news(changes.added + changes.flags)
        if changes.added:
            lines += self.counts()
        for info in changes.flags:
            seq = self.seq_of(info.uid)
            if seq:
                lines.append(self.flags_response(seq, info, by_uid))
        return lines

    def counts(self) -> list[bytes]:
        """EXISTS, and RECENT, which IMAP4rev2 has not (RFC 9051 E.7)."""
        view = self.folder.messages()
        if self.sync.rev2:
            return [b"* %d EXISTS\r\n" % len(view)]
        recent = sum(map(_RECENT_OF, view))
        return [b"* %d EXISTS\r\n" % len(view), b"* %d RECENT\r\n" % recent]

    def note_keywords(self, infos: Iterable[MessageInfo]) -> bool:
        """Take in the keywords these messages carry; whether any of them is new."""
        # Messages share a few flag sets (the store hands out one frozenset per combination):
        # looking at each set once keeps this cheap on a big folder's SELECT.
        keywords = {flag for flags in set(map(_FLAGS_OF, infos)) for flag in flags
                    if not flag.startswith("\\")}
        if keywords <= self._keywords:
            return False
        self._keywords |= keywords
        return True

    def flags_lines(self) -> list[bytes]:
        """`* FLAGS` and `* OK [PERMANENTFLAGS]` with the system flags and the keywords known."""
        defined = [*SYSTEM_FLAG_ORDER, *sorted(self._keywords)]
        permanent = [] if self.read_only else defined + ["\\*"]
        return [b"* FLAGS %s\r\n" % wire.flag_list(defined),
                b"* OK [PERMANENTFLAGS %s] Flags permitted\r\n" % wire.flag_list(permanent)]

    def keyword_news(self, infos: Iterable[MessageInfo]) -> list[bytes]:
        """FLAGS and PERMANENTFLAGS again when these messages carry a keyword the session has
        not announced (RFC 3501 7.2.6): to go before the FETCH responses that show it."""
        return self.flags_lines() if self.note_keywords(infos) else []

    def flags_response(self, seq: int, info: MessageInfo, with_uid: bool = True) -> bytes:
        return fetch_response(seq, info, FLAGS_ONLY, uid=self.with_uid(with_uid),
                              modseq=self.sync.condstore, recent=not self.sync.rev2)

    def modseq_response(self, seq: int, info: MessageInfo, with_uid: bool) -> bytes:
        """What STORE .SILENT still says once CONDSTORE is on (RFC 7162 3.1.3)."""
        return fetch_response(seq, info, (), uid=self.with_uid(with_uid), modseq=True)

    def with_uid(self, asked: bool) -> bool:
        """Whether a FETCH response this session did not ask for names the UID: for a UID
        command, and always once QRESYNC is on (RFC 7162 3.2.4), since such a client may
        know its messages by UID alone."""
        return asked or self.sync.qresync


FLAGS_ONLY = (FetchAttribute("FLAGS"),)
