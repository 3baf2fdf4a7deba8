"""Queue segments: many small messages in one append-only file, made durable by one sync.

Creating a file is the dearest thing a spool does here (0.1-2 ms of kernel time each while
other syncs run), so a message that fits in memory is not given files of its own: each
worker appends it, as one record, to its open segment under queue/segments/, and the group
commit syncs the segment once for the whole batch. A segment is sealed (renamed into
active/ as `<id>.<records>.seg`) once it is big or old enough, and delivery takes it from
there like any queue entry. The writer holds an flock on its open segment, so a segment
whose lock can be taken belongs to a dead writer and is sealed by whoever finds it. For that
to hold, a segment takes its `.open` name only once locked: it is created as `.new`, which
the sweep of orphans leaves alone while it is young.

Record: MAGIC, then big-endian lengths of the envelope and the body, the envelope (its own
versioned, checksummed encoding), the body (Maildir form, see spool.py), and a CRC-32 of
envelope and body. A record cut short by a crash was never acknowledged: it is dropped.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

from ..durable import FILE_MODE, fsync_dir
from ..speedups import write_all
from .envelope import Envelope, EnvelopeError, decode, encode

log = logging.getLogger("mailforge.queue")

SEGMENTS = "segments"
OPEN_SUFFIX = ".open"
NEW_SUFFIX = ".new"  # created, not yet locked: no writer's record can be in it
# A writer locks its new segment microseconds after creating it; one still unlocked after
# this long was left by a writer killed in between, and is empty.
ABANDONED_AGE = 60.0
SEALED_SUFFIX = ".seg"
MAGIC = b"MFQ1"
HEADER = struct.Struct(">4sII")
TRAILER = struct.Struct(">I")
# A segment is sealed past either bound: small enough to deliver promptly, big enough that
# creating it costs nothing per message.
SEAL_SIZE = 4 * 1024 * 1024
SEAL_AGE = 0.1  # seconds an open segment may wait for more records in a quiet spell


class SegmentError(Exception):
    """A record that cannot be trusted."""


def encode_record(envelope: Envelope, body: bytes) -> bytes:
    meta = encode(envelope)
    return b"".join((HEADER.pack(MAGIC, len(meta), len(body)), meta, body,
                     TRAILER.pack(zlib.crc32(body, zlib.crc32(meta)))))


def read_records(path: Path) -> Iterator[tuple[Envelope, bytes]]:
    """Every whole record of a segment; stops at a torn tail, raises on damage before it."""
    with open(path, "rb") as fh:
        data = fh.read()
    for envelope, body, _end in _records(data):
        yield envelope, body


def _records(data: bytes) -> Iterator[tuple[Envelope, bytes, int]]:
    offset = 0
    while offset + HEADER.size <= len(data):
        magic, meta_size, body_size = HEADER.unpack_from(data, offset)
        if magic != MAGIC:
            raise SegmentError(f"bad record magic at offset {offset}")
        start = offset + HEADER.size
        end = start + meta_size + body_size + TRAILER.size
        if end > len(data):
            return
        meta, body = data[start:start + meta_size], data[start + meta_size:end - TRAILER.size]
        (crc,) = TRAILER.unpack_from(data, end - TRAILER.size)
        if crc != zlib.crc32(body, zlib.crc32(meta)):
            raise SegmentError(f"record at offset {offset} fails its checksum")
        try:
            yield decode(meta), body, end
        except EnvelopeError as exc:
            raise SegmentError(f"record at offset {offset}: {exc}") from None
        offset = end


def record_count(name: str) -> int:
    """How many records a sealed segment holds, from its name `<id>.<records>.seg`."""
    return int(name.rsplit(".", 2)[1])


class SegmentWriter:
    """One worker's open segment; used from the committer thread only."""

    def __init__(self, queue_dir: Path, new_id) -> None:
        self._open_dir = queue_dir / SEGMENTS
        self._active = queue_dir / "active"
        self._new_id = new_id
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = self._records = 0
        self._opened_at = 0.0
        self.created = False  # a new segment's directory entry must be synced once

    def append(self, records: list[bytes]) -> int:
        """Write the records (not yet synced); the fd to sync."""
        if self._fd is None:
            self._open()
        assert self._fd is not None
        size = sum(len(r) for r in records)
        try:
            # One write per batch (writev would refuse more than IOV_MAX records).
            write_all(self._fd, b"".join(records))
        except OSError:
            self._cut_back()
            raise
        self._size += size
        self._records += len(records)
        return self._fd

    def _cut_back(self) -> None:
        """After a failed append, drop its partial bytes, or give up on the segment."""
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, self._size)
        except OSError:
            if self._records:
                self.seal()
            else:
                os.close(self._fd)
                self._fd = None

    def synced(self) -> None:
        """After the batch's sync: new directory entries durable, seal when due."""
        if self.created:
            fsync_dir(self._open_dir)
            self.created = False
        if self._size >= SEAL_SIZE:
            self.seal()

    def seal_if_old(self) -> None:
        if self._fd is not None and time.monotonic() - self._opened_at >= SEAL_AGE:
            self.seal()

    def seal(self) -> None:
        if self._fd is None or self._path is None:
            return
        sealed = self._active / f"{self._path.stem}.{self._records}{SEALED_SUFFIX}"
        os.rename(self._path, sealed)
        os.close(self._fd)  # the rename first: while we hold the lock nobody else seals it
        self._fd, self._path = None, None
        self._size = self._records = 0

    def _open(self) -> None:
        stem = self._new_id()
        new = self._open_dir / f"{stem}{NEW_SUFFIX}"
        path = self._open_dir / f"{stem}{OPEN_SUFFIX}"
        fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC,
                     FILE_MODE)
        try:
            # Locked before it is named .open: an unlocked .open segment would look orphaned,
            # and a sweep that found it empty would unlink it under the records we append.
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.rename(new, path)
        except BaseException:
            os.close(fd)
            os.unlink(new)
            raise
        self._fd, self._path, self.created = fd, path, True
        self._opened_at = time.monotonic()


def seal_orphans(queue_dir: Path) -> int:
    """Seal the open segments of writers that died (their lock is free); how many."""
    sealed = 0
    try:
        names = os.listdir(queue_dir / SEGMENTS)
    except FileNotFoundError:
        return 0
    for name in names:
        if name.endswith(OPEN_SUFFIX) and _seal_orphan(queue_dir, queue_dir / SEGMENTS / name):
            sealed += 1
        elif name.endswith(NEW_SUFFIX):
            _remove_abandoned(queue_dir / SEGMENTS / name)
    if sealed:
        fsync_dir(queue_dir / "active")
    return sealed


def _seal_orphan(queue_dir: Path, path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False  # sealed by its writer meanwhile
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its writer is alive
        if not os.path.exists(path):
            return False
        with open(fd, "rb", closefd=False) as fh:
            data = fh.read()
        count, end, damaged = _whole_records(data, path)
        if damaged:  # keep the whole file for an operator before cutting it back
            with open(queue_dir / "corrupt" / path.name, "wb") as copy:
                copy.write(data)
        if end < len(data):  # a torn last record was never acknowledged
            os.ftruncate(fd, end)
            os.fsync(fd)
        if count == 0:
            os.unlink(path)
            return False
        os.rename(path, queue_dir / "active" / f"{path.stem}.{count}{SEALED_SUFFIX}")
        log.info("sealed orphaned queue segment %s (%d messages)", path.name, count)
        return True
    finally:
        os.close(fd)


def _remove_abandoned(path: Path) -> None:
    try:
        status = path.stat()
        if status.st_size == 0 and time.time() - status.st_mtime >= ABANDONED_AGE:
            path.unlink()
    except FileNotFoundError:
        pass


def _whole_records(data: bytes, path: Path) -> tuple[int, int, bool]:
    """(records, where the last whole one ends, whether damage stopped the count)."""
    count = end = 0
    try:
        for _envelope, _body, end in _records(data):
            count += 1
    except SegmentError as exc:
        log.error("queue segment %s is damaged after %d records (copy kept in corrupt/): %s",
                  path.name, count, exc)
        return count, end, True
    return count, end, False
