"""The change log of one folder, `mailforge-log`: how IMAP sessions learn what others changed.

Design (Dovecot's dovecot.index + dovecot.index.log, for a Maildir++ folder)

Files, in the folder's root beside cur/ new/ tmp/:
  mailforge-uidlist        the snapshot (uidindex.py): UIDVALIDITY, UIDNEXT, the first UID
                           no session has claimed \\Recent for, the highest MODSEQ, and per UID
                           its file (sub and name), internal date, CRLF size and MODSEQ; plus
                           the generation of the log that continues it.
  mailforge-log            this file: the changes made since that snapshot.
  mailforge-uidlist.lock   the folder lock (an flock) every writer of the two holds.

Record format: a frame is `<u32 payload length><u32 CRC32 of the payload>` (little endian)
and the payload, a msgpack array `[kind, modseq, fields...]`. A frame that is cut short or
whose CRC does not match ends the log for readers (a torn tail after a crash, or a writer
still writing); the next writer, under the lock, truncates it away. Kinds:
  HEADER  generation uidvalidity       first frame of every log: which snapshot it continues
  ADD     uid sub name date crlf_size  a message got a UID (its base name is that of `name`)
  FLAGS   uid sub name                 its file was renamed (flags changed, or new/ → cur/)
  EXPUNGE uid                          its file is gone
  RECENT  first_recent                 a read-write session claimed \\Recent below this UID
  CUR     cur_mtime_ns [1]             after this change set, cur/ had this mtime and the log
                                       described it completely (see the fallback below); 1:
                                       a full listing taken after that mtime's tick vouched
MODSEQ goes up by one with every ADD, FLAGS and EXPUNGE (HEADER, RECENT and CUR carry the
current one: claiming \\Recent changes no message's metadata, RFC 7162 3.1.1; so does the
FLAGS record of a claimed message moved from new/ into cur/ with its flags as they were, which
carries that message's own MODSEQ); the snapshot keeps the highest, so it never goes
backwards. RECENT records written before that carry one more than the record before them,
which a reader takes in like any other MODSEQ.

Writers: every change by mailforge (IMAP STORE, EXPUNGE, APPEND, COPY/MOVE into a folder,
new/ claimed into cur/, UIDs given to files found by a scan; POP3's deletions at QUIT) is made
under the folder lock: catch up with the log (cutting away a torn tail), scan first when cur/'s
mtime is not the one the log gives (so that a CUR record only ever vouches for a cur/ the
writer knew completely), change the files, then append the change set's records, closed by a
CUR record when cur/'s mtime moved, in ONE write(). Readers take no lock: they pread the log
from their offset.

Reading: a session's refresh stats `mailforge-log` (the same inode and size: nothing new),
new/ and cur/; when nothing changed that is all, no directory is listed and no file opened.
What a session hands out (flags, INTERNALDATE, RFC822.SIZE, UID) comes from the index alone:
flags from the file name, date and size from the ADD record. The sessions of one worker
process share one in-memory state per folder (folderstate.py, a registry keyed by the
folder's path, guarded by a mutex since handlers run in a thread pool, kept a while after the
last session lets go): the log is replayed once per process, not once per session, the
MessageInfos built once per process, and the fallback below looks once per process.

Durability: a change set that hands out UIDs (ADD) is fdatasync'ed before the client hears of
them; APPEND costs an fsync of the message file, one of cur/ (its rename) and one fdatasync of
the log, and never a rewrite of the whole index. FLAGS, EXPUNGE and RECENT records are not
synced: the files are the truth, and losing them in a crash only makes the next scan find
the same changes again.

Rotation: a change set that would take the log past LOG_MAX_RECORDS records or
LOG_MAX_BYTES bytes goes into a new snapshot instead (generation g+1, written durably and
renamed into place first), then a new log whose HEADER names g+1 is renamed over the old one.
A crash between the two renames leaves a log older than the snapshot, which the next writer
replaces. A reader whose open log is no longer the file at `mailforge-log` (another inode)
reloads the snapshot and reads the new log from its start.

The fallback: tools that do not write the log (mutt, a Maildir copied in by hand) change cur/
behind its back. A full scan of new/ and cur/ (folderdir.FolderDir) reconciles the index with
the files, under the lock, writing the differences as records, when cur/'s mtime differs from
the one the last CUR record gives, and otherwise at most once per MTIME_SLACK_NS while that
mtime is too recent to trust (a change in the same clock tick leaves it unmoved). A listing
taken once that mtime is old enough is final: its CUR record says so (and the snapshot keeps
it), and then no process lists cur/ until its mtime moves, so a new session opening a big
folder reads the snapshot and the log and no directory. Deliveries only add files to new/:
when new/'s mtime moved, new/ alone is listed and its files taken in.

Damage: a lost or undecodable log, or one whose generation matches no snapshot, is replaced
by a new generation, logged; its lost records can have handed out at most LOG_MAX_RECORDS
UIDs and MODSEQs, so UIDNEXT and MODSEQ move up that much and UIDVALIDITY stays. A lost
snapshot is rebuilt as before (uidindex.py, repair.py): a new UIDVALIDITY.
"""

from __future__ import annotations

import enum
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import msgpack

from ..speedups import write_all

LOG_NAME = "mailforge-log"
# Past either limit the next change set starts a new generation. Records bound how many UIDs
# a lost log can have handed out; bytes bound what a session opening the folder replays.
LOG_MAX_RECORDS = 5000
LOG_MAX_BYTES = 256 * 1024
# A longer length prefix is damage, not a record: one change set holds at most a few
# thousand records of a few dozen bytes each.
MAX_FRAME_BYTES = 16 * 1024 * 1024
_FRAME = struct.Struct("<II")
_READ_CHUNK = 64 * 1024
_HEADER_BYTES = 64  # more than a header frame takes

Record = list[Any]  # [kind, modseq, fields...]


class Kind(enum.IntEnum):
    HEADER = 0
    ADD = 1
    FLAGS = 2
    EXPUNGE = 3
    RECENT = 4
    CUR = 5


def encode(records: Iterable[Record]) -> bytes:
    frames = []
    for record in records:
        payload = msgpack.packb(record)
        frames.append(_FRAME.pack(len(payload), zlib.crc32(payload)))
        frames.append(payload)
    return b"".join(frames)


def decode(data: bytes | memoryview) -> tuple[list[Record], int]:
    """The whole records at the start of `data`, and how many bytes they take; a torn or
    damaged frame ends them."""
    view = memoryview(data)
    records, used = [], 0
    while len(view) - used >= _FRAME.size:
        length, crc = _FRAME.unpack_from(view, used)
        end = used + _FRAME.size + length
        if length > MAX_FRAME_BYTES or end > len(view):
            break
        payload = view[used + _FRAME.size:end]
        if zlib.crc32(payload) != crc:
            break
        try:
            record = msgpack.unpackb(payload)
        except (ValueError, msgpack.UnpackException):
            break
        if not _well_formed(record):
            break
        records.append(record)
        used = end
    return records, used


def _well_formed(record: object) -> bool:
    return (isinstance(record, list) and len(record) >= 2 and isinstance(record[0], int)
            and record[0] in Kind._value2member_map_ and isinstance(record[1], int))


class LogFile:
    """An open `mailforge-log`, read from where the last read ended."""

    def __init__(self, path: str, fd: int, inode: int, generation: int, uidvalidity: int,
                 offset: int, records: int) -> None:
        self.path = path  # a string: is_current runs before every command of every session
        self.fd = fd
        self.inode = inode
        self.generation = generation
        self.uidvalidity = uidvalidity
        self.offset = offset    # the end of the last whole record read
        self.records = records  # how many records up to offset (the header counts)

    @classmethod
    def open(cls, folder: Path) -> LogFile | None:
        """The log opened after its header; None when it is missing or has no valid header."""
        path = os.path.join(folder, LOG_NAME)
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            start = os.pread(fd, _HEADER_BYTES, 0)
            head, _ = decode(start)
            if not head or head[0][0] != Kind.HEADER or len(head[0]) != 4:
                os.close(fd)
                return None
            _, _, generation, uidvalidity = head[0]
            used = _FRAME.size + _FRAME.unpack_from(start)[0]
            return cls(path, fd, os.fstat(fd).st_ino, generation, uidvalidity, used, 1)
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def create(cls, folder: Path, generation: int, uidvalidity: int) -> LogFile:
        """A new log holding only its header, synced and renamed over `mailforge-log` (the
        caller holds the lock and fsyncs the folder)."""
        tmp = folder / f"{LOG_NAME}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC,
                     0o600)
        try:
            header = encode([[Kind.HEADER, 0, generation, uidvalidity]])
            write_all(fd, header)
            os.fdatasync(fd)
            path = os.path.join(folder, LOG_NAME)
            os.rename(tmp, path)
            return cls(path, fd, os.fstat(fd).st_ino, generation, uidvalidity, len(header), 1)
        except BaseException:
            os.close(fd)
            raise

    def is_current(self) -> bool:
        """Whether this is still the folder's log, and nothing was appended past `offset`."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        return st.st_ino == self.inode and st.st_size == self.offset

    def replaced(self) -> bool:
        try:
            return os.stat(self.path).st_ino != self.inode
        except FileNotFoundError:
            return True

    def read_new(self) -> Iterator[Record]:
        """The whole records appended since the last read (a torn tail is left for later)."""
        pending = b""
        while True:
            chunk = os.pread(self.fd, _READ_CHUNK, self.offset + len(pending))
            if not chunk:
                break
            pending += chunk
            records, used = decode(pending)
            self.offset += used
            self.records += len(records)
            pending = pending[used:]
            yield from records
            if len(pending) > MAX_FRAME_BYTES:
                break

    def torn_bytes(self) -> int:
        """Bytes past the last whole record (call after read_new, under the lock)."""
        return os.fstat(self.fd).st_size - self.offset

    def truncate_torn_tail(self) -> None:
        os.ftruncate(self.fd, self.offset)

    def append(self, records: list[Record], durable: bool) -> None:
        """One change set in one write(); with `durable`, on disk when this returns."""
        data = encode(records)
        write_all(self.fd, data)
        self.offset += len(data)
        self.records += len(records)
        if durable:
            os.fdatasync(self.fd)

    def would_overflow(self, records: int) -> bool:
        return self.records + records > LOG_MAX_RECORDS or self.offset > LOG_MAX_BYTES

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
