"""A POP3 maildrop (api.Maildrop): a locked snapshot of one Maildir, taken at login, changed
only at QUIT.

The snapshot is what RFC 1939 asks for: messages delivered while a session is open stay in
new/ and are neither shown to it nor touched by its QUIT. Taking it moves new/ into cur/ (as
Dovecot does, with the step IMAP takes too: maildir.claim_new), so the message keeps one
name, and one identity, for every later reader.

Sizes are of the CRLF form that POP3 sends, while the files hold LF line ends. That size is
computed once, when a message moves into cur/, and kept in its name (`,W=`, filenames.py), so
a login does not read every message again.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .api import MaildropBusy, MessageGone
from .filenames import arrival_order, base_of, crlf_size, field_of
from .folderdir import FolderDir
from .folderlog import LOG_NAME
from .maildir import claim_new, ensure_maildir, follow_renames, mailbox_path, open_message

# Beside new/ cur/ tmp/; Maildir readers ignore other files at the top.
LOCK_NAME = "mailforge-pop3.lock"
# RFC 1939 7: a unique-id is 1 to 70 characters in 0x21..0x7E.
MAX_UIDL = 70


@dataclass(frozen=True, slots=True)
class Message:
    uid: str   # the UIDL: the Maildir base name, the identity every reader sees
    name: str  # the file name in cur/
    size: int  # octets of the CRLF form


def crlf_form(data: bytes) -> bytes:
    """The message as POP3 sends it: every line end CRLF, whatever the file holds."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


class MaildirMaildrop:
    """Open with `MaildirMaildrop.open`; the lock is an flock on an open file, so it dies
    with the process, even on kill -9, and no stale lock file can keep a user out."""

    def __init__(self, maildir: Path, lock_fd: int, messages: list[Message]) -> None:
        self.maildir = maildir
        self.messages = messages
        self._lock_fd = lock_fd

    @classmethod
    def for_user(cls, store_dir: Path, address: str) -> MaildirMaildrop:
        """The maildrop of a canonical `local@domain` address (see `open`)."""
        return cls.open(mailbox_path(store_dir, address))

    @classmethod
    def open(cls, maildir: Path) -> MaildirMaildrop:
        """Lock and take the snapshot; MaildropBusy when another session has it."""
        ensure_maildir(maildir)
        fd = os.open(maildir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise MaildropBusy() from None
        try:
            _claim_new(maildir)
            messages = _list_cur(maildir)
        except BaseException:
            os.close(fd)
            raise
        return cls(maildir, fd, messages)

    def open_message(self, index: int) -> BinaryIO:
        """A message of the snapshot as stored (LF line ends), open for reading; an IMAP session
        may have renamed it meanwhile (flags changed), or expunged it (MessageGone)."""
        return open_message(self.maildir, "cur", self.messages[index].name)

    def read_start(self, index: int, size: int) -> tuple[bytes, BinaryIO | None]:
        """A message's first `size` bytes, and the file open at that point when there is more
        (else closed already): a message that fits costs the caller one call, not three."""
        message = self.open_message(index)
        try:
            data = message.read(size)
            # A regular file reads short only at its end; a full read may still be all of it.
            if len(data) < size:
                message.close()
                return data, None
        except BaseException:
            message.close()
            raise
        return data, message

    def delete(self, indexes: Iterable[int]) -> int:
        """Remove messages of the snapshot (the UPDATE state); how many could not be removed.
        An IMAP folder's change log, when there is one, is told (under the folder lock), so
        that IMAP sessions see them go without listing the folder."""
        chosen = [self.messages[index] for index in indexes]
        if (self.maildir / LOG_NAME).exists():
            try:
                FolderDir(self.maildir, self.maildir).remove_files([m.name for m in chosen])
                return 0
            except OSError:
                pass  # each message on its own then, counting those that fail
        failed = 0
        for message in chosen:
            try:
                _unlink_message(self.maildir, message)
            except OSError:
                failed += 1
        return failed

    def close(self) -> None:
        """Release the lock (closing the file does it)."""
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


def _claim_new(maildir: Path) -> None:
    """Move new/ into cur/, recording the CRLF size in the name."""
    with os.scandir(maildir / "new") as entries:
        names = [entry.name for entry in entries if not entry.name.startswith(".")]
    for name in names:
        try:
            claim_new(maildir, name)
        except FileNotFoundError:
            pass  # another reader moved it to cur/ first: the listing of cur/ finds it


def _list_cur(maildir: Path) -> list[Message]:
    messages = []
    with os.scandir(maildir / "cur") as entries:
        names = [entry.name for entry in entries if not entry.name.startswith(".")]
    for name in names:
        size = field_of(name, "W")
        if size is None:  # put there by another reader: count it now
            try:
                size = crlf_size((maildir / "cur" / name).read_bytes())
            except FileNotFoundError:
                continue
        messages.append(Message(_uidl(base_of(name)), name, size))
    # Oldest first, the same order in every session.
    messages.sort(key=lambda m: arrival_order(m.name))
    return messages


def _uidl(base: str) -> str:
    """The base name when it is a valid unique-id (ours always are); else a stable digest of it."""
    if 0 < len(base) <= MAX_UIDL and all(0x21 <= ord(c) <= 0x7E for c in base):
        return base
    return hashlib.sha1(base.encode("utf-8", "surrogateescape")).hexdigest()


def _unlink_message(maildir: Path, message: Message) -> None:
    try:
        follow_renames(maildir, "cur", message.name, os.unlink)
    except MessageGone:
        pass  # already removed by another reader: what QUIT asked for
