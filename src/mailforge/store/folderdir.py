"""One Maildir++ folder on disk: listing with UIDs, adding, re-flagging and removing messages.

Every change of the UID index happens under its lock (uidindex.locked); so do our own renames
and unlinks, so that two sessions changing flags of one message both land (each applies its
change to the name it finds on disk, not to what it saw earlier). Other Maildir writers (POP3,
delivery, mutt) do not take the lock; a file they renamed is found again by its base name.
"""

from __future__ import annotations

import errno
import logging
import operator
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ..durable import fsync_dir, unlink_quietly, write_synced_file
from .api import MessageGone, MessageInfo, Summarizer
from .cache import SummaryCache
from .filenames import (
    arrival_order,
    base_of,
    crlf_size,
    field_of,
    letters_of,
    new_base,
    sized_name,
    with_letters,
)
from .flags import Keywords
from .maildir import MAILDIR_SUBDIRS, claim_new, find_message, follow_renames, open_message
from .uidindex import (
    INDEX_NAME,
    UidIndex,
    locked,
    next_uidvalidity,
    read,
    salvage,
    save,
)

log = logging.getLogger("mailforge.store")

FOLDER_MARKER = "maildirfolder"  # Maildir++: this directory is a folder, not a whole Maildir
# A directory's mtime moves on in ticks (the kernel's coarse clock; whole seconds on some file
# systems): a change made in the same tick as a listing leaves the mtime as it was. So a
# listing taken less than this long after the last change is not trusted to be final, and the
# next refresh lists again (Dovecot waits out the same second).
MTIME_SLACK_NS = 1_100_000_000

# Told (bytes, messages) whenever messages are added or removed: the quota's maildirsize.
UsageHook = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class Entry:
    uid: int
    sub: str   # "new" or "cur"
    name: str

    @property
    def base(self) -> str:
        return base_of(self.name)


@dataclass(frozen=True, slots=True)
class Listing:
    uidvalidity: int
    uidnext: int
    entries: list[Entry]         # UID order
    recent: frozenset[int]       # UIDs with \Recent: claimed by this listing, or unclaimed
    unclaimed: int = 0           # messages no read-write session has claimed (STATUS RECENT)


class FolderDir:
    def __init__(self, path: Path, root: Path, usage: UsageHook | None = None,
                 summarizer: Summarizer | None = None) -> None:
        self.path = path
        self.root = root  # the tree's root, where UIDVALIDITY values are handed out
        self.keywords = Keywords(path)
        self.usage = usage
        self.summaries = SummaryCache(path, summarizer)
        self._index: UidIndex | None = None
        self._index_stamp: tuple[int, int, int] | None = None
        # Base name -> (internal date, CRLF size): neither changes while the message exists,
        # so a session selecting the folder again needs no stat or read for the ones it knows.
        self._facts: dict[str, tuple[float, int]] = {}
        # File name -> its MessageInfo without \\Recent: flags live in the name, date and size
        # never change, so a message whose name is unchanged costs one lookup.
        self._infos: dict[str, MessageInfo] = {}
        self._infos_generation = self.keywords.generation
        # What the last listing saw, reused by the next: file name -> base name, and -> Entry.
        self._bases: dict[str, str] = {}
        self._listed: dict[str, Entry] = {}

    # -- the folder itself

    def exists(self) -> bool:
        return (self.path / "cur").is_dir()

    def create(self, marker: bool = True) -> None:
        for sub in MAILDIR_SUBDIRS:
            os.makedirs(self.path / sub, mode=0o700, exist_ok=True)
        if marker:
            (self.path / FOLDER_MARKER).touch(0o600)
        with locked(self.path):
            if read(self.path) is None:
                save(self.path, UidIndex(next_uidvalidity(self.root)))
        for sub in MAILDIR_SUBDIRS:
            fsync_dir(self.path / sub)
        fsync_dir(self.path)
        fsync_dir(self.path.parent)

    def stamp(self) -> tuple[int, ...]:
        """Changes whenever a message comes, goes or changes flags (see MTIME_SLACK_NS)."""
        values = []
        for name in ("new", "cur", INDEX_NAME):
            try:
                st = os.stat(self.path / name)
            except FileNotFoundError:
                values += [0, 0]
                continue
            values += [st.st_ino, st.st_mtime_ns]
        return tuple(values)

    # -- listing

    def sync(self, claim: bool = False) -> Listing:
        """The folder's messages with their UIDs, handing out UIDs to new ones. With `claim`
        (a read-write session), new/ moves into cur/ and the caller gets the \\Recent ones."""
        with locked(self.path):
            index = self._load()
            found = self._list()
            if claim:
                self._claim_new(found)
            dropped, assigned = self._reconcile(index, found)
            # \Recent: the messages no read-write session has claimed yet. A read-only one sees
            # them too (EXAMINE counts them, RFC 3501 6.3.2) but leaves them to the next claim.
            some_unclaimed = index.first_recent < index.uidnext
            recent = frozenset(u for u in index.uids.values()
                               if u >= index.first_recent) if some_unclaimed else frozenset()
            claimed = claim and some_unclaimed
            if claimed:
                index.first_recent = index.uidnext
            if assigned:  # UIDs handed out must survive a crash: never handed out twice
                self._save(index)
            elif dropped or claimed:
                self._save(index, durable=False)
            self.keywords.load()
        entries = self._entries(index, found)
        if len(self._facts) > len(entries):
            self._facts = {base: facts for base, facts in self._facts.items()
                           if base in index.uids}
        if len(self._infos) > 2 * len(entries):
            self._infos = {entry.name: self._infos[entry.name] for entry in entries
                           if entry.name in self._infos}
        unclaimed = sum(1 for entry in entries if entry.uid >= index.first_recent)
        return Listing(index.uidvalidity, index.uidnext, entries, recent, unclaimed)

    def _list(self) -> dict[str, tuple[str, str]]:
        # new/ before cur/: a message moving from one to the other meanwhile is still seen.
        found = {}
        known, self._bases = self._bases, {}
        for sub in ("new", "cur"):
            for name in os.listdir(self.path / sub):
                if not name.startswith("."):
                    base = known.get(name) or base_of(name)
                    self._bases[name] = base
                    found[base] = (sub, name)
        return found

    def _entries(self, index: UidIndex, found: dict[str, tuple[str, str]]) -> list[Entry]:
        """The listing's entries in UID order; those unchanged since the last listing are the
        same objects."""
        known, self._listed = self._listed, {}
        entries = []
        for base, uid in index.uids.items():
            sub, name = found[base]
            entry = known.get(name)
            if entry is None or entry.uid != uid or entry.sub != sub:
                entry = Entry(uid, sub, name)
            self._listed[name] = entry
            entries.append(entry)
        entries.sort(key=_uid_of)
        return entries

    def _claim_new(self, found: dict[str, tuple[str, str]]) -> None:
        for base, (sub, name) in list(found.items()):
            if sub != "new":
                continue
            try:
                found[base] = ("cur", claim_new(self.path, name))
            except FileNotFoundError:  # POP3 or another reader took it to cur/ first
                found.pop(base)
                again = find_message(self.path, base)
                if again is not None:
                    found[base] = again

    def _reconcile(self, index: UidIndex, found: dict[str, tuple[str, str]]) -> tuple[bool, bool]:
        """Drop UIDs of files that are gone, give UIDs to new files; whether any were dropped,
        whether any were given."""
        missing = index.uids.keys() - found.keys()
        if missing:
            # readdir may miss a file renamed while it ran (mutt setting a flag): look again.
            for base, where in self._list().items():
                found.setdefault(base, where)
            missing -= found.keys()
            for base in missing:
                del index.uids[base]
        new = found.keys() - index.uids.keys()
        for base in sorted(new, key=arrival_order):
            index.assign(base)
        return bool(missing), bool(new)

    # -- the index

    def _load(self) -> UidIndex:
        try:
            st = os.stat(self.path / INDEX_NAME)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if self._index is not None and stamp == self._index_stamp:
            return self._index
        data = read(self.path)
        index, problems = salvage(data) if data is not None else (None, ["missing"])
        if index is None or problems:
            index = self._rebuilt(index, problems)
        self._index, self._index_stamp = index, stamp
        return index

    def _rebuilt(self, survivor: UidIndex | None, problems: list[str]) -> UidIndex:
        """An index for a folder whose index is lost or damaged: what survives of it, or a new
        one under a new UIDVALIDITY (clients then fetch the folder again)."""
        if survivor is not None:
            log.warning("UID index of %s was damaged (%s); repaired keeping UIDVALIDITY",
                        self.path, "; ".join(problems))
            self._save(survivor)
            return survivor
        index = UidIndex(next_uidvalidity(self.root))
        if any(self._list()) or problems != ["missing"]:
            log.warning("UID index of %s was %s; rebuilt with new UIDVALIDITY %d",
                        self.path, "; ".join(problems), index.uidvalidity)
        self._save(index)
        return index

    def _save(self, index: UidIndex, durable: bool = True) -> None:
        save(self.path, index, durable)
        st = os.stat(self.path / INDEX_NAME)
        self._index, self._index_stamp = index, (st.st_ino, st.st_mtime_ns, st.st_size)

    def rebuild(self) -> tuple[int, list[str]]:
        """`store repair`: the index made whole again under its lock; (UIDVALIDITY, problems)."""
        with locked(self.path):
            self._index = None
            data = read(self.path)
            found = self._list()
            survivor, problems = salvage(data) if data is not None else (None, ["missing"])
            index = self._rebuilt(survivor, problems) if survivor is None or problems else survivor
            if data is None and not found:
                problems = []  # a folder nobody selected yet: nothing was lost
            if any(self._reconcile(index, found)):
                self._save(index)
        return index.uidvalidity, problems

    # -- changes

    def add(self, messages: Iterable[tuple[bytes | Path, frozenset[str], float | None]]
            ) -> tuple[int, list[int]]:
        """Store messages (data, or a file to hard-link; flags; internal date) durably in cur/,
        in order; the folder's UIDVALIDITY and their UIDs. All or none: MessageGone when a
        file to link was expunged by another session."""
        staged: list[tuple[tuple[Path, str], frozenset[str]]] = []
        try:
            for source, flags, date in messages:
                staged.append((self._stage(source, date), flags))
            added_bytes = sum(field_of(name, "S") or 0 for (_, name), _ in staged)
            with locked(self.path):
                index = self._load()
                self._reconcile(index, self._list())
                self.keywords.load()
                uids = []
                for (tmp, name), flags in staged:
                    os.rename(tmp, self.path / "cur" / with_letters(name, self.keywords.letters(flags, "")))
                    uids.append(index.assign(base_of(name)))
                self._save(index)
                fsync_dir(self.path / "cur")
        except BaseException:
            for (tmp, _), _ in staged:
                unlink_quietly(tmp)
            raise
        if self.usage is not None:
            self.usage(added_bytes, len(staged))
        return index.uidvalidity, uids

    def _stage(self, source: bytes | Path, date: float | None) -> tuple[Path, str]:
        """The message written (or linked) into tmp/, synced; its tmp path and its name without
        flags."""
        base = new_base()
        tmp = self.path / "tmp" / base
        if isinstance(source, Path):
            # COPY's source: its name changes with its flags, a STORE elsewhere may rename it now.
            name = follow_renames(source.parent.parent, source.parent.name, source.name,
                                  lambda path: _stage_file(path, tmp))
        else:
            name = _stage_data(source, tmp)
        if date is not None:
            os.utime(tmp, (date, date))
        return tmp, name

    def rename_flags(self, entries: Iterable[Entry], change: Callable[[str], str]) -> dict[int, str]:
        """Apply `change` (old letters → new letters) to each message's name as it is on disk
        now; the names they have afterwards, by UID (messages that are gone are left out)."""
        names = {}
        with locked(self.path):
            for entry in entries:
                sub, name = entry.sub, entry.name
                if not (self.path / sub / name).exists():
                    where = find_message(self.path, entry.base)
                    if where is None:
                        continue
                    sub, name = where
                new = with_letters(name, change(letters_of(name)))
                if new != name or sub != "cur":
                    os.rename(self.path / sub / name, self.path / "cur" / new)
                names[entry.uid] = new
        return names

    def remove(self, entries: Iterable[Entry], only_deleted: bool = False) -> list[int]:
        """Unlink messages and forget their UIDs; the UIDs removed (or already gone). With
        `only_deleted`, a message whose name no longer says \\Deleted (another session took
        the flag away meanwhile) stays."""
        removed, freed_bytes = [], 0
        with locked(self.path):
            index = self._load()
            for entry in entries:
                path = self.path / entry.sub / entry.name
                if not path.exists():
                    where = find_message(self.path, entry.base)
                    path = self.path / where[0] / where[1] if where else path
                if only_deleted and path.exists() and "T" not in letters_of(path.name):
                    continue
                try:
                    freed_bytes += field_of(path.name, "S") or os.stat(path).st_size
                    os.unlink(path)
                except FileNotFoundError:
                    pass  # expunged by another session, or POP3, meanwhile
                index.uids.pop(entry.base, None)
                removed.append(entry.uid)
            self._save(index, durable=False)
        if self.usage is not None and removed:
            self.usage(-freed_bytes, -len(removed))
        return removed

    def read(self, entry: Entry) -> bytes:
        """The message file's content; MessageGone when another session expunged it."""
        with open_message(self.path, entry.sub, entry.name) as message:
            return message.read()

    def info(self, entry: Entry, recent: bool) -> MessageInfo:
        """The message's MessageInfo: flags from its name, internal date and size from its file."""
        if self._infos_generation != self.keywords.generation:
            self._infos, self._infos_generation = {}, self.keywords.generation
        info = self._infos.get(entry.name)
        if info is None or info.uid != entry.uid:
            facts = self._facts_of(entry)
            flags = self.keywords.flags(letters_of(entry.name))
            if facts is None:  # gone since the listing: the next refresh says so
                return MessageInfo(entry.uid, flags, 0.0, 0, recent)
            info = self._infos[entry.name] = MessageInfo(entry.uid, flags, *facts)
        if recent:
            return MessageInfo(info.uid, info.flags, info.internal_date, info.size, True)
        return info

    def _facts_of(self, entry: Entry) -> tuple[float, int] | None:
        """The message's internal date (its file's mtime) and the size of its CRLF form; None
        when it is gone."""
        base = entry.base
        known = self._facts.get(base)
        if known is not None:
            return known
        try:
            known = follow_renames(self.path, entry.sub, entry.name, _facts_of_file)
        except MessageGone:
            return None
        self._facts[base] = known
        return known

    def path_of(self, entry: Entry) -> Path:
        """The message file's path as it is now (it changes when its flags do); MessageGone
        when another session expunged it."""
        return follow_renames(self.path, entry.sub, entry.name, _existing)


_uid_of = operator.attrgetter("uid")


def _existing(path: Path) -> Path:
    os.stat(path)  # FileNotFoundError when it was renamed or removed
    return path


def _facts_of_file(path: Path) -> tuple[float, int]:
    """A message file's internal date (its mtime) and the size of its CRLF form."""
    date = os.stat(path).st_mtime
    size = field_of(path.name, "W")
    if size is None:
        size = crlf_size(path.read_bytes())
    return date, size


def _stage_file(source: Path, tmp: Path) -> str:
    """A message file hard-linked (or copied) to tmp/; its name there without flags."""
    if _link(source, tmp):
        return sized_name(tmp.name, os.stat(tmp).st_size, field_of(source.name, "W"))
    return _stage_data(source.read_bytes(), tmp)


def _stage_data(data: bytes, tmp: Path) -> str:
    write_synced_file(tmp, data)
    return sized_name(tmp.name, len(data), crlf_size(data))


def _link(source: Path, target: Path) -> bool:
    """Hard-link a message for COPY; False when the file system cannot (then it is copied)."""
    if field_of(source.name, "W") is None:
        return False
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            return False
        raise
    return True
