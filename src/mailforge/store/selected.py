"""A selected folder: one session's view of a Maildir++ folder (api.Folder).

The view changes only in `refresh()` and in the session's own expunges, so sequence numbers
hold still between commands. `refresh()` takes in the folder's change log (folderlog.py): when
nothing changed it costs three stat calls (the log, new/ and cur/) and reads no directory;
when something did, the view takes in only the UIDs the index's records touched since it last
looked (uidindex.UidIndex.touched), by bisection, and compares every message only when it
missed more than the index remembers or much of the folder changed.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from operator import attrgetter
from pathlib import Path
from typing import Protocol

from .api import (
    DELETED,
    SYSTEM_FLAGS,
    Changes,
    FlagMode,
    FolderNotFound,
    MessageGone,
    MessageInfo,
    MessageSummary,
    StoreError,
)
from .folderdir import FolderDir, Listing
from .pop3box import crlf_form
from .uidindex import Entry


class OwningMailbox(Protocol):
    """What a selected folder asks of the mailbox it belongs to (folders.MaildirMailbox)."""

    def check_writable(self, name: str) -> None: ...

    def add_copies(self, target: str, sources: list[tuple[Path, MessageInfo]],
                   selected: SelectedFolder | None = None) -> tuple[int, list[int]]: ...


class SelectedFolder:
    def __init__(self, mailbox: OwningMailbox, name: str, folder: FolderDir,
                 read_only: bool) -> None:
        self.name = name
        self.read_only = read_only
        self._mailbox = mailbox
        self._dir = folder
        self._entries: dict[int, Entry] = {}
        self._infos: list[MessageInfo] = []
        self._recent: set[int] = set()
        # \Recent this view claimed while storing into its folder, for its next refresh.
        self._claimed: frozenset[int] = frozenset()
        # The index's list of touched UIDs this view took in, and how many of them.
        self._touched: list[int] | None = None
        self._touched_seen = 0
        listing = self._scan()
        self.uidvalidity = listing.uidvalidity
        self._take(listing)

    @property
    def uidnext(self) -> int:
        return self._uidnext

    @property
    def highestmodseq(self) -> int:
        return self._highestmodseq

    def expunged_since(self, modseq: int) -> list[int] | None:
        expunged = self._dir.expunged_since(modseq)
        if expunged is None:
            return None
        return [uid for uid in expunged if uid not in self._entries]

    def messages(self) -> Sequence[MessageInfo]:
        return self._infos

    # -- taking in changes

    def refresh(self) -> Changes:
        listing = self._scan()
        if listing.version == self._version:
            return Changes()
        if listing.uidvalidity != self.uidvalidity:
            raise StoreError("the folder was rebuilt with a new UIDVALIDITY; select it again")
        return self._take(listing)

    def _scan(self) -> Listing:
        try:
            return self._dir.listing(claim=not self.read_only)
        except FileNotFoundError:
            if self._dir.exists():
                raise
            raise FolderNotFound("the selected folder was deleted") from None

    def _take(self, listing: Listing) -> Changes:
        """The listing becomes the view; what changed against the view before it. A message
        whose file name is as it was keeps its MessageInfo (its flags live in the name)."""
        self._uidnext = listing.uidnext
        self._highestmodseq = listing.highestmodseq
        self._version = listing.version
        newly_recent = (listing.recent | self._claimed) - self._recent
        self._claimed = frozenset()
        self._recent |= newly_recent
        touched, seen = self._touched, self._touched_seen
        self._touched, self._touched_seen = listing.touched, listing.touched_count
        if not self._entries:  # the first view (or all was expunged): every message is added
            self._entries = {entry.uid: entry for entry in listing.entries}
            self._infos = self._dir.infos(listing.entries, self._recent)
            return Changes(added=tuple(self._infos))
        if touched is not None and touched is listing.touched:
            uids = set(touched[seen:listing.touched_count])
            uids.update(uid for uid in newly_recent if uid in self._entries)
            if _few(len(uids), len(self._infos)):
                return self._take_touched(listing, sorted(uids))
        return self._take_all(listing)

    def _take_touched(self, listing: Listing, uids: list[int]) -> Changes:
        """_take for a view that took in all but these UIDs' changes: each is looked up in
        the listing and the view by bisection, not by walking every message."""
        entries, infos = self._entries, list(self._infos)  # the old view may still be in use
        listed = listing.entries
        expunged, added, flagged = [], [], []
        for uid in uids:
            at, place = _find(listed, uid), _find(infos, uid)
            if at < 0:
                if place >= 0:
                    del infos[place]
                    del entries[uid]
                    expunged.append(uid)
            elif place < 0:
                entry = entries[uid] = listed[at]
                info = self._info(entry)
                infos.insert(bisect.bisect_left(infos, uid, key=_uid_of), info)
                added.append(info)
            elif (entries[uid] is not listed[at] and entries[uid] != listed[at]
                  or infos[place].recent != (uid in self._recent)):
                entry = entries[uid] = listed[at]
                before, infos[place] = infos[place], self._info(entry)
                if infos[place].flags != before.flags:
                    flagged.append(infos[place])
        self._infos = infos
        return Changes(expunged=tuple(expunged), added=tuple(added), flags=tuple(flagged))

    def _take_all(self, listing: Listing) -> Changes:
        """_take by comparing every message of the listing with the view."""
        before_entries = self._entries
        before = {info.uid: info for info in self._infos}
        entries: dict[int, Entry] = {}
        infos, added, flagged = [], [], []
        for entry in listing.entries:
            uid = entry.uid
            entries[uid] = entry
            info = before.get(uid)
            if info is None:
                info = self._info(entry)
                added.append(info)
            elif (before_entries[uid] is not entry and before_entries[uid] != entry
                  or info.recent != (uid in self._recent)):
                old_flags = info.flags
                info = self._info(entry)
                if info.flags != old_flags:
                    flagged.append(info)
            infos.append(info)
        self._entries, self._infos = entries, infos
        return Changes(expunged=tuple(uid for uid in before if uid not in entries),
                       added=tuple(added), flags=tuple(flagged))

    def _info(self, entry: Entry) -> MessageInfo:
        return self._dir.info(entry, entry.uid in self._recent)

    def claims_recent_in(self, folder: FolderDir) -> bool:
        """Whether this is a read-write view of `folder`: what this session stores there is
        claimed (\\Recent to it) in the same change set, as its next refresh would claim it."""
        return not self.read_only and folder is self._dir

    def took_recent(self, uids: frozenset[int]) -> None:
        self._claimed |= uids

    # -- reading and changing

    def read(self, uid: int) -> bytes:
        entry = self._entry(uid)
        data = crlf_form(self._dir.read(entry))
        self._dir.summaries.learn(entry.base, data,
                                  lambda: {known.base for known in self._entries.values()})
        return data

    def summary(self, uid: int, look: bool = True) -> MessageSummary | None:
        return self._dir.summaries.get(self._entry(uid).base, look)

    def set_flags(self, uids: Iterable[int], flags: Iterable[str], mode: FlagMode,
                  unchanged_since: int | None = None) -> list[MessageInfo]:
        entries = [self._entries[uid] for uid in sorted(set(uids)) if uid in self._entries]
        if self.read_only or not entries:
            return [self._info(entry) for entry in entries]
        self._mailbox.check_writable(self.name)
        wanted = canonical_flags(flags)
        keywords = self._dir.keywords

        def change(letters: str) -> str:
            return keywords.letters(mode.applied(keywords.flags(letters), wanted), letters)

        return self._renamed(self._dir.rename_flags(entries, change, unchanged_since))

    def _renamed(self, renamed: dict[int, Entry]) -> list[MessageInfo]:
        changed = []
        infos = list(self._infos)  # the old view may still be in use
        for uid, entry in renamed.items():
            self._entries[uid] = entry
            info = self._info(entry)
            changed.append(info)
            place = _find(infos, uid)
            if place >= 0:
                infos[place] = info
        self._infos = infos
        self._highestmodseq = _own_highest(self._highestmodseq, renamed.values())
        return changed

    def expunge(self, uids: Iterable[int] | None = None) -> list[int]:
        if self.read_only:
            return []
        self._mailbox.check_writable(self.name)
        chosen = None if uids is None else set(uids)
        doomed = [self._entries[info.uid] for info in self._infos
                  if DELETED in info.flags and (chosen is None or info.uid in chosen)]
        if not doomed:
            return []
        removed = self._dir.remove(doomed, only_deleted=True)
        self._drop(removed)
        return removed

    def copy(self, uids: Iterable[int], target: str) -> tuple[int, list[tuple[int, int]]]:
        """All of the messages or none: MessageGone when one was expunged by another session."""
        entries = [self._entries[uid] for uid in sorted(set(uids)) if uid in self._entries]
        sources = [(self._dir.path_of(entry), self._info(entry)) for entry in entries]
        uidvalidity, new_uids = self._mailbox.add_copies(target, sources, self)
        return uidvalidity, [(entry.uid, new) for entry, new in zip(entries, new_uids)]

    def move(self, uids: Iterable[int], target: str) -> tuple[int, list[tuple[int, int]]]:
        if self.read_only:
            raise StoreError("the folder is selected read-only")
        self._mailbox.check_writable(self.name)
        uidvalidity, pairs = self.copy(uids, target)
        moved = {source for source, _ in pairs}
        self._drop(self._dir.remove([self._entries[uid] for uid in sorted(moved)]))
        return uidvalidity, pairs

    def _drop(self, removed: list[int]) -> None:
        gone = set(removed)
        for uid in gone:
            self._entries.pop(uid, None)
        if not _few(len(gone), len(self._infos)):
            self._infos = [info for info in self._infos if info.uid not in gone]
            return
        infos = list(self._infos)  # the old view may still be in use
        for uid in sorted(gone, reverse=True):
            place = _find(infos, uid)
            if place >= 0:
                del infos[place]
        self._infos = infos

    def _entry(self, uid: int) -> Entry:
        try:
            return self._entries[uid]
        except KeyError:
            raise MessageGone(f"no message with UID {uid}") from None

    def close(self) -> None:
        self._entries, self._infos = {}, []


def canonical_flags(flags: Iterable[str]) -> frozenset[str]:
    """System flags in their canonical spelling (they are case-insensitive, RFC 3501 2.3.2);
    \\Recent, which no one can set, and unknown backslash flags left out."""
    canonical = {flag.lower(): flag for flag in SYSTEM_FLAGS}
    return frozenset(canonical.get(flag.lower(), flag) for flag in flags
                     if not flag.startswith("\\") or flag.lower() in canonical)


_uid_of = attrgetter("uid")  # of an Entry or a MessageInfo


def _find(ordered: Sequence[Entry] | Sequence[MessageInfo], uid: int) -> int:
    """Where `uid` is in a list in UID order, by bisection; -1 when it is not there."""
    at = bisect.bisect_left(ordered, uid, key=_uid_of)
    return at if at < len(ordered) and ordered[at].uid == uid else -1


def _own_highest(highest: int, own: Iterable[Entry]) -> int:
    """The view's HIGHESTMODSEQ once its own change set gave these entries: their highest
    MODSEQ when they took every MODSEQ above `highest` (each record takes the next one), so
    that nothing but the session's own change happened since; else `highest`, until a
    refresh reports what other sessions changed in between (RFC 5162 erratum 1810: the
    HIGHESTMODSEQ a client is told must not cover changes it was not told of)."""
    fresh = [entry.modseq for entry in own if entry.modseq > highest]
    if fresh and max(fresh) - highest == len(fresh):
        return max(fresh)
    return highest


def _few(changed: int, messages: int) -> bool:
    """Whether so few messages changed that finding each by bisection beats comparing every
    one (past a few in eight, it does not)."""
    return changed <= messages // 8 + 16
