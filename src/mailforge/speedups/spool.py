"""Queue and store IO hot path: the pure-Python twin of the `_spool` extension.

os.write releases the GIL here as the extension does, so a worker's IO threads run in
parallel either way; the extension saves the interpreter's work around it.
"""

from __future__ import annotations

import os

from .dotstuff import DotUnstuffer

__all__ = ["DotUnstuffer", "CrlfToLf", "write_all"]


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
