"""Mail loop protection: count the `Received:` headers of a message as it streams in.

Every MTA a message passes adds one (RFC 5321 4.4); a message that has been through more
than MAX_HOPS is going round in circles, and is refused with 554 5.4.6 (RFC 5321 6.3).
"""

from __future__ import annotations

# Postfix's hopcount_limit: far more hops than any sane path, few enough to stop a loop fast.
MAX_HOPS = 50
_RECEIVED = b"received:"


class HopCounter:
    """Fed the message (CRLF lines, dot-unstuffed) in chunks; counts Received: headers until
    the empty line that ends the header section."""

    __slots__ = ("_in_header", "_partial", "hops")

    def __init__(self) -> None:
        self.hops = 0
        self._partial = b""
        self._in_header = True

    @property
    def exceeded(self) -> bool:
        return self.hops > MAX_HOPS

    def feed(self, data: bytes | memoryview) -> None:
        if not self._in_header:
            return
        lines = (self._partial + bytes(data)).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if line in (b"", b"\r"):
                self._in_header = False
                return
            if line[:len(_RECEIVED)].lower() == _RECEIVED:
                self.hops += 1
        # A header line longer than this is no header worth counting; stop holding it.
        if len(self._partial) > 64 * 1024:
            self._partial = b""
