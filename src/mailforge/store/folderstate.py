"""One folder's index as a worker process knows it: the snapshot with the log replayed on top,
shared by every session of the process that has the folder open, and kept for the next one a
while after the last lets go (folderlog.py: the design).

Sessions run in a thread pool, so the state has a mutex; whoever also takes the folder's
flock takes the flock first (`FolderState.writing`), never the other way round.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from collections.abc import Iterator
from pathlib import Path

from ..durable import fsync_dir
from .api import MessageInfo
from .folderlog import LOG_MAX_RECORDS, LogFile, Record
from .uidindex import UidIndex, locked, next_uidvalidity, read, salvage, save
from .waiting import held

log = logging.getLogger("mailforge.store")

# A reader that finds snapshot and log of different generations (it looked in the middle of a
# rotation) tries again this often before it waits for the lock.
_UNLOCKED_LOAD_TRIES = 3

# The states of the folders opened last stay loaded after their last session lets go, so
# that the next session to open one (a client reconnecting, another folder's user of a shared
# one) replays a few log records instead of decoding the snapshot again. A count, not bytes:
# a 10,000-message folder's state is some 3 MB.
KEPT_STATES = 8

_registry: weakref.WeakValueDictionary[Path, FolderState] = weakref.WeakValueDictionary()
_kept: OrderedDict[Path, FolderState] = OrderedDict()
_registry_lock = threading.Lock()

# Keyword table (flags.Keywords.table) -> file name -> its MessageInfo without \Recent.
InfoMemo = tuple[tuple[str | None, ...], dict[str, MessageInfo]]


@dataclass(frozen=True, slots=True)
class DirLook:
    """A listing of a directory: its mtime then, and when it was taken."""

    mtime: int = -1
    at_ns: int = 0


def shared_state(path: Path, root: Path) -> FolderState:
    """The process's state of the folder at `path` (one per folder while anyone holds it)."""
    with _registry_lock:
        state = _registry.get(path)
        if state is None:
            state = _registry[path] = FolderState(path, root)
        _kept[path] = state
        _kept.move_to_end(path)
        if len(_kept) > KEPT_STATES:
            _kept.popitem(last=False)
        return state


def forget_states() -> None:
    """Drop every state this process keeps (as a new worker process starts: tests)."""
    with _registry_lock:
        _registry.clear()
        _kept.clear()


class FolderState:
    def __init__(self, path: Path, root: Path) -> None:
        self.path = path
        self.root = root  # the tree's root, where UIDVALIDITY values are handed out
        self.mutex = threading.RLock()
        self.index: UidIndex | None = None
        # Bumped whenever `index` is replaced: with index.applied, it tells a session whether
        # anything changed since it last looked.
        self.loads = 0
        self._log: LogFile | None = None
        # When the fallback scans (folderdir.FolderDir) last looked, shared so that one look
        # serves every session of the process: at all of new/ and cur/, at new/ only (from a
        # read-only session, or one that claimed what it found).
        self.cur_look = DirLook()
        self.new_look = DirLook()
        self.new_claimed_look = DirLook()
        # MessageInfos shared by the sessions of the process (folderdir.FolderDir.infos): one
        # tuple, replaced whole, so a session never pairs one table with another's infos.
        self.infos: InfoMemo = ((), {})

    def __del__(self) -> None:
        if self._log is not None:
            self._log.close()

    # -- reading, without the lock

    def catch_up(self) -> bool:
        """Take in what the log gained (call with the mutex); False when the state must be
        loaded or repaired under the lock (`writing`)."""
        if self.index is not None and self._log is not None:
            if self._log.is_current():
                return True
            if not self._log.replaced():
                self._replay()
                return True
        for _ in range(_UNLOCKED_LOAD_TRIES):
            if self._load(repair=False):
                return True
        return False

    def _replay(self) -> None:
        assert self.index is not None and self._log is not None
        apply = self.index.apply
        for record in self._log.read_new():
            apply(record)

    def _load(self, repair: bool) -> bool:
        """Snapshot plus log, from scratch; with `repair` (under the lock) whatever is damaged
        is made whole, else False when they do not fit together."""
        opened = LogFile.open(self.path)
        data = read(self.path)
        index, problems = salvage(data) if data is not None else (None, ["missing"])
        fits = (index is not None and not problems and opened is not None
                and opened.generation == index.generation
                and opened.uidvalidity == index.uidvalidity)
        if not fits and not repair:
            if opened is not None:
                opened.close()
            return False
        if self._log is not None:
            self._log.close()
        self.index, self._log = index, opened
        self.loads += 1
        if fits:
            self._replay()
            return True
        self._repair(problems, data is None)
        return True

    # -- writing, under the lock

    @contextlib.contextmanager
    def writing(self) -> Iterator[UidIndex]:
        """The folder locked and the index up to date, a torn log tail cut away."""
        with locked(self.path), held(self.mutex):
            if not self.catch_up():
                self._load(repair=True)
            assert self.index is not None and self._log is not None
            if self._log.torn_bytes():
                log.warning("change log of %s ended in %d torn bytes; cut away",
                            self.path, self._log.torn_bytes())
                self._log.truncate_torn_tail()
            yield self.index

    def commit(self, records: list[Record], durable: bool) -> None:
        """Append a change set (already applied to `index`, inside `writing`); with `durable`
        it is on disk when this returns. A full log makes it a new snapshot instead."""
        assert self.index is not None and self._log is not None
        if not records:
            return
        try:
            if self._log.would_overflow(len(records)):
                self.rotate()
            else:
                self._log.append(records, durable)
        except BaseException:
            self.index = None  # ahead of the disk now: the next reader loads again
            raise

    def log_copy(self) -> int:
        """(Inside `writing`.) A descriptor of the change log as it is now, the caller's to
        close: a sync of what was committed there may come after the lock is let go, when
        this state may have opened another log."""
        assert self._log is not None
        return os.dup(self._log.fd)

    def rotate(self) -> None:
        """Snapshot the index as a new generation and start its empty log (under `writing`).
        The snapshot goes first: a crash between the renames leaves a log older than it,
        which the next writer replaces, never a snapshot missing records of the log."""
        assert self.index is not None
        self.index.generation += 1
        self.index.prune_expunged()
        save(self.path, self.index)
        if self._log is not None:
            self._log.close()
        self._log = LogFile.create(self.path, self.index.generation, self.index.uidvalidity)
        fsync_dir(self.path)

    def _repair(self, problems: list[str], snapshot_missing: bool) -> None:
        """Under the lock: a damaged or missing snapshot or log made whole again."""
        if self.index is None:
            self.index = UidIndex(next_uidvalidity(self.root))
            if not snapshot_missing or self._holds_messages() or self._log is not None:
                log.warning("UID index of %s was %s; rebuilt with new UIDVALIDITY %d",
                            self.path, "; ".join(problems), self.index.uidvalidity)
        else:
            if problems:
                log.warning("UID index of %s was damaged (%s); repaired keeping UIDVALIDITY",
                            self.path, "; ".join(problems))
            if self._log_continues(self.index.generation):
                self._replay()  # what the log says still holds for a salvaged snapshot
            elif self.index.generation > 0 and not self._log_continues(self.index.generation - 1):
                # Records since the snapshot are lost (a log a generation behind is only a
                # rotation cut short): each could have handed out a UID and a MODSEQ, and
                # neither may be handed out twice.
                log.warning("change log of %s is missing or damaged; UIDNEXT and MODSEQ "
                            "moved past what it can have held", self.path)
                self.index.uidnext += LOG_MAX_RECORDS
                self.index.modseq += LOG_MAX_RECORDS
                self.index.expunged_floor = self.index.modseq
                self.index.first_recent = self.index.uidnext
        # The files are scanned again before anyone trusts them.
        self.index.cur_mtime, self.index.cur_final = 0, False
        self.rotate()

    def _log_continues(self, generation: int) -> bool:
        assert self.index is not None
        return (self._log is not None and self._log.uidvalidity == self.index.uidvalidity
                and self._log.generation == generation)

    def _holds_messages(self) -> bool:
        return any(not name.startswith(".") for sub in ("new", "cur")
                   for name in os.listdir(self.path / sub))

    def forget(self) -> None:
        """Drop what is loaded (`store repair` reads everything again)."""
        with self.mutex:
            self.index = None
            if self._log is not None:
                self._log.close()
                self._log = None


def inspect(path: Path) -> tuple[UidIndex | None, list[str]]:
    """`store check`: the index as snapshot plus log, read without the lock or any repair,
    and what is wrong with them."""
    data = read(path)
    if data is None:
        return None, []
    index, problems = salvage(data)
    if index is None or index.generation == 0:
        return index, problems  # a version 1 index has no log yet
    opened = LogFile.open(path)
    if opened is None:
        return index, problems + ["change log missing or damaged"]
    try:
        if opened.generation == index.generation:
            for record in opened.read_new():
                index.apply(record)
        elif opened.generation != index.generation - 1:
            problems.append(f"change log of generation {opened.generation}, "
                            f"snapshot of {index.generation}")
    finally:
        opened.close()
    return index, problems
