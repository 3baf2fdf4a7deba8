"""IMAP COMPRESS=DEFLATE (RFC 4978): raw deflate (no zlib header, wbits -15) both ways.

The connection (transport.py) hands what arrives to `take_in` and asks for the plain octets
in bounded pieces (`inflate`), so that a small input that inflates hugely is let out only as
fast as the session reads it: the rest waits compressed, and reading from the socket stops
meanwhile (flow control as without compression). Each batch of output is deflated and
ended with Z_SYNC_FLUSH, so the client can read it all without waiting for more.
"""

from __future__ import annotations

import zlib

# Raw deflate as RFC 4978 3 requires (RFC 1951, no zlib or gzip wrapper).
RAW_DEFLATE = -15
# Dovecot's default level: the gain of 9 costs much CPU on large FETCHes for little more.
LEVEL = 6


class DeflateError(Exception):
    """The client's compressed stream is corrupt: the session cannot go on."""


class Deflate:
    def __init__(self) -> None:
        self._inflater = zlib.decompressobj(RAW_DEFLATE)
        self._deflater = zlib.compressobj(LEVEL, zlib.DEFLATED, RAW_DEFLATE)
        self._pending = b""  # compressed input not inflated yet

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def take_in(self, data: bytes) -> None:
        self._pending = self._pending + data if self._pending else data

    def inflate(self, limit: int) -> bytes:
        """At most `limit` octets of plain input; what is left stays `pending`."""
        try:
            plain = self._inflater.decompress(self._pending, limit)
        except zlib.error as exc:
            raise DeflateError(str(exc)) from None
        self._pending = self._inflater.unconsumed_tail
        return plain

    def deflate(self, data: bytes) -> bytes:
        """One batch of output, flushed so that it can be read at once."""
        return self._deflater.compress(data) + self._deflater.flush(zlib.Z_SYNC_FLUSH)
