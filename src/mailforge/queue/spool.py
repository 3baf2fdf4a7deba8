"""The durable queue: queue/{incoming,active,corrupt}, one `<id>.msg` + `<id>.env` per message.

A message is written to incoming/ while SMTP DATA streams in, then committed: both files
are synced (grouped with other sessions' commits, see commit.py), the message and then the
envelope are renamed into active/, and active/ is fsynced. The envelope's rename is the
commit point, so active/ holds an .env only for an acknowledged message; anything left in
incoming/ after a crash was never acknowledged and is dropped by `recover()`.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .commit import SYNC_SYNCFS, GroupCommitter, fsync_dir, unlink_quietly
from .envelope import Envelope, EnvelopeError, decode, encode

log = logging.getLogger("mailforge.queue")

INCOMING, ACTIVE, CORRUPT = "incoming", "active", "corrupt"
MSG_SUFFIX, ENV_SUFFIX = ".msg", ".env"
FILE_MODE = 0o600
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
_ids = itertools.count()


class SpoolError(Exception):
    """The message could not be queued; the session answers with a temporary failure."""


def new_id() -> str:
    """Unique across processes and restarts: microseconds, pid, a per-process counter.

    The hex time comes first, at a fixed width, so names sort roughly by arrival.
    """
    return f"{time.time_ns() // 1000:014x}-{os.getpid()}-{next(_ids)}"


def write_new_file(path: str | Path, data: bytes) -> int:
    """Create `path` (it must not exist), write `data`; the open fd is returned unsynced."""
    fd = os.open(path, _NEW_FILE_FLAGS, FILE_MODE)
    try:
        _write_all(fd, data)
    except BaseException:
        os.close(fd)
        unlink_quietly(path)
        raise
    return fd


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class Spool:
    def __init__(self, queue_dir: Path, executor: concurrent.futures.Executor,
                 sync_mode: str = SYNC_SYNCFS) -> None:
        self.queue_dir = Path(queue_dir)
        self.incoming = self.queue_dir / INCOMING
        self.active = self.queue_dir / ACTIVE
        for sub in (INCOMING, ACTIVE, CORRUPT):
            os.makedirs(self.queue_dir / sub, mode=0o750, exist_ok=True)
        self.committer = GroupCommitter(self.active, sync_mode, executor)

    def create(self) -> SpoolFile:
        """A new temp file in incoming/: cheap enough to call on the event loop."""
        while True:
            spool_id = new_id()
            path = self.incoming / (spool_id + MSG_SUFFIX)
            try:
                fd = os.open(path, _NEW_FILE_FLAGS, FILE_MODE)
            except FileExistsError:
                continue  # only if the clock stepped back onto a reused pid
            except OSError as exc:
                raise SpoolError(f"cannot create a queue file: {exc}") from exc
            return SpoolFile(self, spool_id, fd)

    async def close(self) -> None:
        await self.committer.close()


class SpoolFile:
    def __init__(self, spool: Spool, spool_id: str, fd: int) -> None:
        self.id = spool_id
        self.size = 0
        self._spool = spool
        self._fd: int | None = fd  # None once handed to the committer or closed
        self._open = True  # False once committed, failed or aborted

    def _path(self, sub: Path, suffix: str) -> str:
        return str(sub / (self.id + suffix))

    def write(self, data: bytes | memoryview) -> None:
        if self._fd is None:
            raise SpoolError("queue file is already closed")
        try:
            _write_all(self._fd, data)
        except OSError as exc:
            raise SpoolError(f"cannot write queue file {self.id}: {exc}") from exc
        self.size += len(data)

    async def commit(self, envelope: Envelope) -> None:
        if self._fd is None:
            raise SpoolError("queue file is already closed")
        envelope.id, envelope.size = self.id, self.size
        incoming, active = self._spool.incoming, self._spool.active
        try:
            env_fd = write_new_file(self._path(incoming, ENV_SUFFIX), encode(envelope))
        except OSError as exc:
            self.abort()
            raise SpoolError(f"cannot write envelope {self.id}: {exc}") from exc
        renames = [(self._path(incoming, suffix), self._path(active, suffix))
                   for suffix in (MSG_SUFFIX, ENV_SUFFIX)]
        fds, self._fd, self._open = [self._fd, env_fd], None, False
        try:
            future = self._spool.committer.submit(fds, renames)
        except RuntimeError as exc:
            for fd in fds:
                os.close(fd)
            self._unlink_temps()
            raise SpoolError(f"cannot commit {self.id}: spool is closing") from exc
        try:
            await future
        except OSError as exc:  # the committer has removed the files already
            raise SpoolError(f"cannot commit {self.id}: {exc}") from exc

    def abort(self) -> None:
        """Drop an uncommitted message. Once commit() began the committer owns the files:
        a commit cancelled mid-way may still complete, which is at-least-once, not loss."""
        if not self._open:
            return
        self._open = False
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._unlink_temps()

    def _unlink_temps(self) -> None:
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
