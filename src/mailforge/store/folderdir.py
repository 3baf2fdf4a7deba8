"""One Maildir++ folder on disk: its messages with UIDs, adding, re-flagging and removing them.

Every change happens under the folder's lock, through the shared index and its change log
(folderstate.py, folderlog.py: the design), so that two sessions changing flags of one message
both land (each applies its change to the name the index has now, not to what it saw
earlier). Other Maildir writers (delivery, mutt) do not take the lock: deliveries are found by
listing new/ when its mtime moves, anything else by the fallback scan of new/ and cur/
(`_scan`), which a cur/ mtime the log does not explain sets off.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from ..durable import FILE_MODE, fsync_dir, unlink_quietly, write_new_file
from .api import MessageInfo, Summarizer
from . import steps
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
from .folderlog import Kind, Record
from .folderstate import DirLook, FolderState, shared_state
from .maildir import MAILDIR_SUBDIRS, claim_new, find_message, follow_renames, read_message
from .uidindex import Entry, UidIndex, read, salvage
from .waiting import charge_read, held

log = logging.getLogger("mailforge.store")

FOLDER_MARKER = "maildirfolder"  # Maildir++: this directory is a folder, not a whole Maildir
# A directory's mtime moves on in ticks (the kernel's coarse clock; whole seconds on some file
# systems): a change made in the same tick as a listing leaves the mtime as it was. So a
# listing taken less than this long after the last change is not trusted to be final, and
# the folder is listed again, at most this often, until one is (Dovecot waits out the same
# second).
MTIME_SLACK_NS = 1_100_000_000

# Told (bytes, messages) whenever messages are added or removed: the quota's maildirsize.
UsageHook = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class Listing:
    uidvalidity: int
    uidnext: int
    entries: list[Entry]         # UID order
    recent: frozenset[int]       # UIDs with \Recent: claimed by this listing, or unclaimed
    unclaimed: int = 0           # messages no read-write session has claimed (STATUS RECENT)
    # Equal for two listings exactly when nothing changed between them: (loads, records
    # applied), since claiming \Recent or a delivery moves no MODSEQ.
    version: tuple[int, int] = (0, 0)
    highestmodseq: int = 0
    # The index's touched UIDs (uidindex.UidIndex.touched) and how many of them this listing
    # takes in: a view that took in the first n of the same list needs only the rest.
    touched: list[int] | None = None
    touched_count: int = 0


@dataclass(frozen=True, slots=True)
class Tally:
    """What STATUS counts over a listing's messages."""

    unseen: int
    deleted: int
    size: int  # octets of the CRLF forms (RFC 8438 STATUS SIZE)


class FolderDir:
    def __init__(self, path: Path, root: Path, usage: UsageHook | None = None,
                 summarizer: Summarizer | None = None) -> None:
        self.path = path
        # Its subdirectories as strings: building Paths was a tenth of an IMAP worker's CPU.
        self._cur, self._new = os.path.join(path, "cur"), os.path.join(path, "new")
        self.root = root  # the tree's root, where UIDVALIDITY values are handed out
        self.keywords = Keywords(path)
        self.usage = usage
        self.summaries = SummaryCache(path, summarizer)
        self.state: FolderState = shared_state(path, root)
        # The last listing handed out, handed out again while nothing changed.
        self._last_listing: Listing | None = None
        # STATUS's counts over the listing of that version (STATUS comes again and again).
        self._last_tally: tuple[tuple[int, int], Tally] | None = None

    # -- the folder itself

    def exists(self) -> bool:
        return os.path.isdir(self._cur)

    def create(self, marker: bool = True) -> None:
        for sub in MAILDIR_SUBDIRS:
            os.makedirs(self.path / sub, mode=0o700, exist_ok=True)
        if marker:
            (self.path / FOLDER_MARKER).touch(0o600)
        with self.state.writing():
            pass  # a folder without an index gets one, and its log
        for sub in MAILDIR_SUBDIRS:
            fsync_dir(self.path / sub)
        fsync_dir(self.path)
        fsync_dir(self.path.parent)

    # -- listing

    def listing(self, claim: bool = False) -> Listing:
        """The folder's messages with their UIDs, taking in what others changed; new files get
        UIDs. With `claim` (a read-write session), new/ moves into cur/ and the caller gets
        the \\Recent ones. When nothing changed this reads no directory."""
        state = self.state
        now = time.time_ns()
        with held(state.mutex):
            loaded = state.catch_up()
            cur, new = _mtime(self._cur), _mtime(self._new)
            index = state.index
            busy = (not loaded or self._cur_stale(index, cur, now, periodic=True)
                    or self._new_stale(new, now, claim)
                    or claim and index.first_recent < index.uidnext)
            if not busy:
                return self._listing(index, frozenset())
        with state.writing() as index:
            records = self._reconcile(index, claim, periodic=True)
            claimed: frozenset[int] = frozenset()
            if claim and index.first_recent < index.uidnext:
                claimed = _unclaimed(index)
                records.append(index.claim_recent())
            self._commit(index, records)
            return self._listing(index, claimed)

    def tally(self, listing: Listing) -> Tally:
        """STATUS's counts over `listing`, worked out once per version of the folder."""
        last = self._last_tally
        if last is not None and last[0] == listing.version:
            return last[1]
        unseen = deleted = size = 0
        for entry in listing.entries:
            letters = letters_of(entry.name)
            unseen += "S" not in letters
            deleted += "T" in letters
            size += entry.size
        tally = Tally(unseen, deleted, size)
        self._last_tally = (listing.version, tally)
        return tally

    def _listing(self, index: UidIndex, claimed: frozenset[int]) -> Listing:
        """(Under the mutex.) The unclaimed messages are \\Recent, or those just `claimed`."""
        version = (self.state.loads, index.applied)
        listing = self._last_listing
        if listing is None or listing.version != version:
            # A message renamed by another session may carry a keyword new to this session.
            self.keywords.load()
            unclaimed = _unclaimed(index)
            listing = self._last_listing = Listing(
                index.uidvalidity, index.uidnext, list(index.entries.values()), unclaimed,
                len(unclaimed), version, index.modseq, index.touched, len(index.touched))
        return replace(listing, recent=claimed) if claimed else listing

    def _cur_stale(self, index: UidIndex, cur_mtime: int, now: int, periodic: bool) -> bool:
        """Whether cur/ may hold changes the log does not: its mtime is not the one the last
        writer saw, or (`periodic`) it is too recent to trust and was not listed lately."""
        if cur_mtime != index.cur_mtime:
            return True
        if index.cur_final:
            return False
        last = self.state.cur_look
        if not periodic or (last.mtime == cur_mtime and _final(last)):
            return False
        return now - last.at_ns >= MTIME_SLACK_NS

    def _new_stale(self, new_mtime: int, now: int, claim: bool) -> bool:
        """Whether new/ may hold files the index does not have (in cur/, with `claim`)."""
        last = self.state.new_claimed_look if claim else self.state.new_look
        if new_mtime != last.mtime:
            return True
        return not _final(last) and now - last.at_ns >= MTIME_SLACK_NS

    def _reconcile(self, index: UidIndex, claim: bool = False, periodic: bool = False
                   ) -> list[Record]:
        """(Under the lock.) Records for what changed behind the log's back: all of new/ and
        cur/ scanned when cur/ looks changed, else new/ listed when its mtime moved."""
        now = time.time_ns()
        cur, new = _mtime(self._cur), _mtime(self._new)
        if self._cur_stale(index, cur, now, periodic):
            records = self._scan(index, claim)
            self.state.cur_look = DirLook(cur, now)
        elif self._new_stale(new, now, claim):
            records = self._take_new(index, claim)
        else:
            return []
        self.state.new_look = DirLook(new, now)
        if claim:
            self.state.new_claimed_look = self.state.new_look
        return records

    def _scan(self, index: UidIndex, claim: bool) -> list[Record]:
        """The fallback: every file of new/ and cur/ against the index."""
        found = _list(self.path)
        missing = index.uids.keys() - found.keys()
        if missing:
            # readdir may miss a file renamed while it ran (mutt setting a flag): look again.
            for base, where in _list(self.path).items():
                found.setdefault(base, where)
            missing -= found.keys()
        records = [index.expunge(index.uids[base]) for base in missing]
        for base, (sub, name) in sorted(found.items(), key=lambda item: arrival_order(item[0])):
            uid = index.uids.get(base)
            entry = index.entries.get(uid) if uid is not None else None
            if claim and sub == "new":
                claimed = self._claim(name)
                if claimed is None:
                    continue
                sub, name = "cur", claimed
            if entry is None:
                records += self._add_found(index, sub, name, uid)
            elif (sub, name) != (entry.sub, entry.name):
                records.append(_moved(index, entry, sub, name))
        return records

    def _take_new(self, index: UidIndex, claim: bool) -> list[Record]:
        """Deliveries: the files of new/ the index does not have, or has there (with
        `claim`, they move into cur/)."""
        records = []
        names = sorted((name for name in os.listdir(self.path / "new")
                        if not name.startswith(".")), key=arrival_order)
        for name in names:
            uid = index.uids.get(base_of(name))
            if uid is not None and not claim:
                continue
            sub = "new"
            if claim:
                claimed = self._claim(name)
                if claimed is None:
                    continue
                sub, name = "cur", claimed
            if uid is not None and uid in index.entries:
                records.append(_moved(index, index.entries[uid], sub, name))
            else:
                records += self._add_found(index, sub, name, uid)
        return records

    def _claim(self, name: str) -> str | None:
        """A message of new/ moved into cur/; its name there, None when another reader took
        it first (the next scan finds it wherever it went)."""
        try:
            return claim_new(self.path, name)
        except FileNotFoundError:
            return None

    def _add_found(self, index: UidIndex, sub: str, name: str, uid: int | None
                   ) -> list[Record]:
        """A file found on disk gets its UID (a version 1 index may have given it one)."""
        try:
            date, size = _facts_of_file(self.path / sub / name)
        except FileNotFoundError:
            return []  # gone again: the next scan settles it
        return [index.add(sub, name, date, size, uid)]

    def _commit(self, index: UidIndex, records: list[Record], durable: bool | None = None
                ) -> None:
        """(Under the lock.) The change set, closed by what cur/ looks like now; durable when
        it hands out UIDs (those must never be handed out twice)."""
        cur = _mtime(self._cur)
        look = self.state.cur_look
        # A full listing of this process taken once cur/'s mtime was final vouches for the
        # files (nothing changed them since without moving it): recorded once, for every
        # process, so that none lists cur/ again to learn the same.
        final = look.mtime == cur and _final(look)
        if cur != index.cur_mtime or final and not index.cur_final:
            records.append(index.cur_seen(cur, final))
        if durable is None:
            durable = any(record[0] == Kind.ADD for record in records)
        self.state.commit(records, durable)

    def rebuild(self) -> tuple[int, list[str]]:
        """`store repair`: the index made whole again under its lock, as a new snapshot and
        log; (UIDVALIDITY, problems)."""
        self.state.forget()
        data = read(self.path)
        problems = salvage(data)[1] if data is not None else ["missing"]
        with self.state.writing() as index:
            if data is None and not _list(self.path):
                problems = []  # a folder nobody selected yet: nothing was lost
            self._scan(index, claim=False)
            index.cur_seen(_mtime(self._cur))
            self.state.rotate()
            return index.uidvalidity, problems

    # -- changes

    def add(self, messages: Iterable[tuple[bytes | Path, frozenset[str], float | None]],
            claimed_by: Callable[[frozenset[int]], None] | None = None) -> tuple[int, list[int]]:
        """Store messages (data, or a file to hard-link; flags; internal date) durably in cur/,
        in order; the folder's UIDVALIDITY and their UIDs. All or none: MessageGone when a
        file to link was expunged by another session. With `claimed_by` (a read-write view
        of this folder, SelectedFolder.took_recent), the unclaimed messages are claimed in
        the same change set and handed to it: one lock and log write, not a second for the
        claim at the view's next refresh."""
        return steps.run(self.add_steps(messages, claimed_by))

    def add_steps(self, messages: Iterable[tuple[bytes | Path, frozenset[str], float | None]],
                  claimed_by: Callable[[frozenset[int]], None] | None = None
                  ) -> steps.Steps[tuple[int, list[int]]]:
        """`add` as a change whose syncs the caller runs (store/steps.py): the new files'
        data before they are renamed into cur/; then, once the lock is let go, cur/ and the
        change log, before the UIDs are handed out. (Another session may see the messages
        before that second step is done, as it may see any change set between its write
        and its sync.)"""
        staged: list[tuple[Path, str, int, float, frozenset[str]]] = []
        unsynced: list[int] = []
        claimed: frozenset[int] = frozenset()
        try:
            for source, flags, date in messages:
                tmp, name, size, date, fd = self._stage(source, date)
                staged.append((tmp, name, size, date, flags))
                if fd is not None:
                    unsynced.append(fd)
            if unsynced:
                fds, unsynced = unsynced, []  # the step closes them, whatever happens
                yield steps.sync_and_close(fds)
            added_bytes = sum(field_of(name, "S") or 0 for _, name, _, _, _ in staged)
            with self.state.writing() as index:
                records = self._reconcile(index)
                self.keywords.load()
                uids = []
                for tmp, name, size, date, flags in staged:
                    name = with_letters(name, self.keywords.letters(flags, ""))
                    os.rename(tmp, os.path.join(self._cur, name))
                    records.append(index.add("cur", name, date, size))
                    uids.append(records[-1][2])
                if claimed_by is not None:
                    claimed = _unclaimed(index)
                    records.append(index.claim_recent())
                self._commit(index, records, durable=False)  # synced by the step below
                uidvalidity = index.uidvalidity
                change_log = self.state.log_copy()
            yield _sync_added(self._cur, change_log)
        except BaseException:
            for fd in unsynced:
                os.close(fd)
            for tmp, *_ in staged:
                unlink_quietly(tmp)  # those renamed into cur/ are not there any more
            raise
        if claimed_by is not None:
            claimed_by(claimed)
        if self.usage is not None:
            self.usage(added_bytes, len(staged))
        return uidvalidity, uids

    def _stage(self, source: bytes | Path, date: float | None
               ) -> tuple[Path, str, int, float, int | None]:
        """The message written (or linked) into tmp/; its tmp path, its name without flags,
        its CRLF size, its internal date, and the descriptor of data still to be synced
        (None for a file linked)."""
        base = new_base()
        tmp = self.path / "tmp" / base
        if isinstance(source, Path):
            # COPY's source: its name changes with its flags, a STORE elsewhere may rename it now.
            name, fd = follow_renames(source.parent.parent, source.parent.name, source.name,
                                      lambda path: _stage_file(path, tmp))
        else:
            name, fd = _stage_data(source, tmp)
        try:
            if date is not None:
                os.utime(tmp, (date, date))
            else:
                date = os.stat(tmp).st_mtime
            size = field_of(name, "W")
            if size is None:
                size = crlf_size(tmp.read_bytes())
        except BaseException:
            if fd is not None:
                os.close(fd)
            unlink_quietly(tmp)
            raise
        return tmp, name, size, date, fd

    def rename_flags(self, entries: Iterable[Entry], change: Callable[[str], str],
                     unchanged_since: int | None = None) -> dict[int, Entry]:
        """Apply `change` (old letters → new letters) to each message's name as it is on disk
        now; the entries they have afterwards, by UID (messages that are gone, or whose MODSEQ
        went past `unchanged_since`, are left out)."""
        changed = {}
        with self.state.writing() as index:
            records = self._reconcile(index)
            for entry in entries:
                current = index.entries.get(entry.uid)
                if current is None or (unchanged_since is not None
                                       and current.modseq > unchanged_since):
                    continue
                renamed = self._rename(current, change)
                if renamed is None:
                    records.append(index.expunge(entry.uid))
                    continue
                if renamed != current.name or current.sub != "cur":
                    records.append(index.rename(entry.uid, "cur", renamed))
                changed[entry.uid] = index.entries[entry.uid]
            self._commit(index, records)
        return changed

    def expunged_since(self, modseq: int) -> list[int] | None:
        """The UIDs the index saw expunged after `modseq` (None: it forgot some of them)."""
        with held(self.state.mutex):
            self.state.catch_up()
            index = self.state.index
            return index.expunged_since(modseq) if index is not None else None

    def _rename(self, entry: Entry, change: Callable[[str], str]) -> str | None:
        """The file renamed for its new flags; its new name, None when it is gone."""
        sub, name = entry.sub, entry.name
        for _ in range(2):
            new = with_letters(name, change(letters_of(name)))
            if new == name and sub == "cur":
                return new
            try:
                os.rename(os.path.join(self.path, sub, name), os.path.join(self._cur, new))
                return new
            except FileNotFoundError:  # renamed by a tool that does not write the log
                where = find_message(self.path, entry.base)
                if where is None:
                    return None
                sub, name = where
        return None

    def remove(self, entries: Iterable[Entry], only_deleted: bool = False) -> list[int]:
        """Unlink messages and forget their UIDs; the UIDs removed (or already gone). With
        `only_deleted`, a message whose name no longer says \\Deleted (another session took
        the flag away meanwhile) stays."""
        removed, freed_bytes = [], 0
        with self.state.writing() as index:
            records = self._reconcile(index)
            for entry in entries:
                current = index.entries.get(entry.uid)
                if current is not None:
                    if only_deleted and "T" not in letters_of(current.name):
                        continue
                    freed_bytes += self._unlink(current.sub, current.name)
                    records.append(index.expunge(entry.uid))
                removed.append(entry.uid)
            self._commit(index, records)
        if self.usage is not None and removed:
            self.usage(-freed_bytes, -len(removed))
        return removed

    def remove_files(self, names: Iterable[str]) -> None:
        """POP3's QUIT: unlink these files of cur/ (wherever renames took them), and tell the
        log, so that IMAP sessions see them go without a scan."""
        with self.state.writing() as index:
            records = self._reconcile(index)
            for name in names:
                uid = index.uids.get(base_of(name))
                entry = index.entries.get(uid) if uid is not None else None
                sub, name = (entry.sub, entry.name) if entry is not None else ("cur", name)
                self._unlink(sub, name)
                if entry is not None:
                    records.append(index.expunge(entry.uid))
            self._commit(index, records)

    def _unlink(self, sub: str, name: str) -> int:
        """(Under the lock.) Remove a message file, found by its base name when a tool that
        does not write the log renamed it; the bytes freed (0 when it was gone already)."""
        for _ in range(2):
            path = os.path.join(self.path, sub, name)
            try:
                size = field_of(name, "S") or os.stat(path).st_size
                os.unlink(path)
                return size
            except FileNotFoundError:
                where = find_message(self.path, base_of(name))
                if where is None:
                    return 0
                sub, name = where
        return 0

    def read(self, entry: Entry) -> bytes:
        """The message file's content; MessageGone when another session expunged it."""
        charge_read(entry.size)
        entry = self._latest(entry)
        return read_message(self.path, entry.sub, entry.name, entry.size)

    def _latest(self, entry: Entry) -> Entry:
        """The entry as this process last heard of it: another session's STORE may have
        renamed its file since the caller's view was taken."""
        with held(self.state.mutex):
            index = self.state.index
            latest = index.entries.get(entry.uid) if index is not None else None
        return latest if latest is not None and latest.base == entry.base else entry

    def info(self, entry: Entry, recent: bool) -> MessageInfo:
        """The message's MessageInfo, all from the index: flags from its name, internal date
        and size as recorded when it got its UID."""
        return self.infos([entry], (entry.uid,) if recent else ())[0]

    def infos(self, entries: Iterable[Entry], recent: Collection[int]) -> list[MessageInfo]:
        """`info` of many messages (those whose UID is in `recent` with \\Recent), from the
        process's memo: flags live in the name, date and size never change, so a message
        whose name is unchanged costs one lookup, whichever session built it."""
        table, memo = self.state.infos
        if table != self.keywords.table:
            table, memo = self.state.infos = (self.keywords.table, {})
        # A name's info part ("2,FS") -> its flags: one lookup for most messages of a folder.
        flags_by_info: dict[str, frozenset[str]] = {}
        infos = []
        for entry in entries:
            info = memo.get(entry.name)
            if info is None or info.uid != entry.uid or info.modseq != entry.modseq:
                name = entry.name
                flags = flags_by_info.get(name.partition(":")[2])
                if flags is None:
                    flags = flags_by_info[name.partition(":")[2]] = \
                        self.keywords.flags(letters_of(name))
                info = memo[name] = MessageInfo(entry.uid, flags, entry.internal_date,
                                                entry.size, modseq=entry.modseq)
            infos.append(MessageInfo(info.uid, info.flags, info.internal_date, info.size, True,
                                     info.modseq) if info.uid in recent else info)
        if len(memo) > _MAX_CACHED_INFOS:
            self.state.infos = (table, {})
        return infos

    def path_of(self, entry: Entry) -> Path:
        """The message file's path as it is now (it changes when its flags do); MessageGone
        when another session expunged it."""
        entry = self._latest(entry)
        return follow_renames(self.path, entry.sub, entry.name, _existing)


# Names of messages that are gone or renamed stay in the info memo until it is this big.
_MAX_CACHED_INFOS = 100_000


def _moved(index: UidIndex, entry: Entry, sub: str, name: str) -> Record:
    """(Under the lock.) The record of a message file found under a new name: a move from new/
    into cur/ that kept its flags (a claim, ours or a mail reader's) changes no metadata and
    takes no MODSEQ; any other rename does."""
    if entry.sub == "new" and sub == "cur" and letters_of(entry.name) == letters_of(name):
        return index.claim(entry.uid, name)
    return index.rename(entry.uid, sub, name)


def _unclaimed(index: UidIndex) -> frozenset[int]:
    """The UIDs no read-write session has claimed (\\Recent): the index holds its messages
    in UID order, so they are at its end."""
    first = index.first_recent
    return frozenset(itertools.takewhile(lambda uid: uid >= first, reversed(index.entries)))


def _final(look: DirLook) -> bool:
    """Whether a listing was taken long enough after the directory's last change to trust."""
    return look.at_ns - look.mtime > MTIME_SLACK_NS


def _mtime(path: str) -> int:
    return os.stat(path).st_mtime_ns


def _list(folder: Path) -> dict[str, tuple[str, str]]:
    """Base name -> (sub, name) of every message file; new/ before cur/, so that a message
    moving from one to the other meanwhile is still seen."""
    found = {}
    for sub in ("new", "cur"):
        for name in os.listdir(folder / sub):
            if not name.startswith("."):
                found[base_of(name)] = (sub, name)
    return found


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


def _stage_file(source: Path, tmp: Path) -> tuple[str, int | None]:
    """A message file hard-linked (or copied) to tmp/; its name there without flags, and for
    a copy the descriptor of its data, still to be synced."""
    if _link(source, tmp):
        return sized_name(tmp.name, os.stat(tmp).st_size, field_of(source.name, "W")), None
    return _stage_data(source.read_bytes(), tmp)


def _stage_data(data: bytes, tmp: Path) -> tuple[str, int]:
    """`data` written to tmp/, not synced yet; its name there without flags, and its open
    descriptor."""
    fd = write_new_file(tmp, data)
    try:
        os.fchmod(fd, FILE_MODE)  # exactly, whatever the umask
    except BaseException:
        os.close(fd)
        unlink_quietly(tmp)
        raise
    return sized_name(tmp.name, len(data), crlf_size(data)), fd


def _sync_added(cur: str, change_log: int) -> steps.Step:
    """A step: messages renamed into cur/ and their change set made durable (cur/ first: a
    change set on disk names files that are there), the log's descriptor closed."""
    def step() -> None:
        try:
            fsync_dir(Path(cur))
            os.fdatasync(change_log)
        finally:
            os.close(change_log)
    return step


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
