"""The UID index of one folder: UIDVALIDITY, UIDNEXT and Maildir base name → UID, in msgpack.

The file (`mailforge-uidlist` in the folder's root, beside cur/ new/ tmp/) is replaced
atomically (temp name, fsync, rename, fsync the directory), and only by a holder of the flock
on `mailforge-uidlist.lock`: every session, and `store repair`, takes that lock to hand out
UIDs, so two of them never give one UID to two messages nor one message two UIDs. Readers of
the Maildir that do not take it (POP3, delivery, mutt) only add files to new/, move them to cur/
or rename them for flags, none of which changes a base name, so they cannot confuse the index.

The Maildir files are the truth; the index only remembers which UID each base name got. A
lost index costs UIDs (a new UIDVALIDITY, see repair.py), never messages or flags.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgpack

from ..durable import write_atomically

INDEX_NAME = "mailforge-uidlist"
LOCK_NAME = "mailforge-uidlist.lock"
# At the root of a folder tree (a Maildir, or a domain's public tree): the last UIDVALIDITY
# handed out there, so a folder deleted and made again within one second still gets a new one
# (as Dovecot's dovecot-uidvalidity file does).
UIDVALIDITY_NAME = "mailforge-uidvalidity"
FORMAT_VERSION = 1
MAX_UID = 2**32 - 1  # UIDs and UIDVALIDITY are 32-bit (RFC 3501 2.3.1.1)


class IndexCorrupt(Exception):
    """The index file cannot be trusted as a whole (the message says why)."""


@dataclass
class UidIndex:
    uidvalidity: int
    uidnext: int = 1
    # The lowest UID no read-write session has claimed yet: \Recent goes to the session that
    # moves this past a message (Dovecot's dovecot-uidlist keeps the same number).
    first_recent: int = 1
    uids: dict[str, int] = field(default_factory=dict)

    def assign(self, base: str) -> int:
        if self.uidnext > MAX_UID:
            raise IndexCorrupt("UIDs exhausted; `store repair` gives the folder a new UIDVALIDITY")
        uid = self.uids[base] = self.uidnext
        self.uidnext += 1
        return uid


def encode(index: UidIndex) -> bytes:
    return msgpack.packb({"version": FORMAT_VERSION, "uidvalidity": index.uidvalidity,
                          "uidnext": index.uidnext, "first_recent": index.first_recent,
                          "uids": index.uids})


def decode(data: bytes) -> UidIndex:
    """The index, or IndexCorrupt when any part of it is wrong (see `salvage`)."""
    index, problems = _decode(data)
    if problems:
        raise IndexCorrupt("; ".join(problems))
    return index


def salvage(data: bytes) -> tuple[UidIndex | None, list[str]]:
    """What can be kept of a damaged index (None when nothing can), and what was wrong."""
    try:
        return _decode(data)
    except IndexCorrupt as exc:
        return None, [str(exc)]


def _decode(data: bytes) -> tuple[UidIndex, list[str]]:
    """Decode, dropping the entries that are wrong; raises only when the header is unusable."""
    try:
        raw = msgpack.unpackb(data, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:  # TypeError: a list as key
        raise IndexCorrupt(f"undecodable ({exc.__class__.__name__})") from None
    if not isinstance(raw, dict) or raw.get("version") != FORMAT_VERSION:
        raise IndexCorrupt("not a version 1 index")
    uidvalidity, uidnext = raw.get("uidvalidity"), raw.get("uidnext")
    if not _is_uid(uidvalidity):
        raise IndexCorrupt("bad UIDVALIDITY")
    if not (_is_uid(uidnext) or uidnext == MAX_UID + 1):
        # Without it, a UID handed out before could be handed out again: no salvage.
        raise IndexCorrupt("bad UIDNEXT")
    problems = []
    first_recent = raw.get("first_recent")
    if not isinstance(first_recent, int) or not 1 <= first_recent <= uidnext:
        problems.append("bad first recent UID")
        first_recent = uidnext
    uids, taken = {}, set()
    entries = raw.get("uids")
    if not isinstance(entries, dict):
        problems.append("no UID table")
        entries = {}
    for base, uid in entries.items():
        if not isinstance(base, str) or not _is_uid(uid) or uid in taken:
            problems.append(f"bad entry {base!r}: {uid!r}")
            continue
        uids[base] = uid
        taken.add(uid)
    highest = max(taken, default=0)
    if highest >= uidnext:
        problems.append(f"UIDNEXT {uidnext} not above UID {highest}")
        uidnext = first_recent = highest + 1
    return UidIndex(uidvalidity, uidnext, first_recent, uids), problems


def _is_uid(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_UID


def read(folder: Path) -> bytes | None:
    try:
        return (folder / INDEX_NAME).read_bytes()
    except FileNotFoundError:
        return None


def save(folder: Path, index: UidIndex, durable: bool = True) -> None:
    """`durable=False` for a change a crash may undo: the old index coming back is right too
    (only UIDs of removed messages dropped, or \\Recent claimed; UIDNEXT did not move)."""
    write_atomically(folder / INDEX_NAME, encode(index), durable)


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold the folder's index lock (an flock: it dies with its process, even on kill -9)."""
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def next_uidvalidity(root: Path) -> int:
    """A UIDVALIDITY never handed out before under `root`: the time, or one more than the last."""
    fd = os.open(root / UIDVALIDITY_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        last = os.read(fd, 32).strip()
        previous = int(last) if last.isdigit() else 0
        value = max(int(time.time()), previous + 1)
        if value > MAX_UID:
            value = 1
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, b"%d\n" % value)
        os.fsync(fd)
        return value
    finally:
        os.close(fd)
