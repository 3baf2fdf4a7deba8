"""Durable file IO, below the queue, the store, TLS and backups (STYLE 14).

A file is made durable as temp name → sync → rename → sync of its directory: a crash then
leaves the old file or the whole new one, never a part of it, and once the directory is synced
the new name survives too. The queue's group commit (queue/commit.py) shares one sync among
many files; everything else takes these steps one file at a time.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from .speedups import write_all

FILE_MODE = 0o600  # queue entries, messages, indexes: for the server's account alone
# O_EXCL: a name is ours alone, so a file someone else is still writing is never truncated.
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def out_of_space(exc: BaseException | None) -> bool:
    """Did a write fail for want of space (the file system, or a disk quota)? That passes
    once space is freed: callers answer "insufficient system storage" and retry later, where
    another OSError may be a fault worth a traceback."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def open_new_file(path: str | Path) -> int:
    """Create `path` (FileExistsError when it exists) and open it for writing."""
    return os.open(path, _NEW_FILE_FLAGS, FILE_MODE)


def write_new_file(path: str | Path, data: bytes | Iterable[bytes]) -> int:
    """Create `path` (it must not exist), write `data`, or its chunks in order (a message
    streamed without holding it whole); the open fd is returned unsynced. A failed write
    leaves no file behind."""
    fd = open_new_file(path)
    try:
        for chunk in [data] if isinstance(data, bytes) else data:
            write_all(fd, chunk)
    except BaseException:
        os.close(fd)
        unlink_quietly(path)
        raise
    return fd


def write_synced_file(path: str | Path, data: bytes, mode: int = FILE_MODE) -> int:
    """Create `path` holding `data`, synced (its directory entry is not); the new file's
    inode. Its mode is exactly `mode`, whatever the umask. A failure leaves no file behind."""
    fd = write_new_file(path, data)
    try:
        try:
            os.fchmod(fd, mode)
            os.fdatasync(fd)
            return os.fstat(fd).st_ino
        finally:
            os.close(fd)
    except BaseException:
        unlink_quietly(path)
        raise


def replace_durably(tmp_dir: Path, target: Path, data: bytes, mode: int = FILE_MODE) -> int:
    """Write `data` to a temp file in `tmp_dir` (same file system), sync it, rename it over
    `target`: a crash leaves the old file or the new one. The new file's inode is returned
    (readers use it to notice the change). The caller fsyncs target's directory."""
    tmp = tmp_dir / f"{target.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    unlink_quietly(tmp)  # left by a process that died before its rename
    inode = write_synced_file(tmp, data, mode)
    try:
        os.rename(tmp, target)
    except BaseException:
        unlink_quietly(tmp)
        raise
    return inode


def write_atomically(path: Path, data: bytes, durable: bool = True, mode: int = FILE_MODE) -> None:
    """Replace `path` with `data` so that a crash leaves the old content or the new; with
    `durable`, the new one once this returns (the directory is synced too)."""
    replace_durably(path.parent, path, data, mode)
    if durable:
        fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make the names in a directory durable: a file renamed into it, or one removed."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unlink_quietly(path: str | Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
