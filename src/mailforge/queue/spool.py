"""The durable queue: queue/{incoming,active,corrupt}, one `<id>.msg` + `<id>.env` per message.

The message file is kept in Maildir form: LF line ends, and first a `Return-Path:` line and,
for a message with one recipient, a `Delivered-To:` line. Local delivery of such a message
is then a rename into the mailbox's new/ (same file system), not a copy.

A message is written to incoming/ while SMTP DATA streams in, then committed: both files
are synced (grouped with other sessions' commits, see commit.py), the message and then the
envelope are renamed into active/, and active/ is fsynced. The envelope's rename is the
commit point, so active/ holds an .env only for an acknowledged message; anything left in
incoming/ after a crash was never acknowledged and is dropped by `recover()`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..durable import fsync_dir, open_new_file, out_of_space, replace_durably, unlink_quietly
from ..speedups import CrlfToLf, write_all
from .commit import SYNC_SYNCFS, GroupCommitter
from .envelope import Envelope, EnvelopeError, decode, encode
from .flow import QueueUsage
from .segment import (SEALED_SUFFIX, SEGMENTS, SegmentWriter, encode_record, record_count,
                      seal_orphans)

log = logging.getLogger("mailforge.queue")

INCOMING, ACTIVE, CORRUPT = "incoming", "active", "corrupt"
MSG_SUFFIX, ENV_SUFFIX = ".msg", ".env"
SUBDIRS = (INCOMING, ACTIVE, CORRUPT, SEGMENTS)
# A message up to this size is kept in memory and queued as a segment record (no files of
# its own); a bigger one streams into files of its own. Bounds a session's memory.
SPILL_SIZE = 256 * 1024
_ids = itertools.count()


class SpoolError(Exception):
    """The message could not be queued; the session answers with a temporary failure.

    Raised `from` the OSError that caused it, where one did."""

    @property
    def no_space(self) -> bool:
        """Failed for want of space: the session answers "insufficient system storage"
        (RFC 3463 4.3.1) rather than a bare IO error."""
        return out_of_space(self.__cause__)


def new_id() -> str:
    """Unique across processes and restarts: microseconds, pid, a per-process counter.

    The hex time comes first, at a fixed width, so names sort roughly by arrival.
    """
    return f"{time.time_ns() // 1000:014x}-{os.getpid()}-{next(_ids)}"


@dataclass
class TempPair:
    id: str
    msg_fd: int
    env_fd: int


def make_pair(incoming: Path, spool_id: str) -> TempPair:
    """The .msg/.env temp files of a message too big to keep in memory."""
    msg_fd = open_new_file(incoming / (spool_id + MSG_SUFFIX))
    try:
        env_fd = open_new_file(incoming / (spool_id + ENV_SUFFIX))
    except BaseException:
        os.close(msg_fd)
        unlink_quietly(incoming / (spool_id + MSG_SUFFIX))
        raise
    return TempPair(spool_id, msg_fd, env_fd)


def write_entry_file(queue_dir: Path, entry_id: str, suffix: str, data: bytes) -> int:
    """An entry's .msg or .env, written in incoming/ and renamed into active/ (over the one it
    replaces, if any); the new file's inode. The caller fsyncs active/."""
    return replace_durably(queue_dir / INCOMING, queue_dir / ACTIVE / (entry_id + suffix), data)


class Spool:
    def __init__(self, queue_dir: Path, executor: concurrent.futures.Executor,
                 sync_mode: str = SYNC_SYNCFS) -> None:
        self.queue_dir = Path(queue_dir)
        self.incoming = self.queue_dir / INCOMING
        self.active = self.queue_dir / ACTIVE
        for sub in SUBDIRS:
            os.makedirs(self.queue_dir / sub, mode=0o750, exist_ok=True)
        self.committer = GroupCommitter(self.active, sync_mode, executor,
                                        SegmentWriter(self.queue_dir, new_id))

    def create(self, sender: str, recipients: list[str]) -> SpoolFile:
        """A new message, its delivery headers written: cheap enough to call on the event loop."""
        spool_file = SpoolFile(self, new_id())
        spool_file.start(sender, recipients)
        return spool_file

    async def submit(self, sender: str, recipients: list[str], message: bytes) -> str:
        """Queue a message the server writes itself (a notice to an administrator), as durably
        as one received by SMTP; `message` has CRLF line ends. Returns its queue id."""
        spool_file = self.create(sender, recipients)
        spool_file.write(message)
        envelope = Envelope(id=spool_file.id, sender=sender, recipients=list(recipients),
                            received_at=time.time(), client_ip="", helo="", sign=True)
        try:
            await spool_file.commit(envelope)
        except BaseException:
            spool_file.abort()
            raise
        return spool_file.id

    async def close(self) -> None:
        await self.committer.close()


class SpoolFile:
    """One message being received: held in memory while small, else in files of its own.

    Memory per session stays under SPILL_SIZE whatever the message size.
    """

    def __init__(self, spool: Spool, spool_id: str) -> None:
        self.id = spool_id
        self.size = 0
        self._spool = spool
        self._buffer: bytearray | None = bytearray()  # None once spilled to files
        self._pair: TempPair | None = None
        self._open = True  # False once committed, failed or aborted
        self._line_ends = CrlfToLf()
        self._prefix_size = 0
        self._delivered_to = ""

    def _path(self, sub: Path, suffix: str) -> str:
        return str(sub / (self.id + suffix))

    def start(self, sender: str, recipients: list[str]) -> None:
        self._delivered_to = recipients[0] if len(recipients) == 1 else ""
        prefix = f"Return-Path: <{sender}>\n"
        if self._delivered_to:
            prefix += f"Delivered-To: {self._delivered_to}\n"
        self._append(prefix.encode())
        self._prefix_size = self.size

    def write(self, data: bytes | memoryview) -> None:
        """Append message bytes as received (CRLF line ends); stored with LF."""
        self._append(self._line_ends.feed(bytes(data)))

    def _append(self, data: bytes) -> None:
        if not self._open:
            raise SpoolError("queue file is already closed")
        self.size += len(data)
        if self._buffer is not None:
            self._buffer += data
            if len(self._buffer) <= SPILL_SIZE:
                return
            data, self._buffer = bytes(self._buffer), None
            self._spill()
        assert self._pair is not None
        try:
            write_all(self._pair.msg_fd, data)
        except OSError as exc:
            # Part of `data` may be in the file: it is removed now, never written to again.
            self._open = False
            self._close_and_unlink()
            raise SpoolError(f"cannot write queue file {self.id}: {exc}") from exc

    def _spill(self) -> None:
        try:
            self._pair = make_pair(self._spool.incoming, self.id)
        except OSError as exc:
            self._open = False
            raise SpoolError(f"cannot create a queue file: {exc}") from exc

    async def commit(self, envelope: Envelope) -> None:
        self._append(self._line_ends.flush())
        envelope.id, envelope.size = self.id, self.size
        envelope.prefix_size, envelope.delivered_to = self._prefix_size, self._delivered_to
        self._open = False
        committer = self._spool.committer
        try:
            if self._buffer is not None:
                future = committer.submit_record(encode_record(envelope, bytes(self._buffer)))
                self._buffer = None
            else:
                future = self._submit_files(envelope)
        except RuntimeError as exc:
            self._close_and_unlink()
            raise SpoolError(f"cannot commit {self.id}: spool is closing") from exc
        try:
            await future
        except OSError as exc:  # the committer has removed the files already
            raise SpoolError(f"cannot commit {self.id}: {exc}") from exc

    def _submit_files(self, envelope: Envelope) -> asyncio.Future[None]:
        assert self._pair is not None
        incoming, active = self._spool.incoming, self._spool.active
        renames = [(self._path(incoming, suffix), self._path(active, suffix))
                   for suffix in (MSG_SUFFIX, ENV_SUFFIX)]
        fds = [self._pair.msg_fd, self._pair.env_fd]
        return self._spool.committer.submit(fds, [(self._pair.env_fd, encode(envelope))], renames)

    def abort(self) -> None:
        """Drop an uncommitted message. Once commit() began the committer owns the files:
        a commit cancelled mid-way may still complete, which is at-least-once, not loss."""
        if self._open:
            self._open = False
            self._close_and_unlink()

    def _close_and_unlink(self) -> None:
        self._buffer = None
        if self._pair is None:
            return
        for fd in (self._pair.msg_fd, self._pair.env_fd):
            os.close(fd)
        for suffix in (MSG_SUFFIX, ENV_SUFFIX):
            unlink_quietly(self._path(self._spool.incoming, suffix))
        self._pair = None


def queue_length(queue_dir: Path) -> int:
    """Messages in active/ (single entries and sealed segments); open segments, sealed
    within SEAL_AGE, are not counted."""
    return _scan_active(queue_dir, sizes=False).messages


def queue_usage(queue_dir: Path) -> QueueUsage:
    """queue_length, and the bytes of the messages' files: one stat per .msg and segment
    (a segment holds thousands of small messages), none per .env."""
    return _scan_active(queue_dir, sizes=True)


def _scan_active(queue_dir: Path, sizes: bool) -> QueueUsage:
    count = size = 0
    with os.scandir(Path(queue_dir) / ACTIVE) as entries:
        for entry in entries:
            name = entry.name
            if name.endswith(ENV_SUFFIX):
                count += 1
                continue
            if name.endswith(SEALED_SUFFIX):
                count += record_count(name)
            elif not name.endswith(MSG_SUFFIX):
                continue
            if sizes:
                try:
                    size += entry.stat().st_size
                except FileNotFoundError:
                    pass  # delivered while we looked
    return QueueUsage(count, size)


def oldest_age(queue_dir: Path, now: float | None = None) -> float | None:
    """Seconds since the oldest message in active/ was queued (its file's mtime), None if empty.
    A deferral rewrites an envelope, so a retried message counts from its last attempt."""
    oldest = None
    with os.scandir(Path(queue_dir) / ACTIVE) as entries:
        for entry in entries:
            if entry.name.endswith((ENV_SUFFIX, SEALED_SUFFIX)):
                try:
                    mtime = entry.stat().st_mtime
                except FileNotFoundError:
                    continue  # delivered while we looked
                oldest = mtime if oldest is None else min(oldest, mtime)
    return None if oldest is None else max(0.0, (time.time() if now is None else now) - oldest)


@dataclass
class RecoveryReport:
    kept: int = 0
    dropped_incoming: int = 0  # never acknowledged to a client
    orphans: int = 0  # an .env without .msg or the reverse
    segments_sealed: int = 0  # open segments whose writer had stopped
    corrupt: int = 0  # moved to corrupt/ for an operator to look at


def recover(queue_dir: Path) -> RecoveryReport:
    """Bring the queue to a consistent state; run before any worker starts."""
    queue_dir = Path(queue_dir)
    for sub in SUBDIRS:
        os.makedirs(queue_dir / sub, mode=0o750, exist_ok=True)
    report = RecoveryReport()
    report.segments_sealed = seal_orphans(queue_dir)
    with os.scandir(queue_dir / INCOMING) as entries:
        for entry in entries:
            unlink_quietly(entry.path)
            report.dropped_incoming += 1
    _recover_active(queue_dir, report)
    for sub in SUBDIRS:
        fsync_dir(queue_dir / sub)
    log.info("queue recovered: %d queued, %d segments of stopped writers sealed, "
             "%d unacknowledged dropped, %d orphans removed, %d corrupt moved to %s",
             report.kept, report.segments_sealed, report.dropped_incoming, report.orphans,
             report.corrupt, queue_dir / CORRUPT)
    return report


def _recover_active(queue_dir: Path, report: RecoveryReport) -> None:
    active = queue_dir / ACTIVE
    names = set(os.listdir(active))
    for name in sorted(names):
        stem, suffix = os.path.splitext(name)
        if suffix == SEALED_SUFFIX:
            report.kept += record_count(name)
        elif suffix not in (MSG_SUFFIX, ENV_SUFFIX):
            _move_corrupt(queue_dir, [name])
            report.corrupt += 1
        elif (stem + MSG_SUFFIX) not in names or (stem + ENV_SUFFIX) not in names:
            unlink_quietly(active / name)
            report.orphans += 1
        elif suffix == ENV_SUFFIX:
            if _entry_is_sound(active, stem):
                report.kept += 1
            else:
                _move_corrupt(queue_dir, [stem + MSG_SUFFIX, name])
                report.corrupt += 1


def _entry_is_sound(active: Path, stem: str) -> bool:
    try:
        envelope = decode((active / (stem + ENV_SUFFIX)).read_bytes())
    except EnvelopeError:
        return False
    return envelope.id == stem and (active / (stem + MSG_SUFFIX)).stat().st_size == envelope.size


def _move_corrupt(queue_dir: Path, names: list[str]) -> None:
    for name in names:
        os.replace(queue_dir / ACTIVE / name, queue_dir / CORRUPT / name)
