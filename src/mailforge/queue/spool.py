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
import collections
import concurrent.futures
import itertools
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..store.maildir import CrlfToLf
from .commit import (FILE_MODE, NEW_FILE_FLAGS, SYNC_SYNCFS, GroupCommitter, fsync_dir,
                     unlink_quietly, write_all)
from .envelope import Envelope, EnvelopeError, decode, encode

log = logging.getLogger("mailforge.queue")

INCOMING, ACTIVE, CORRUPT = "incoming", "active", "corrupt"
MSG_SUFFIX, ENV_SUFFIX = ".msg", ".env"
# Temp file pairs made ahead: about two commit batches' worth, within these bounds.
POOL_MIN, POOL_MAX = 16, 512
_ids = itertools.count()


class SpoolError(Exception):
    """The message could not be queued; the session answers with a temporary failure."""


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


class TempPool:
    """Empty .msg/.env pairs in incoming/, made ahead on a thread of their own.

    Creating a file waits on the file system's journal (measured 0.1-2 ms here while syncs
    run), which must not stall the event loop nor delay the committer's next sync.
    """

    def __init__(self, incoming: Path) -> None:
        self.incoming = incoming
        self._pairs: collections.deque[TempPair] = collections.deque()
        self._cond = threading.Condition()
        self._target = POOL_MIN
        self._closing = False
        self._thread = threading.Thread(target=self._main, name="spool-pool", daemon=True)
        self._thread.start()

    def take(self) -> TempPair:
        try:
            pair = self._pairs.popleft()
        except IndexError:  # a burst outran the pool: make one here, at the price of a wait
            pair = self.make()
        with self._cond:
            self._cond.notify()
        return pair

    def set_target(self, last_batch: int) -> None:
        with self._cond:
            self._target = min(POOL_MAX, max(POOL_MIN, 2 * last_batch))
            self._cond.notify()

    def make(self) -> TempPair:
        while True:
            spool_id = new_id()
            try:
                msg_fd = os.open(self.incoming / (spool_id + MSG_SUFFIX), NEW_FILE_FLAGS, FILE_MODE)
                break
            except FileExistsError:
                continue  # only if the clock stepped back onto a reused pid
        try:
            env_fd = os.open(self.incoming / (spool_id + ENV_SUFFIX), NEW_FILE_FLAGS, FILE_MODE)
        except BaseException:
            os.close(msg_fd)
            unlink_quietly(self.incoming / (spool_id + MSG_SUFFIX))
            raise
        return TempPair(spool_id, msg_fd, env_fd)

    def _main(self) -> None:
        while True:
            with self._cond:
                while len(self._pairs) >= self._target and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return
            try:
                self._pairs.append(self.make())
            except OSError as exc:  # disk full: take() reports it to the sessions
                log.warning("cannot make queue files ahead: %s", exc)
                with self._cond:
                    self._cond.wait(1.0)

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()
        while self._pairs:
            pair = self._pairs.popleft()
            for fd in (pair.msg_fd, pair.env_fd):
                os.close(fd)
            for suffix in (MSG_SUFFIX, ENV_SUFFIX):
                unlink_quietly(self.incoming / (pair.id + suffix))


class Spool:
    def __init__(self, queue_dir: Path, executor: concurrent.futures.Executor,
                 sync_mode: str = SYNC_SYNCFS) -> None:
        self.queue_dir = Path(queue_dir)
        self.incoming = self.queue_dir / INCOMING
        self.active = self.queue_dir / ACTIVE
        for sub in (INCOMING, ACTIVE, CORRUPT):
            os.makedirs(self.queue_dir / sub, mode=0o750, exist_ok=True)
        self._pool = TempPool(self.incoming)
        self.committer = GroupCommitter(self.active, sync_mode, executor, self._pool.set_target)

    def create(self, sender: str, recipients: list[str]) -> SpoolFile:
        """A new temp file in incoming/, its delivery headers written: cheap enough to call on
        the event loop."""
        try:
            spool_file = SpoolFile(self, self._pool.take())
        except OSError as exc:
            raise SpoolError(f"cannot create a queue file: {exc}") from exc
        spool_file.start(sender, recipients)
        return spool_file

    async def close(self) -> None:
        await self.committer.close()
        await asyncio.to_thread(self._pool.close)


class SpoolFile:
    def __init__(self, spool: Spool, pair: TempPair) -> None:
        self.id = pair.id
        self.size = 0
        self._spool = spool
        self._pair = pair
        self._fd: int | None = pair.msg_fd  # None once handed to the committer or closed
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
        self._append(self._line_ends.feed(data))

    def _append(self, data: bytes) -> None:
        if self._fd is None:
            raise SpoolError("queue file is already closed")
        try:
            write_all(self._fd, data)
        except OSError as exc:
            raise SpoolError(f"cannot write queue file {self.id}: {exc}") from exc
        self.size += len(data)

    async def commit(self, envelope: Envelope) -> None:
        self._append(self._line_ends.flush())
        envelope.id, envelope.size = self.id, self.size
        envelope.prefix_size, envelope.delivered_to = self._prefix_size, self._delivered_to
        incoming, active = self._spool.incoming, self._spool.active
        renames = [(self._path(incoming, suffix), self._path(active, suffix))
                   for suffix in (MSG_SUFFIX, ENV_SUFFIX)]
        fds = [self._pair.msg_fd, self._pair.env_fd]
        self._fd, self._open = None, False
        try:
            future = self._spool.committer.submit(fds, [(self._pair.env_fd, encode(envelope))],
                                                  renames)
        except RuntimeError as exc:
            self._close_and_unlink()
            raise SpoolError(f"cannot commit {self.id}: spool is closing") from exc
        try:
            await future
        except OSError as exc:  # the committer has removed the files already
            raise SpoolError(f"cannot commit {self.id}: {exc}") from exc

    def abort(self) -> None:
        """Drop an uncommitted message. Once commit() began the committer owns the files:
        a commit cancelled mid-way may still complete, which is at-least-once, not loss."""
        if self._open:
            self._open, self._fd = False, None
            self._close_and_unlink()

    def _close_and_unlink(self) -> None:
        for fd in (self._pair.msg_fd, self._pair.env_fd):
            os.close(fd)
        for suffix in (MSG_SUFFIX, ENV_SUFFIX):
            unlink_quietly(self._path(self._spool.incoming, suffix))


def queue_length(queue_dir: Path) -> int:
    with os.scandir(Path(queue_dir) / ACTIVE) as entries:
        return sum(1 for entry in entries if entry.name.endswith(ENV_SUFFIX))


@dataclass
class RecoveryReport:
    kept: int = 0
    dropped_incoming: int = 0  # never acknowledged to a client
    orphans: int = 0  # an .env without .msg or the reverse
    corrupt: int = 0  # moved to corrupt/ for an operator to look at


def recover(queue_dir: Path) -> RecoveryReport:
    """Bring the queue to a consistent state; run before any worker starts."""
    queue_dir = Path(queue_dir)
    for sub in (INCOMING, ACTIVE, CORRUPT):
        os.makedirs(queue_dir / sub, mode=0o750, exist_ok=True)
    report = RecoveryReport()
    with os.scandir(queue_dir / INCOMING) as entries:
        for entry in entries:
            unlink_quietly(entry.path)
            report.dropped_incoming += 1
    _recover_active(queue_dir, report)
    for sub in (INCOMING, ACTIVE, CORRUPT):
        fsync_dir(queue_dir / sub)
    log.info("queue recovered: %d queued, %d unacknowledged dropped, %d orphans removed, "
             "%d corrupt moved to %s", report.kept, report.dropped_incoming, report.orphans,
             report.corrupt, queue_dir / CORRUPT)
    return report


def _recover_active(queue_dir: Path, report: RecoveryReport) -> None:
    active = queue_dir / ACTIVE
    names = set(os.listdir(active))
    for name in sorted(names):
        stem, suffix = os.path.splitext(name)
        if suffix not in (MSG_SUFFIX, ENV_SUFFIX):
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
