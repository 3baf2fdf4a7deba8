"""Queue and store IO hot path: the pure-Python twin of the `_spool` extension.

Durable writes follow STYLE 14: temp name → fsync → rename → fsync the directory. os.write,
os.fsync and os.rename release the GIL here as the extension does, so a worker's IO threads
run in parallel either way; the extension saves the interpreter's work around them.
"""

from __future__ import annotations

import os

from .dotstuff import DotUnstuffer

__all__ = ["DotUnstuffer", "CrlfToLf", "write_all", "write_durable", "read_file",
           "deliver_maildir", "FILE_MODE"]

FILE_MODE = 0o600


class CrlfToLf:
    """SMTP's CRLF line ends → LF for Maildir files, chunk by chunk.

    A CR at the end of one chunk may pair with an LF at the start of the next, so it is held
    back until the next chunk (or `flush`) shows. A CR not followed by LF is kept.
    """

    __slots__ = ("_held_cr",)

    def __init__(self) -> None:
        self._held_cr = False

    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        prefix = b"\r" if self._held_cr and chunk[0] != 0x0A else b""
        self._held_cr = chunk[-1] == 0x0D
        if self._held_cr:
            chunk = chunk[:-1]
        return prefix + chunk.replace(b"\r\n", b"\n")

    def flush(self) -> bytes:
        held, self._held_cr = self._held_cr, False
        return b"\r" if held else b""


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_durable(path: str, data: bytes, mode: int = FILE_MODE) -> None:
    """Replace `path` with `data` so that a crash leaves the old or the new file, whole."""
    directory = os.path.dirname(path) or "."
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.rename(tmp, path)
    _fsync_dir(directory)


def read_file(path: str) -> bytes:
    with open(path, "rb", buffering=0) as fh:
        return fh.readall()


def deliver_maildir(maildir: str, base: str, data: bytes) -> str:
    """Deliver a queued (CRLF) message into a Maildir: tmp/ → fsync → new/ → fsync new/.

    Returns the path in new/, named `<base>,S=<size>` with the size on disk (Dovecot's).
    """
    converter = CrlfToLf()
    body = converter.feed(data) + converter.flush()
    tmp = os.path.join(maildir, "tmp", base)
    try:
        os.unlink(tmp)  # left by an attempt that died before its rename
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        write_all(fd, body)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    new = os.path.join(maildir, "new", f"{base},S={len(body)}")
    os.rename(tmp, new)
    _fsync_dir(os.path.join(maildir, "new"))
    return new


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
