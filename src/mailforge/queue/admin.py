"""What `mailforge queue ...` does to the queue and badmail/, safely beside running workers.

An entry is changed or removed only under the flock that delivery workers take on its .env,
so nothing is pulled from under a delivery in progress; a rewritten .env gets a new inode,
which is how workers notice a `flush` or `retry` of an entry they had put off.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..durable import fsync_dir, unlink_quietly
from ..errors import UsageError
from .envelope import Envelope, EnvelopeError, decode, encode
from .segment import SEALED_SUFFIX, SegmentError, read_records
from .spool import ACTIVE, ENV_SUFFIX, MSG_SUFFIX, new_id, write_entry_file

REASON_SUFFIX = ".reason"
DELIVERY_HEADERS = (b"Return-Path:", b"Delivered-To:")

DELIVERING, DEFERRED, WAITING, SEGMENT = "delivering", "deferred", "waiting", "in segment"


class UnknownIdError(UsageError):
    """No queue entry or badmail message by that id."""


class BusyError(UsageError):
    """A worker is delivering the entry right now."""


@dataclass
class QueuedEntry:
    envelope: Envelope
    state: str  # DELIVERING, DEFERRED (a retry is scheduled), WAITING (due) or SEGMENT
    msg_path: Path | None  # None for a record of a segment


@dataclass
class Badmail:
    id: str  # the stem of its files
    sender: str
    recipient: str
    reason: str
    queue_id: str
    msg_path: Path


class QueueAdmin:
    def __init__(self, queue_dir: Path, badmail_dir: Path,
                 clock=time.time) -> None:
        self.queue_dir = Path(queue_dir)
        self.active = self.queue_dir / ACTIVE
        self.badmail_dir = Path(badmail_dir)
        self.clock = clock

    # ---- the queue ------------------------------------------------------------------

    def entries(self) -> list[QueuedEntry]:
        """Every queued message, oldest first; corrupt ones are left to the workers."""
        found = []
        for name in self._names(self.active):
            if name.endswith(ENV_SUFFIX):
                entry = self._entry(name[:-len(ENV_SUFFIX)])
                if entry is not None:
                    found.append(entry)
            elif name.endswith(SEALED_SUFFIX):
                found += self._segment_entries(self.active / name)
        return sorted(found, key=lambda e: (e.envelope.received_at, e.envelope.id))

    def find(self, entry_id: str) -> QueuedEntry:
        entry = self._entry(entry_id) if _plain_id(entry_id) else None
        if entry is None:
            entry = next((e for e in self.entries() if e.envelope.id == entry_id), None)
        if entry is None:
            raise UnknownIdError(f"no queued message with id {entry_id!r} (see `queue list`)")
        return entry

    def message(self, entry: QueuedEntry) -> bytes:
        if entry.msg_path is None:
            return next(body for env, body in self._segment_records()
                        if env.id == entry.envelope.id)
        return entry.msg_path.read_bytes()

    def flush(self) -> int:
        """Make every deferred entry due now; how many were."""
        count = 0
        for entry in self.entries():
            if entry.state == DEFERRED and self._reschedule(entry.envelope.id, quiet=True):
                count += 1
        if count:
            fsync_dir(self.active)
        return count

    def retry(self, entry_id: str) -> None:
        entry = self.find(entry_id)
        if entry.state in (DEFERRED, WAITING):
            self._reschedule(entry.envelope.id, quiet=False)
            fsync_dir(self.active)

    def delete(self, entry_id: str) -> QueuedEntry:
        entry = self.find(entry_id)
        if entry.state == SEGMENT:
            raise BusyError(f"{entry_id} is in a queue segment being delivered; "
                            "try again in a moment")
        with self._locked(entry_id):
            os.unlink(self.active / (entry_id + ENV_SUFFIX))  # the commit point, as in delivery
            unlink_quietly(self.active / (entry_id + MSG_SUFFIX))
        fsync_dir(self.active)
        return entry

    def _reschedule(self, entry_id: str, quiet: bool) -> bool:
        try:
            with self._locked(entry_id) as env:
                env.next_attempt = 0.0
                write_entry_file(self.queue_dir, entry_id, ENV_SUFFIX, encode(env))
        except (BusyError, UnknownIdError):
            if quiet:  # delivered or being delivered since we listed it: nothing to flush
                return False
            raise
        return True

    @contextmanager
    def _locked(self, entry_id: str) -> Iterator[Envelope]:
        path = self.active / (entry_id + ENV_SUFFIX)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise UnknownIdError(f"no queued message with id {entry_id!r} (see `queue list`)") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise BusyError(f"{entry_id} is being delivered right now; try again in a moment") from None
            if os.stat(path).st_ino != os.fstat(fd).st_ino:
                raise BusyError(f"{entry_id} changed while we looked; try again")
            with open(fd, "rb", closefd=False) as fh:
                yield decode(fh.read())
        except (FileNotFoundError, EnvelopeError) as exc:
            raise UnknownIdError(f"queued message {entry_id!r} is gone or unreadable: {exc}") from None
        finally:
            os.close(fd)

    def _entry(self, entry_id: str) -> QueuedEntry | None:
        path = self.active / (entry_id + ENV_SUFFIX)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            with open(fd, "rb", closefd=False) as fh:
                env = decode(fh.read())
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                state = DEFERRED if env.next_attempt > self.clock() else WAITING
            except BlockingIOError:
                state = DELIVERING
        except EnvelopeError:
            return None
        finally:
            os.close(fd)
        return QueuedEntry(env, state, self.active / (entry_id + MSG_SUFFIX))

    def _segment_records(self) -> Iterator[tuple[Envelope, bytes]]:
        for name in self._names(self.active):
            if name.endswith(SEALED_SUFFIX):
                try:
                    yield from read_records(self.active / name)
                except (FileNotFoundError, SegmentError):
                    continue

    def _segment_entries(self, path: Path) -> list[QueuedEntry]:
        try:
            return [QueuedEntry(env, SEGMENT, None) for env, _ in read_records(path)]
        except (FileNotFoundError, SegmentError):
            return []  # delivered meanwhile, or damaged: the workers deal with that

    @staticmethod
    def _names(directory: Path) -> list[str]:
        try:
            return sorted(os.listdir(directory))
        except FileNotFoundError:
            return []

    # ---- badmail/ -------------------------------------------------------------------

    def badmail(self) -> list[Badmail]:
        found = []
        for name in self._names(self.badmail_dir):
            if name.endswith(REASON_SUFFIX):
                item = self._badmail_item(name[:-len(REASON_SUFFIX)])
                if item is not None:
                    found.append(item)
        return found

    def requeue(self, badmail_id: str) -> str:
        """Queue a badmail message again, for its recipient; the new queue id."""
        item = self._badmail_item(badmail_id) if _plain_id(badmail_id) else None
        if item is None:
            raise UnknownIdError(f"no badmail message with id {badmail_id!r} (see `queue badmail list`)")
        message = _without_delivery_headers(item.msg_path.read_bytes())
        queue_id = new_id()
        prefix = f"Return-Path: <{item.sender}>\nDelivered-To: {item.recipient}\n".encode()
        env = Envelope(id=queue_id, sender=item.sender, recipients=[item.recipient],
                       received_at=self.clock(), client_ip="", helo="", size=len(prefix) + len(message),
                       prefix_size=len(prefix), delivered_to=item.recipient,
                       smtputf8=not (item.sender + item.recipient).isascii(),
                       body_8bit=not message.isascii())
        write_entry_file(self.queue_dir, queue_id, MSG_SUFFIX, prefix + message)
        write_entry_file(self.queue_dir, queue_id, ENV_SUFFIX, encode(env))
        fsync_dir(self.active)
        os.unlink(self.badmail_dir / (badmail_id + REASON_SUFFIX))
        unlink_quietly(item.msg_path)
        fsync_dir(self.badmail_dir)
        return queue_id

    def _badmail_item(self, stem: str) -> Badmail | None:
        try:
            note = (self.badmail_dir / (stem + REASON_SUFFIX)).read_text(errors="replace")
        except FileNotFoundError:
            return None
        fields = dict(line.partition(": ")[::2] for line in note.splitlines() if ": " in line)
        return Badmail(stem, fields.get("sender", "<>").strip("<>"), fields.get("recipient", ""),
                       fields.get("reason", ""), fields.get("id", ""),
                       self.badmail_dir / (stem + MSG_SUFFIX))


def _plain_id(text: str) -> bool:
    """An id is a file name stem: no path tricks through the command line."""
    return bool(text) and "/" not in text and text not in (".", "..") and "\0" not in text


def _without_delivery_headers(message: bytes) -> bytes:
    while message.startswith(DELIVERY_HEADERS):
        message = message.split(b"\n", 1)[1] if b"\n" in message else b""
    return message
