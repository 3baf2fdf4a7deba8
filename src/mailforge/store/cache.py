"""A folder's summary cache: what FETCH of ENVELOPE, BODYSTRUCTURE and header sections needs of
each message, so that asking again opens no message file (Dovecot's dovecot.index.cache).

The file (`mailforge-cache` in the folder's root, beside cur/ new/ tmp/) is a run of records,
one per message, keyed by its Maildir base name (flags change a file's name, never its base).
Any session appends a record with one write() on an O_APPEND descriptor and takes no lock. Each
record carries its length and a CRC32, so a torn tail (a crash mid-write) or a record that two
sessions wrote for one message at once is harmless: readers skip what does not check out, and
the first valid record of a base wins (any two hold the same bytes: a message never changes).
A reader remembers where the records it has read lie, and reads on from where it stopped only
when asked for a base it does not know yet.

When dead records (of expunged messages) outnumber the live messages, the next writer rewrites
the file with only the live ones, under the folder's index lock, atomically; readers notice the
new file by its inode. The cache is only ever a shortcut: a missing, unreadable or damaged file
is an empty cache, and fills again.
"""

from __future__ import annotations

import itertools
import logging
import os
import struct
import threading
import zlib
from collections.abc import Callable, Collection
from pathlib import Path

import msgpack

from ..durable import write_atomically
from .api import MessageSummary, Summarizer
from .uidindex import locked

log = logging.getLogger("mailforge.store")

CACHE_NAME = "mailforge-cache"
# A record: "MFC" and the summarizer's version (one byte), the payload's length and its CRC32;
# the payload is the base's length and the base (UTF-8), then msgpack of the summary's fields.
MAGIC = b"MFC"
_HEAD = struct.Struct(">4sII")
_BASE_LENGTH = struct.Struct(">H")
# A record longer than this is not written, and a length beyond it read back is garbage, not a
# record still being written: readers skip it rather than wait for it to complete.
MAX_RECORD = 1024 * 1024
# Octets read per pread while catching up with the file: room for a whole record wherever it
# starts, so a chunk that ends before the file does always gets the scan forward.
SCAN_CHUNK = 2 * MAX_RECORD
# The file is rewritten only once dead records outnumber the live messages, and this many at
# the least: rewriting a small file often would cost more than the dead records do.
COMPACT_MIN_DEAD = 256

# Decoded summaries kept in memory for every session of the process, the newest this many: a
# message's summary never changes and its base name is never reused, so a hit needs neither a
# pread nor msgpack, whichever session read it first.
MEMORY_ENTRIES = 20_000

LiveBases = Callable[[], Collection[str]]


class _Remembered:
    """The process's decoded summaries by (folder, base), oldest dropped first past the bound.
    The folder is its path as a str: a Path hashes through Python code at every lookup."""

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self._summaries: dict[tuple[str, str], MessageSummary] = {}
        self._lock = threading.Lock()

    def get(self, folder: str, base: str) -> MessageSummary | None:
        return self._summaries.get((folder, base))

    def keep(self, folder: str, base: str, summary: MessageSummary) -> None:
        with self._lock:
            self._summaries[(folder, base)] = summary
            excess = len(self._summaries) - self.bound
            if excess > 0:  # a tenth at a time: eviction stays rare
                for key in list(itertools.islice(self._summaries, excess + self.bound // 10)):
                    del self._summaries[key]


_remembered = _Remembered(MEMORY_ENTRIES)


class SummaryCache:
    """One session's reader and writer of a folder's cache file (FolderDir owns it)."""

    def __init__(self, folder: Path, summarizer: Summarizer | None) -> None:
        self.folder = folder
        self._key = str(folder)  # the folder's key in _remembered
        self.path = folder / CACHE_NAME
        self._summarizer = summarizer
        self._magic = record_magic(summarizer.version) if summarizer is not None else b""
        self._fd: int | None = None
        self._inode = 0
        self._scanned = 0  # the records before this offset are in _spans
        self._spans: dict[str, tuple[int, int]] = {}  # base -> (offset, length) of its record
        self._check_at = COMPACT_MIN_DEAD  # how many records before looking for dead ones

    def get(self, base: str, look: bool = True) -> MessageSummary | None:
        """The message's summary, or None when the cache does not hold it (yet). `look`: read
        what was appended to the file since the last look when the base is not known (a
        command asking for many messages looks once, not once per message it misses)."""
        if self._summarizer is None:
            return None
        known = _remembered.get(self._key, base)
        if known is not None:
            return known
        try:
            span = self._spans.get(base)
            if span is None and look:
                self._catch_up()
                span = self._spans.get(base)
            return None if span is None else self._load(base, *span)
        except OSError as exc:
            self._given_up(exc)
            return None

    def learn(self, base: str, data: bytes, live: LiveBases) -> None:
        """Keep the summary of a message just read (its CRLF bytes), unless the cache holds it
        already; `live` gives the bases of the folder's messages, should the file need
        compacting."""
        if self._summarizer is None or base in self._spans:
            return
        try:
            self._catch_up()
            if base in self._spans:
                return
            summary = self._summarizer.summarize(data)
            record = None if summary is None else encode_record(self._magic, base, summary)
            if record is None or len(record) - _HEAD.size > MAX_RECORD:
                return
            if self._append(base, record):
                _remembered.keep(self._key, base, summary)
            self._compact_if_worthwhile(live)
        except OSError as exc:
            self._given_up(exc)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._inode, self._scanned, self._spans = None, 0, 0, {}

    # -- reading

    def _catch_up(self) -> None:
        """Read the records appended since the last look; start over when the file was
        replaced (compacted) or removed."""
        try:
            inode = os.stat(self.path).st_ino
        except FileNotFoundError:
            self.close()
            return
        if self._fd is None or inode != self._inode:
            self.close()
            self._open(create=False)
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        while self._scanned < size:
            chunk = os.pread(self._fd, min(SCAN_CHUNK, size - self._scanned), self._scanned)
            found, used = scan_records(chunk, self._magic)
            for base, offset, length in found:
                self._spans.setdefault(base, (self._scanned + offset, length))
            if used == 0:
                break  # a record not all written yet (or torn at the very end): wait for it
            self._scanned += used

    def _load(self, base: str, offset: int, length: int) -> MessageSummary | None:
        assert self._fd is not None
        record = decode_record(os.pread(self._fd, length, offset), self._magic)
        if record is None or record[0] != base:  # cannot happen short of a bad disk
            del self._spans[base]
            return None
        _remembered.keep(self._key, base, record[1])
        return record[1]

    # -- writing

    def _open(self, create: bool) -> None:
        flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        self._fd = os.open(self.path, flags, 0o600)
        self._inode = os.fstat(self._fd).st_ino

    def _append(self, base: str, record: bytes) -> bool:
        """Whether the whole record was written (a short write is a torn record)."""
        if self._fd is None:
            self._open(create=True)
        assert self._fd is not None
        if os.write(self._fd, record) != len(record):
            return False
        # O_APPEND left the descriptor's offset just past what it wrote.
        end = os.lseek(self._fd, 0, os.SEEK_CUR)
        self._spans[base] = (end - len(record), len(record))
        return True

    def _compact_if_worthwhile(self, live: LiveBases) -> None:
        if len(self._spans) <= self._check_at:
            return
        alive = set(live())
        records = len(self._spans)
        if len(self._spans.keys() - alive) > max(COMPACT_MIN_DEAD, len(alive)):
            records = self._compact(alive)
        # Looked at again only after as many records more as there are live messages, so
        # that building `alive` costs little per record.
        self._check_at = records + max(COMPACT_MIN_DEAD, len(alive))

    def _compact(self, alive: set[str]) -> int:
        """Rewrite the file with the first valid record of each live base, as it is now (other
        sessions may have appended); how many records it keeps. Records appended to the old
        file after it was read are lost: they are written again when next needed."""
        with locked(self.folder):
            try:
                data = self.path.read_bytes()
            except FileNotFoundError:
                return 0
            kept: dict[str, bytes] = {}
            for base, offset, length in scan_records(data, self._magic)[0]:
                if base in alive and base not in kept:
                    kept[base] = data[offset:offset + length]
            write_atomically(self.path, b"".join(kept.values()), durable=False)
        log.debug("summary cache of %s compacted: %d records kept", self.folder, len(kept))
        self.close()
        return len(kept)

    def _given_up(self, exc: OSError) -> None:
        """The cache could not be read or written (the folder deleted, a full disk…): it is
        empty for now, and the caller reads the message."""
        log.debug("summary cache of %s unusable: %s", self.folder, exc)
        self.close()


def record_magic(version: int) -> bytes:
    return MAGIC + bytes((version % 256,))


def encode_record(magic: bytes, base: str, summary: MessageSummary) -> bytes:
    name = base.encode()
    payload = b"".join((_BASE_LENGTH.pack(len(name)), name, msgpack.packb(
        (summary.header, summary.envelope, summary.body, summary.bodystructure))))
    return _HEAD.pack(magic, len(payload), zlib.crc32(payload)) + payload


def decode_record(record: bytes, magic: bytes) -> tuple[str, MessageSummary] | None:
    """A whole record → (base, summary); None when it is damaged or of another version."""
    if len(record) < _HEAD.size:
        return None
    head, length, crc = _HEAD.unpack_from(record)
    payload = memoryview(record)[_HEAD.size:]
    if head != magic or length != len(payload) or zlib.crc32(payload) != crc:
        return None
    try:
        (name_length,) = _BASE_LENGTH.unpack_from(payload)
        base = bytes(payload[2:2 + name_length]).decode()
        fields = msgpack.unpackb(payload[2 + name_length:])
        return base, MessageSummary(*fields)
    except (ValueError, TypeError, struct.error, msgpack.UnpackException):
        return None  # a valid CRC over a payload we did not write: nothing to trust


def scan_records(data: bytes, magic: bytes) -> tuple[list[tuple[str, int, int]], int]:
    """The valid records of this version in `data` as (base, offset, length), and how many
    octets were dealt with: all of them but a record that runs past the end (it may still be
    being written) or a head too short to tell. Garbage is skipped up to the next MAGIC."""
    found: list[tuple[str, int, int]] = []
    position = 0
    while True:
        start = data.find(MAGIC, position)
        if start < 0:
            # The last octets may be the beginning of a MAGIC whose rest is not there yet.
            return found, max(position, len(data) - len(MAGIC) + 1)
        if len(data) - start < _HEAD.size:
            return found, start
        length = _HEAD.unpack_from(data, start)[1]
        end = start + _HEAD.size + length
        if length > MAX_RECORD:
            position = start + 1
            continue
        if end > len(data):
            return found, start
        record = decode_record(data[start:end], magic)
        if record is not None:
            found.append((record[0], start, end - start))
            position = end
        elif data.startswith(MAGIC, start) and _crc_holds(data, start, end):
            position = end  # a sound record of another version
        else:
            position = start + 1


def _crc_holds(data: bytes, start: int, end: int) -> bool:
    crc = _HEAD.unpack_from(data, start)[2]
    return zlib.crc32(memoryview(data)[start + _HEAD.size:end]) == crc
