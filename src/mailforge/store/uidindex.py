"""The snapshot of one folder's index, `mailforge-uidlist`, in msgpack (folderlog.py has the
whole design: the snapshot plus the log of changes made since).

The snapshot holds UIDVALIDITY, UIDNEXT, the first UID not yet claimed for \\Recent, the
highest MODSEQ, the log generation that continues it, and per UID its Entry: the file's sub
and name, internal date, CRLF size and MODSEQ. It also remembers the UIDs expunged lately with
the MODSEQ of each expunge, so that a QRESYNC client away for weeks learns exactly which of its
messages vanished (RFC 7162 3.2.5.2); past EXPUNGED_MEMORY of them the oldest are forgotten and
`expunged_floor` says up to which MODSEQ the memory is incomplete.

It is replaced atomically (temp name, fsync, rename, fsync the directory), only by a holder of
the flock on `mailforge-uidlist.lock`, and only when a log fills up, the folder is made or
repaired, or an index is converted. Version 1 snapshots (base name → UID only) are still
read: their entries get files and facts at the next scan.

The Maildir files are the truth; the index only remembers which UID each base name got and
what its file looked like. A lost snapshot costs UIDs (a new UIDVALIDITY, see repair.py),
never messages or flags.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import NamedTuple

import msgpack

from ..durable import write_atomically
from .filenames import base_of
from .folderlog import Kind, Record
from .waiting import flock_exclusive

INDEX_NAME = "mailforge-uidlist"
LOCK_NAME = "mailforge-uidlist.lock"
# At the root of a folder tree (a Maildir, or a domain's public tree): the last UIDVALIDITY
# handed out there, so a folder deleted and made again within one second still gets a new one
# (as Dovecot's dovecot-uidvalidity file does).
UIDVALIDITY_NAME = "mailforge-uidvalidity"
FORMAT_VERSION = 2
MAX_UID = 2**32 - 1  # UIDs and UIDVALIDITY are 32-bit (RFC 3501 2.3.1.1)
# The MODSEQ of a folder nothing happened in yet: HIGHESTMODSEQ is never 0 (RFC 7162 7,
# mod-sequence-value), and the first change must still raise it, so changes start above it.
FIRST_MODSEQ = 1
SUBDIRS = ("new", "cur")
# Expunged UIDs remembered for QRESYNC: a busy folder's month of deletions (a few hundred a
# day) fits many times over, and the snapshot grows by some ten bytes each.
EXPUNGED_MEMORY = 50_000
# How many touched UIDs an index keeps for the views that take changes in one by one
# (store/selected.py); past it the older half goes, and a view that had not taken those in
# compares every message once.
TOUCHED_MEMORY = 4096


class IndexCorrupt(Exception):
    """The index file cannot be trusted as a whole (the message says why)."""


class Entry(NamedTuple):
    """A message as the index knows it: nothing here needs its file opened or stat'ed.
    A tuple, so that opening a big folder builds its entries from the snapshot's rows in
    bulk (`_entry_of_row`) rather than one __init__ call each."""

    uid: int
    sub: str              # "new" or "cur"
    name: str
    internal_date: float
    size: int             # octets of the CRLF form
    modseq: int = 0

    @property
    def base(self) -> str:
        return base_of(self.name)


@dataclass
class UidIndex:
    uidvalidity: int
    uidnext: int = 1
    # The lowest UID no read-write session has claimed yet: \Recent goes to the session that
    # moves this past a message (Dovecot's dovecot-uidlist keeps the same number).
    first_recent: int = 1
    modseq: int = FIRST_MODSEQ  # the highest MODSEQ handed out
    generation: int = 0   # of the log that continues this snapshot
    # cur/'s mtime when the index last described the files completely; 0: unknown.
    cur_mtime: int = 0
    # Whether a full listing taken after that mtime's clock tick had passed vouched for it:
    # then nothing outside mailforge changed cur/ without moving its mtime, and no process
    # needs to list cur/ until it moves (Dovecot's cur_check_time in its index header).
    cur_final: bool = False
    uids: dict[str, int] = field(default_factory=dict)      # base name → UID
    entries: dict[int, Entry] = field(default_factory=dict)  # UID → Entry, in UID order
    expunged: dict[int, int] = field(default_factory=dict)   # UID → MODSEQ of its expunge
    # Expunges at or below this MODSEQ may have been forgotten (pruned, or lost with a log).
    expunged_floor: int = 0
    # The UIDs that ADD, FLAGS and EXPUNGE records touched, in the order they were applied,
    # so that a session's view takes in those alone instead of comparing every message. Only
    # ever appended to: when it is cut, a new list replaces it, and a view that holds the old
    # one knows it must compare everything.
    touched: list[int] = field(default_factory=list, compare=False, repr=False)
    # Records applied to this copy (kept in memory only): with the copy's identity, it tells
    # whether anything changed, where MODSEQ alone does not (a claim, \Recent, a CUR record).
    applied: int = field(default=0, compare=False, repr=False)

    # -- changes: each builds its log record and applies it, the one path replay takes too

    def add(self, sub: str, name: str, date: float, size: int, uid: int | None = None
            ) -> Record:
        """A message gets a UID (a new one, or the one a version 1 index gave it)."""
        if uid is None:
            if self.uidnext > MAX_UID:
                raise IndexCorrupt("UIDs exhausted; `store repair` gives the folder a new "
                                   "UIDVALIDITY")
            uid = self.uidnext
        return self.apply([Kind.ADD, self.modseq + 1, uid, sub, name, date, size])

    def rename(self, uid: int, sub: str, name: str) -> Record:
        return self.apply([Kind.FLAGS, self.modseq + 1, uid, sub, name])

    def claim(self, uid: int, name: str) -> Record:
        """Its file moved from new/ into cur/ with the flags it had (a reader claimed it): no
        metadata of the message changed, so it keeps its MODSEQ (RFC 7162 3.1.1)."""
        return self.apply([Kind.FLAGS, self.entries[uid].modseq, uid, "cur", name])

    def expunge(self, uid: int) -> Record:
        return self.apply([Kind.EXPUNGE, self.modseq + 1, uid])

    def claim_recent(self) -> Record:
        # \Recent is session state, not a message's metadata: no new MODSEQ (RFC 7162 3.1.1).
        return self.apply([Kind.RECENT, self.modseq, self.uidnext])

    def cur_seen(self, cur_mtime: int, final: bool = False) -> Record:
        return self.apply([Kind.CUR, self.modseq, cur_mtime, 1] if final
                          else [Kind.CUR, self.modseq, cur_mtime])

    def apply(self, record: Record) -> Record:
        """Take in one log record (ours or another writer's); unknown UIDs are ignored."""
        kind, modseq = record[0], record[1]
        self.modseq = max(self.modseq, modseq)
        self.applied += 1
        if kind == Kind.ADD:
            _, _, uid, sub, name, date, size = record
            old = self.entries.get(uid)
            if old is not None:
                self.uids.pop(old.base, None)
            self.entries[uid] = Entry(uid, sub, name, date, size, modseq)
            self.uids[base_of(name)] = uid
            self.uidnext = max(self.uidnext, uid + 1)
            self._touch(uid)
        elif kind == Kind.FLAGS:
            _, _, uid, sub, name = record
            old = self.entries.get(uid)
            if old is not None:
                self.entries[uid] = Entry(uid, sub, name, old.internal_date, old.size, modseq)
                self._touch(uid)
        elif kind == Kind.EXPUNGE:
            self.expunged[record[2]] = modseq
            self._touch(record[2])
            old = self.entries.pop(record[2], None)
            if old is not None:
                self.uids.pop(old.base, None)
            elif not self.complete:  # a version 1 UID whose file was gone before any scan
                self.uids = {base: uid for base, uid in self.uids.items() if uid != record[2]}
        elif kind == Kind.RECENT:
            self.first_recent = max(self.first_recent, min(record[2], self.uidnext))
        elif kind == Kind.CUR:
            self.cur_mtime = record[2]
            self.cur_final = len(record) > 3 and record[3] == 1
        return record

    def _touch(self, uid: int) -> None:
        self.touched.append(uid)
        if len(self.touched) > TOUCHED_MEMORY:
            self.touched = self.touched[TOUCHED_MEMORY // 2:]

    def expunged_since(self, modseq: int) -> list[int] | None:
        """The UIDs expunged after `modseq`, in order; None when the memory does not reach
        that far back."""
        if modseq < self.expunged_floor:
            return None
        return sorted(uid for uid, when in self.expunged.items() if when > modseq)

    def prune_expunged(self) -> None:
        """Forget the oldest expunges past EXPUNGED_MEMORY (before a snapshot is written)."""
        if len(self.expunged) <= EXPUNGED_MEMORY:
            return
        by_age = sorted(self.expunged.items(), key=lambda item: item[1])
        cut = len(by_age) - EXPUNGED_MEMORY
        self.expunged_floor = max(self.expunged_floor, by_age[cut - 1][1])
        self.expunged = dict(by_age[cut:])

    @property
    def complete(self) -> bool:
        """False for a converted version 1 index: some UIDs have no file facts yet."""
        return len(self.entries) == len(self.uids)


def encode(index: UidIndex) -> bytes:
    return msgpack.packb({
        "version": FORMAT_VERSION, "uidvalidity": index.uidvalidity, "uidnext": index.uidnext,
        "first_recent": index.first_recent, "modseq": index.modseq,
        "generation": index.generation, "cur_mtime": index.cur_mtime,
        "cur_final": index.cur_final,
        "messages": [[e.uid, e.sub, e.name, e.internal_date, e.size, e.modseq]
                     for e in index.entries.values()],
        "expunged": [item for pair in index.expunged.items() for item in pair],
        "expunged_floor": index.expunged_floor,
        # A converted version 1 index keeps the UIDs of messages not scanned yet.
        "unscanned": {base: uid for base, uid in index.uids.items()
                      if uid not in index.entries}})


def decode(data: bytes) -> UidIndex:
    """The index, or IndexCorrupt when any part of it is wrong (see `salvage`)."""
    index, problems = _decode(data)
    if problems:
        raise IndexCorrupt("; ".join(problems))
    return index


def salvage(data: bytes) -> tuple[UidIndex | None, list[str]]:
    """What can be kept of a damaged index (None when nothing can), and what was wrong."""
    try:
        return _decode(data)
    except IndexCorrupt as exc:
        return None, [str(exc)]


def _decode(data: bytes) -> tuple[UidIndex, list[str]]:
    """Decode, dropping the entries that are wrong; raises only when the header is unusable."""
    try:
        raw = msgpack.unpackb(data, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:  # TypeError: a list as key
        raise IndexCorrupt(f"undecodable ({exc.__class__.__name__})") from None
    if not isinstance(raw, dict) or raw.get("version") not in (1, FORMAT_VERSION):
        raise IndexCorrupt(f"not a version 1 or {FORMAT_VERSION} index")
    uidvalidity, uidnext = raw.get("uidvalidity"), raw.get("uidnext")
    if not _is_uid(uidvalidity):
        raise IndexCorrupt("bad UIDVALIDITY")
    if not (_is_uid(uidnext) or uidnext == MAX_UID + 1):
        # Without it, a UID handed out before could be handed out again: no salvage.
        raise IndexCorrupt("bad UIDNEXT")
    problems: list[str] = []
    first_recent = raw.get("first_recent")
    if not isinstance(first_recent, int) or not 1 <= first_recent <= uidnext:
        problems.append("bad first recent UID")
        first_recent = uidnext
    index = UidIndex(uidvalidity, uidnext, first_recent)
    if raw["version"] == 1:
        _decode_uids(index, raw.get("uids"), problems, required=True)
    else:
        _decode_header_v2(index, raw, problems)
        _decode_messages(index, raw.get("messages"), problems)
        _decode_expunged(index, raw)
        _decode_uids(index, raw.get("unscanned"), problems, required=False)
    highest = max(index.entries.keys() | index.uids.values(), default=0)
    if highest >= index.uidnext:
        problems.append(f"UIDNEXT {index.uidnext} not above UID {highest}")
        index.uidnext = index.first_recent = highest + 1
    return index, problems


def _decode_header_v2(index: UidIndex, raw: dict, problems: list[str]) -> None:
    for name in ("modseq", "generation", "cur_mtime"):
        value = raw.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            setattr(index, name, value)
        else:
            problems.append(f"bad {name}")
    # A folder's snapshot written before FIRST_MODSEQ may say 0 (it never changed).
    index.modseq = max(index.modseq, FIRST_MODSEQ)
    index.cur_final = raw.get("cur_final") is True


def _decode_messages(index: UidIndex, messages: object, problems: list[str]) -> None:
    if not isinstance(messages, list):
        problems.append("no message table")
        return
    if _decode_sound_messages(index, messages):
        return
    for item in messages:
        if not _is_message(item) or item[0] in index.entries or base_of(item[2]) in index.uids:
            problems.append(f"bad entry {item!r}")
            continue
        entry = Entry(*item)
        index.entries[entry.uid] = entry
        index.uids[entry.base] = entry.uid
    index.entries = dict(sorted(index.entries.items()))


def _decode_sound_messages(index: UidIndex, rows: list) -> bool:
    """The message table checked and taken in column by column, in bulk (a 10,000-message
    folder's one by one took a new session's SELECT some 60 ms); False, having taken nothing,
    when any row is wrong: then `_decode_messages` finds which, row by row."""
    if set(map(type, rows)) - {list} or set(map(len, rows)) - {6}:
        return False
    uids, subs, names, dates, sizes, modseqs = zip(*rows) if rows else ((),) * 6
    if (set(map(type, uids)) - {int} or set(map(type, names)) - {str}
            or set(map(type, dates)) - {int, float} or set(map(type, sizes)) - {int}
            or set(map(type, modseqs)) - {int} or set(map(type, subs)) - {str}
            or set(subs) - set(SUBDIRS)):
        return False
    if rows and (min(uids) < 1 or max(uids) > MAX_UID or "" in names):
        return False
    bases = list(map(base_of, names))
    if len(set(uids)) != len(rows) or len(set(bases)) != len(rows):
        return False
    entries = list(map(_entry_of_row, rows))
    if list(uids) == sorted(uids):
        index.entries = dict(zip(uids, entries))
    else:
        index.entries = dict(sorted(zip(uids, entries)))
    index.uids = dict(zip(bases, uids))
    return True


# A checked snapshot row [uid, sub, name, date, size, modseq] as its Entry, without a Python call.
_entry_of_row = partial(tuple.__new__, Entry)


def _decode_expunged(index: UidIndex, raw: dict) -> None:
    """The expunge memory (a flat [uid, modseq, ...] list). Snapshots written before it
    existed, or a damaged one, leave it empty and known to be incomplete up to the MODSEQ."""
    pairs, floor = raw.get("expunged"), raw.get("expunged_floor")
    if (isinstance(pairs, list) and len(pairs) % 2 == 0 and isinstance(floor, int)
            and all(isinstance(value, int) and value >= 0 for value in pairs)):
        index.expunged = dict(zip(pairs[::2], pairs[1::2]))
        index.expunged_floor = floor
    else:
        index.expunged, index.expunged_floor = {}, index.modseq


def _is_message(item: object) -> bool:
    return (isinstance(item, list) and len(item) == 6 and _is_uid(item[0])
            and item[1] in SUBDIRS and isinstance(item[2], str) and item[2] != ""
            and isinstance(item[3], (int, float)) and isinstance(item[4], int)
            and isinstance(item[5], int))


def _decode_uids(index: UidIndex, uids: object, problems: list[str], required: bool) -> None:
    if not isinstance(uids, dict):
        if required or uids is not None:
            problems.append("no UID table")
        return
    taken = set(index.entries)
    for base, uid in uids.items():
        if not isinstance(base, str) or not _is_uid(uid) or uid in taken or base in index.uids:
            problems.append(f"bad entry {base!r}: {uid!r}")
            continue
        index.uids[base] = uid
        taken.add(uid)


def _is_uid(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_UID


def read(folder: Path) -> bytes | None:
    try:
        return (folder / INDEX_NAME).read_bytes()
    except FileNotFoundError:
        return None


def save(folder: Path, index: UidIndex) -> None:
    write_atomically(folder / INDEX_NAME, encode(index))


@contextlib.contextmanager
def locked(folder: Path | str) -> Iterator[None]:
    """Hold the folder's index lock (an flock: it dies with its process, even on kill -9)."""
    fd = os.open(os.path.join(folder, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        flock_exclusive(fd)
        yield
    finally:
        os.close(fd)


def next_uidvalidity(root: Path) -> int:
    """A UIDVALIDITY never handed out before under `root`: the time, or one more than the last."""
    fd = os.open(root / UIDVALIDITY_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        last = os.read(fd, 32).strip()
        previous = int(last) if last.isdigit() else 0
        value = max(int(time.time()), previous + 1)
        if value > MAX_UID:
            value = 1
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, b"%d\n" % value)
        os.fsync(fd)
        return value
    finally:
        os.close(fd)
