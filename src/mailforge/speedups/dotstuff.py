"""Streaming DATA decoding (RFC 5321 4.5.2): find the end, undo dot-stuffing, spot bare CR/LF.

Pure-Python twin of the `_spool` extension's DATA path. It works on whole chunks with
`bytes.find`/`replace`, so the interpreter does a handful of calls per chunk, not per line.

Only the exact sequence CRLF "." CRLF ends the data. Bare CR or LF anywhere is reported so the
session can refuse the message: a "." line framed by a bare CR or LF (SMTP smuggling) must never
end one message and start another.
"""

from __future__ import annotations

END = b"\r\n.\r\n"
STUFFED = b"\r\n.."
CRLF = b"\r\n"
# The data starts at the beginning of a line, as if a CRLF had just been read: that lets a
# first line of "." end the data and a first line of ".." be unstuffed like any other.
LINE_START = CRLF
# At most this many bytes are held back between chunks: a partial END needs 4.
MAX_CARRY = len(END) - 1


class DotUnstuffer:
    """Feed raw DATA chunks; get back the message bytes, in order, and where the data ended."""

    __slots__ = ("_carry", "_at_start", "done", "bare_newline")

    def __init__(self) -> None:
        self._carry = LINE_START
        self._at_start = True
        self.done = False
        self.bare_newline = False

    def feed(self, chunk: bytes) -> tuple[bytes, int]:
        """Return (message bytes, how many bytes of `chunk` were consumed).

        Everything is consumed until the end of data; after it, `done` is set and the bytes
        past the terminator (pipelined commands) are left to the caller.
        """
        held = len(self._carry)
        data = self._carry + chunk
        end = data.find(END)
        if end >= 0:
            self.done = True
            self._carry = b""
            return self._decode(data[: end + 2]), end + len(END) - held
        cut = self._safe_cut(data)
        self._carry = data[cut:]
        return self._decode(data[:cut]), len(chunk)

    @staticmethod
    def _safe_cut(data: bytes) -> int:
        """Where to stop so no END or STUFFED sequence straddles the cut."""
        last_crlf = data.rfind(CRLF, max(0, len(data) - MAX_CARRY - 1))
        if last_crlf >= 0 and len(data) - last_crlf <= MAX_CARRY:
            return last_crlf
        if data.endswith(b"\r"):
            return len(data) - 1
        return len(data)

    def _decode(self, raw: bytes) -> bytes:
        if not raw:
            return raw
        crlf = raw.count(CRLF)
        if raw.count(b"\r") != crlf or raw.count(b"\n") != crlf:
            self.bare_newline = True
        out = raw.replace(STUFFED, b"\r\n.")
        if self._at_start:
            self._at_start = False
            out = out[len(LINE_START):]
        return out
