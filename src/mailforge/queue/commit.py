"""Group commit: many files made durable by one sync, then renamed into place.

fsync of one small file costs 300-700 µs here, while one syncfs() flushes a whole batch for
about the price of one fsync, so concurrent sessions of a worker share a sync (a database's
group commit). One committer thread per Spool takes every request queued while the previous
batch ran: under load batches grow by themselves, and a lone client waits for nothing extra.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import errno
import logging
import os
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..durable import fsync_dir, unlink_quietly
from ..speedups import write_all
from .segment import SEAL_AGE, SegmentWriter

log = logging.getLogger("mailforge.queue")

SYNC_SYNCFS = "syncfs"  # one syncfs() per file system per batch
# fdatasync() of every file: the fallback, and delivery's choice: a syncfs also waits for every
# other process's dirty data on the file system, so concurrent delivery workers (and the SMTP
# workers' commits) each flushed all the others' writes, and delivery stopped scaling.
SYNC_FSYNC = "fsync"
SYNC_MODES = (SYNC_SYNCFS, SYNC_FSYNC)

_libc = ctypes.CDLL(None, use_errno=True)
_syncfs = getattr(_libc, "syncfs", None)


def syncfs(fd: int) -> None:
    """Flush every dirty page and inode of the file system holding `fd` (Linux ≥ 2.6.39)."""
    if _syncfs is None:
        raise OSError(errno.ENOSYS, "syncfs is not available")
    if _syncfs(fd) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


class FileSyncer:
    """Makes the data of a set of open files durable, by syncfs or file by file, and the
    names renamed into a set of directories."""

    def __init__(self, mode: str = SYNC_SYNCFS,
                 executor: concurrent.futures.Executor | None = None) -> None:
        if mode not in SYNC_MODES:
            raise ValueError(f"sync mode must be one of {SYNC_MODES}, got {mode!r}")
        self.mode = mode
        # Per-file fdatasyncs overlap on a few threads (measured: 2 threads ≈ 400 µs/msg vs 700).
        self._executor = executor

    def sync(self, fds: Sequence[int]) -> None:
        if not fds:
            return
        if self.mode == SYNC_SYNCFS:
            try:
                # syncfs only covers its own file system, so one call per device touched.
                for fd in {os.fstat(fd).st_dev: fd for fd in fds}.values():
                    syncfs(fd)
                return
            except OSError as exc:
                if exc.errno != errno.ENOSYS:
                    raise
                log.warning("syncfs unavailable (%s); falling back to fdatasync per file", exc)
                self.mode = SYNC_FSYNC
        if self._executor is not None and len(fds) > 1:
            list(self._executor.map(os.fdatasync, fds))
        else:
            for fd in fds:
                os.fdatasync(fd)

    def sync_directories(self, directories: Collection[Path]) -> dict[Path, OSError]:
        """fsync each directory (the names renamed into it become durable), overlapped on the
        executor; the ones that failed, with why."""
        def attempt(directory: Path) -> OSError | None:
            try:
                fsync_dir(directory)
            except OSError as exc:
                return exc
            return None

        ordered = list(directories)
        if self._executor is not None and len(ordered) > 1:
            outcomes = list(self._executor.map(attempt, ordered))
        else:
            outcomes = [attempt(directory) for directory in ordered]
        return {d: exc for d, exc in zip(ordered, outcomes) if exc is not None}


@dataclass
class CommitRequest:
    fds: list[int]  # handed over: the committer closes them after the batch
    writes: list[tuple[int, bytes]]  # small writes (the envelope) to make before the sync
    renames: list[tuple[str, str]]  # done in order; the last one is the commit point
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    renamed: list[str] = field(default_factory=list)
    record: bytes = b""  # a whole message for the worker's open segment, instead of files


class GroupCommitter:
    """Write, sync, rename into `target_dir`, fsync `target_dir`: once per batch of requests.

    Records for the open segment (segment.py) are appended and synced in the same batch.
    """

    def __init__(self, target_dir: Path, mode: str = SYNC_SYNCFS,
                 executor: concurrent.futures.Executor | None = None,
                 segments: SegmentWriter | None = None) -> None:
        self._syncer = FileSyncer(mode, executor)
        self._segments = segments
        self._dir_fd = os.open(target_dir, os.O_RDONLY | os.O_DIRECTORY)
        self._cond = threading.Condition()
        self._pending: list[CommitRequest] = []
        self._closing = False
        self._closed: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None
        self.batches = 0  # for tests and the benchmark: how well requests were grouped
        self._thread = threading.Thread(target=self._main, name="spool-committer", daemon=True)
        self._thread.start()

    @property
    def mode(self) -> str:
        return self._syncer.mode

    def submit(self, fds: list[int], writes: list[tuple[int, bytes]],
               renames: list[tuple[str, str]]) -> asyncio.Future[None]:
        """Queue a request from the running loop; the future resolves once it is durable."""
        loop = asyncio.get_running_loop()
        return self._queue(CommitRequest(fds, writes, renames, loop, loop.create_future()))

    def submit_record(self, record: bytes) -> asyncio.Future[None]:
        """Queue a segment record; the future resolves once it is durable."""
        assert self._segments is not None
        loop = asyncio.get_running_loop()
        return self._queue(CommitRequest([], [], [], loop, loop.create_future(), record=record))

    def _queue(self, request: CommitRequest) -> asyncio.Future[None]:
        with self._cond:
            if self._closing:
                raise RuntimeError("the committer is closed")
            self._pending.append(request)
            self._cond.notify()
        return request.future

    async def close(self) -> None:
        """Commit what is queued, then stop the thread."""
        loop = asyncio.get_running_loop()
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._closed = (loop, loop.create_future())
            self._cond.notify()
        await self._closed[1]
        self._thread.join()
        os.close(self._dir_fd)

    def _main(self) -> None:
        while True:
            with self._cond:
                if not self._pending and not self._closing:
                    # Wake up to seal a segment left open by a quiet spell.
                    self._cond.wait(SEAL_AGE if self._segments is not None else None)
                batch, self._pending = self._pending, []
            if batch:
                self._run_guarded(batch)
                if self._segments is not None:
                    # A steady trickle leaves no quiet spell: without this a segment would
                    # wait for SEAL_SIZE, unseen by delivery and by the queue's flow control.
                    self._guarded(self._segments.seal_if_old)
            elif self._closing:
                break
            elif self._segments is not None:
                self._guarded(self._segments.seal_if_old)
        if self._segments is not None:
            self._guarded(self._segments.seal)
        assert self._closed is not None
        _resolve_threadsafe(self._closed[0], self._closed[1], None)

    @staticmethod
    def _guarded(action: Callable[[], None]) -> None:
        try:
            action()
        except OSError as exc:  # sealing is retried; the segment's records are durable already
            log.error("cannot seal queue segment: %s", exc)

    def _run_guarded(self, batch: list[CommitRequest]) -> None:
        try:
            self._run(batch)
        except Exception as exc:  # a bug here must not leave sessions waiting forever
            log.exception("spool committer failed")
            for request in batch:
                _resolve_threadsafe(request.loop, request.future, exc)

    def _run(self, batch: list[CommitRequest]) -> None:
        self.batches += 1
        failures: dict[int, OSError] = {}
        for request in batch:
            error = _write_all_files(request)
            if error is not None:
                failures[id(request)] = error
        fds = [fd for r in batch if id(r) not in failures for fd in r.fds]
        fds += self._append_records([r for r in batch if r.record], failures)
        try:
            self._syncer.sync(fds)
            if self._segments is not None:
                self._segments.synced()
        except OSError as exc:
            failures = {id(request): exc for request in batch}
        for request in batch:
            if id(request) not in failures:
                error = _rename_all(request)
                if error is not None:
                    failures[id(request)] = error
        if any(r.renames and id(r) not in failures for r in batch):
            try:
                os.fsync(self._dir_fd)
            except OSError as exc:
                failures = {id(request): exc for request in batch}
        for request in batch:
            self._finish(request, failures.get(id(request)))

    def _append_records(self, requests: list[CommitRequest], failures: dict[int, OSError]) -> list[int]:
        """Append the batch's records to the open segment; its fd to sync, if any."""
        if not requests:
            return []
        assert self._segments is not None
        try:
            return [self._segments.append([r.record for r in requests])]
        except OSError as exc:
            for request in requests:
                failures[id(request)] = exc
            return []

    @staticmethod
    def _finish(request: CommitRequest, error: OSError | None) -> None:
        for fd in request.fds:
            os.close(fd)
        if error is not None:
            # Never acknowledged, so it must not be delivered either: remove every copy.
            for src, dst in request.renames:
                unlink_quietly(src)
                if dst in request.renamed:
                    unlink_quietly(dst)
        _resolve_threadsafe(request.loop, request.future, error)


def _write_all_files(request: CommitRequest) -> OSError | None:
    try:
        for fd, data in request.writes:
            write_all(fd, data)
    except OSError as exc:
        return exc
    return None


def _rename_all(request: CommitRequest) -> OSError | None:
    try:
        for src, dst in request.renames:
            os.rename(src, dst)
            request.renamed.append(dst)
    except OSError as exc:
        return exc
    return None


def _resolve_threadsafe(loop: asyncio.AbstractEventLoop, future: asyncio.Future[None],
                        error: BaseException | None) -> None:
    try:
        loop.call_soon_threadsafe(_resolve, future, error)
    except RuntimeError:
        pass  # the loop is closed: nobody is waiting any more


def _resolve(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # the waiting session was cancelled (client gone)
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
