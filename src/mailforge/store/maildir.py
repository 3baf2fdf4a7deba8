"""Maildir mailboxes under store/<domain>/<local>/Maildir, laid out as mutt and Dovecot expect."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

from ..durable import fsync_dir, unlink_quietly, write_new_file
from .api import MessageGone
from .filenames import base_of, claimed_name, crlf_size, sized_name
from .names import from_dir
from .uidindex import locked

T = TypeVar("T")

MAILDIR_SUBDIRS = ("tmp", "new", "cur")
# Reads of a message file whose size is not known, and of what is past its expected size.
READ_CHUNK = 256 * 1024


def mailbox_path(store_dir: Path, address: str) -> Path:
    """The Maildir of a normalised `local@domain` address.

    Addresses are validated before they reach here, but a quoted local part may still hold
    characters that mean something to a file system, so those are escaped.
    """
    local, _, domain = address.rpartition("@")
    return store_dir / _safe_name(domain) / _safe_name(local) / "Maildir"


def public_path(store_dir: Path, domain: str) -> Path:
    """The root of a domain's public folders (a Maildir++ tree without messages of its own)."""
    return store_dir / _safe_name(domain) / "public"


def _safe_name(part: str) -> str:
    if part in ("", ".", ".."):
        part = "%" + part.encode().hex()
    return "".join(f"%{ord(c):02x}" if c in "/\\%\0" else c for c in part)


def ensure_maildir(path: Path, mode: int = 0o700) -> Path:
    for sub in MAILDIR_SUBDIRS:
        os.makedirs(path / sub, mode=mode, exist_ok=True)
    return path


# --- delivery: tmp/ → sync → new/, with names Dovecot and mutt understand ---------------------

def subaddress_folder(maildir: Path, detail: str) -> Path:
    """Where mail to a subaddress goes (RFC 5233; Dovecot's lmtp_save_to_detail_mailbox): the
    folder named `detail`, its case ignored since local parts are matched lowercased (an exact
    spelling wins), or the INBOX when the mailbox has no such folder."""
    try:
        dir_names = os.listdir(maildir)
    except FileNotFoundError:
        return maildir
    matches = sorted((name != detail, dir_name) for dir_name in dir_names
                     if (name := from_dir(dir_name)) is not None
                     and name.casefold() == detail.casefold())
    for _, dir_name in matches:
        if (maildir / dir_name / "new").is_dir():
            return maildir / dir_name
    return maildir


def delivered_path(maildir: Path, base: str, size: int) -> Path:
    """Where a delivered message of `size` bytes lands: in new/, its size in its name."""
    return maildir / "new" / sized_name(base, size)


def delivered_bases(maildir: Path) -> set[str]:
    """The base names of the messages in new/ and cur/: what a delivery that may have been
    cut short looks for its filenames.message_base among."""
    bases = set()
    for sub in ("new", "cur"):
        try:
            with os.scandir(maildir / sub) as entries:
                bases.update(base_of(entry.name) for entry in entries)
        except FileNotFoundError:
            pass
    return bases


def ensure_maildir_durable(store_dir: Path, path: Path) -> Path:
    """`ensure_maildir`, and when that created anything, fsync every directory it touched:
    a message renamed into a new/ whose own directory entry is not durable could vanish."""
    if (path / "new").is_dir():
        return path
    ensure_maildir(path)
    for sub in MAILDIR_SUBDIRS:
        fsync_dir(path / sub)
    for parent in (path, *path.parents):
        fsync_dir(parent)
        if parent == store_dir:
            break
    return path


@dataclass
class TmpMessage:
    """A message written to tmp/ and still open, waiting for a (shared) sync before publish()."""

    maildir: Path
    base: str
    fd: int
    size: int

    @property
    def tmp_path(self) -> Path:
        return self.maildir / "tmp" / self.base

    @property
    def new_path(self) -> Path:
        return delivered_path(self.maildir, self.base, self.size)


def write_tmp(maildir: Path, base: str, chunks: Iterable[bytes]) -> TmpMessage:
    """Write a message into tmp/; the caller makes it durable, then calls `publish`."""
    path = maildir / "tmp" / base
    unlink_quietly(path)  # left by an attempt that died before its rename
    fd = write_new_file(path, chunks)
    return TmpMessage(maildir, base, fd, os.fstat(fd).st_size)


def publish(message: TmpMessage) -> Path:
    """Move a synced message into new/; the caller fsyncs new/ (once for many messages)."""
    os.rename(message.tmp_path, message.new_path)
    return message.new_path


# --- readers: new/ → cur/ ----------------------------------------------------------------------

def claim_new(folder: Path, name: str) -> str:
    """Move a message of a folder's new/ into its cur/ (a reader has seen it), with the size
    of its CRLF form recorded in its name so that no reader counts it again; its name in cur/.
    FileNotFoundError when another reader (POP3, an IMAP session, mutt) moved it first."""
    source = folder / "new" / name
    target = claimed_name(name, crlf_size(source.read_bytes()))
    os.rename(source, folder / "cur" / target)
    return target


# --- readers: a message whose name changes under them ------------------------------------------

def find_message(folder: Path, base: str) -> tuple[str, str] | None:
    """Where the message with this base name is now: (sub, name), or None. new/ before cur/:
    a message a reader moves from one to the other meanwhile is still seen."""
    for sub in ("new", "cur"):
        with os.scandir(folder / sub) as entries:
            for entry in entries:
                if base_of(entry.name) == base:
                    return sub, entry.name
    return None


def follow_renames(folder: Path, sub: str, name: str, use: Callable[[Path], T]) -> T:
    """`use(path)` on a message file of `folder`, found again by its base name when it was
    renamed meanwhile: flags live in the name, so a STORE in another session (or a reader
    moving it from new/ to cur/) renames it under us, as Dovecot's Maildir code expects
    (maildir_file_do). `use` raises FileNotFoundError for a name that is gone. The last look
    is under the folder's lock, which IMAP sessions hold while they rename and expunge (and
    which the caller must not hold), so MessageGone means the message really is gone."""
    try:
        return use(folder / sub / name)
    except FileNotFoundError:
        pass
    base = base_of(name)
    where = find_message(folder, base)
    if where is not None:
        try:
            return use(folder / where[0] / where[1])
        except FileNotFoundError:
            pass  # renamed once more since; or readdir missed it while it was being renamed
    with locked(folder):
        where = find_message(folder, base)
        if where is None:
            raise MessageGone("message expunged by another session")
        return use(folder / where[0] / where[1])


def open_message(folder: Path, sub: str, name: str) -> BinaryIO:
    """A message file open for reading, wherever renames took it (see follow_renames)."""
    try:
        return open(os.path.join(folder, sub, name), "rb")  # the usual case, built cheaply
    except FileNotFoundError:
        return follow_renames(folder, sub, name, _open_binary)


def _open_binary(path: Path) -> BinaryIO:
    return open(path, "rb")


def read_message(folder: Path, sub: str, name: str, size_hint: int = 0) -> bytes:
    """A message file's content, wherever renames took it (see follow_renames); `size_hint`:
    about its size (0: unknown). Read with os.open/os.read: Python's open() and read() add an
    fstat, an isatty ioctl, lseeks and a last empty read, each a syscall that costs more than
    reading a small message on our machines."""
    try:
        return _read_whole(os.path.join(folder, sub, name), size_hint)
    except FileNotFoundError:
        return follow_renames(folder, sub, name,
                              lambda path: _read_whole(path, size_hint))


def _read_whole(path: str | Path, size_hint: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        wanted = size_hint + 1 if size_hint > 0 else READ_CHUNK
        chunk = os.read(fd, wanted)
        if len(chunk) < wanted:
            return chunk  # a regular file's read comes back short only at its end
        chunks = [chunk]
        while chunk := os.read(fd, READ_CHUNK):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
