"""Mailbox quota (RFC 9208) kept the Maildir++ way: a `maildirsize` file in the Maildir root.

Its first line holds the limits ("<bytes>S,<count>C", 0 for none, as Courier and Dovecot
write it); each later line "<bytes> <count>" is a change, appended in one write(2) by whoever
added or removed messages (IMAP through folderdir.FolderDir, local delivery through `admit`).
The sum is the usage. The file is counted again from the message files (whose `,S=` names
carry their size) when it is missing, when its limits line is not the account's, when it has
grown past MAX_FILE_BYTES, when it is older than STALE_SECONDS, or when its sum is negative:
it is an estimate that heals itself, which is all Maildir++ asks of it.

Usage counts every folder of the mailbox (not the domain's public folders) in octets of the
files as stored (Maildir++'s S=); RFC 9208's STORAGE resource is that in units of 1024.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..auth.api import QuotaSource
from ..durable import unlink_quietly, write_atomically
from .api import Quota
from .filenames import field_of
from .maildir import mailbox_path
from .names import from_dir

MAILDIRSIZE = "maildirsize"
MAX_FILE_BYTES = 5120     # the Maildir++ spec's bound before the file is rewritten
STALE_SECONDS = 15 * 60   # Dovecot's MAILDIRSIZE_STALE_SECS


@dataclass(frozen=True, slots=True)
class Limits:
    bytes: int | None = None
    messages: int | None = None

    def header(self) -> str:
        return f"{self.bytes or 0}S,{self.messages or 0}C"

    def exceeded(self, used_bytes: int, used_messages: int) -> bool:
        return ((self.bytes is not None and used_bytes > self.bytes)
                or (self.messages is not None and used_messages > self.messages))


NO_LIMITS = Limits()


class MaildirSize:
    """The usage of one Maildir, as its maildirsize file tells it (recounted when needed)."""

    def __init__(self, maildir: Path, limits: Limits) -> None:
        self.maildir = maildir
        self.limits = limits
        self.path = maildir / MAILDIRSIZE

    def quota(self) -> Quota:
        used_bytes, used_messages = self.usage()
        return Quota(used_bytes, used_messages, self.limits.bytes, self.limits.messages)

    def would_exceed(self, more_bytes: int, more_messages: int = 1) -> bool:
        if self.limits.bytes is None and self.limits.messages is None:
            return False
        used_bytes, used_messages = self.usage()
        return self.limits.exceeded(used_bytes + more_bytes, used_messages + more_messages)

    def usage(self) -> tuple[int, int]:
        totals = self._read()
        if totals is None:
            totals = self.recount()
        return totals

    def record(self, delta_bytes: int, delta_messages: int) -> None:
        """Append one change (the folderdir.UsageHook); a missing file is made by the next read."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            os.write(fd, f"{delta_bytes} {delta_messages}\n".encode())
        finally:
            os.close(fd)

    def recount(self) -> tuple[int, int]:
        used_bytes, used_messages = count_messages(self.maildir)
        write_atomically(self.path, f"{self.limits.header()}\n{used_bytes} {used_messages}\n"
                         .encode())
        return used_bytes, used_messages

    def _read(self) -> tuple[int, int] | None:
        """The sum of the file, or None when it must be counted again."""
        try:
            st = os.stat(self.path)
            if st.st_size > MAX_FILE_BYTES or time.time() - st.st_mtime > STALE_SECONDS:
                return None
            lines = self.path.read_text("ascii").splitlines()
        except (FileNotFoundError, UnicodeDecodeError):
            return None
        if not lines or lines[0] != self.limits.header():
            return None
        used_bytes = used_messages = 0
        for line in lines[1:]:
            fields = line.split()
            if len(fields) != 2 or not all(f.lstrip("-").isdigit() for f in fields):
                return None
            used_bytes += int(fields[0])
            used_messages += int(fields[1])
        if used_bytes < 0 or used_messages < 0:
            return None
        return used_bytes, used_messages

    def forget(self) -> None:
        """Drop the file so that the next read counts again (after moving whole folders)."""
        unlink_quietly(self.path)


def count_messages(maildir: Path) -> tuple[int, int]:
    """Octets and number of the message files of a Maildir and its Maildir++ folders."""
    folders = [maildir] + [maildir / name for name in os.listdir(maildir)
                           if from_dir(name) is not None]
    used_bytes = used_messages = 0
    for folder in folders:
        for sub in ("new", "cur"):
            try:
                with os.scandir(folder / sub) as entries:
                    for entry in entries:
                        if entry.name.startswith("."):
                            continue
                        size = field_of(entry.name, "S")
                        if size is None:
                            try:
                                size = entry.stat().st_size
                            except FileNotFoundError:
                                continue
                        used_bytes += size
                        used_messages += 1
            except (FileNotFoundError, NotADirectoryError):
                continue
    return used_bytes, used_messages


def mailbox_full(store_dir: Path, quotas: QuotaSource, address: str, size: int = 1) -> bool:
    """For SMTP's RCPT: is the mailbox of ADDR over quota (with `size` more octets)?"""
    return would_exceed(store_dir, address, Limits(*quotas.quota_limits(address)), size)


def would_exceed(store_dir: Path, address: str, limits: Limits, size: int) -> bool:
    """For SMTP and delivery: would a message of `size` octets take ADDR over its quota?
    Cheap: a stat and a read of a small file, unless the file needs counting again."""
    if limits.bytes is None and limits.messages is None:
        return False
    maildir = mailbox_path(store_dir, address)
    if not maildir.is_dir():
        return limits.exceeded(size, 1)
    return MaildirSize(maildir, limits).would_exceed(size)


def admit(store_dir: Path, quotas: QuotaSource, address: str, size: int) -> bool:
    """For local delivery: False when the message would go over quota; else True, and its
    size is counted (an estimate if the delivery then fails: the file heals, see above)."""
    limits = Limits(*quotas.quota_limits(address))
    if would_exceed(store_dir, address, limits, size):
        return False
    if limits.bytes is not None or limits.messages is not None:
        MaildirSize(mailbox_path(store_dir, address), limits).record(size, 1)
    return True
