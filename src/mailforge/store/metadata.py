"""Annotations (IMAP METADATA, RFC 5464) kept on disk, beside what they annotate.

A folder's entries live in its own directory, in `mailforge-metadata`, as its access control
list does (acl.py): RENAME moves them with the folder, DELETE removes them with it, and a
folder shared with other mailboxes keeps every reader's entries in one place. The file holds
the shared entries and each user's private ones. Server entries are per account, in
`mailforge-server-metadata` at the Maildir's root (as Dovecot keeps them, in the user's own
storage): `/shared/` server entries are then those the account shows to whoever shares it.
The accounts DB is not used: it would have to learn of every RENAME and DELETE, and the
store is already where per-folder state lives.

File: msgpack `{"v": 1, "shared": {entry: value}, "private": {address: {entry: value}}}`
with entry names lower-cased (they are case-insensitive, RFC 5464 3.2) and values as octets;
written whole to a temporary name, fsynced and renamed (durable.write_atomically), under an
flock on the directory so that two sessions' changes both land.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import msgpack

from ..durable import write_atomically
from .api import StoreError

FOLDER_FILE = "mailforge-metadata"
SERVER_FILE = "mailforge-server-metadata"
FORMAT_VERSION = 1
SHARED, PRIVATE = "/shared/", "/private/"
# RFC 5464 4.3 lets a server bound what it keeps. A value up to 64 KiB holds any comment or
# client setting seen in practice; 200 entries and 1 MiB per folder (and per user on a
# shared folder, and for the server entries) keep one account from filling the disk.
MAX_VALUE_SIZE = 64 * 1024
MAX_ENTRIES = 200
MAX_TOTAL_SIZE = 1024 * 1024


class TooBig(StoreError):
    """A value over MAX_VALUE_SIZE (SETMETADATA answers NO [METADATA MAXSIZE n])."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"a metadata value may hold at most {limit} octets")
        self.limit = limit


class TooMany(StoreError):
    """Over MAX_ENTRIES or MAX_TOTAL_SIZE (NO [METADATA TOOMANY])."""


Entries = dict[str, bytes]


def load(path: Path, user: str) -> Entries:
    """The entries of the file at `path` that `user` sees: the shared ones and theirs, with
    their full names ("/shared/comment", "/private/comment")."""
    data = _read(path)
    entries = {SHARED + name: value for name, value in data["shared"].items()}
    entries.update((PRIVATE + name, value)
                   for name, value in data["private"].get(user, {}).items())
    return entries


def update(path: Path, user: str, changes: Mapping[str, bytes | None]) -> None:
    """Set (bytes) or remove (None) entries named in full; all or none. TooBig, TooMany."""
    for value in changes.values():
        if value is not None and len(value) > MAX_VALUE_SIZE:
            raise TooBig(MAX_VALUE_SIZE)
    with _locked(path.parent):
        data = _read(path)
        shared: dict[str, bytes] = data["shared"]
        private: dict[str, bytes] = data["private"].setdefault(user, {})
        for name, value in changes.items():
            scope, key = (shared, name[len(SHARED):]) if name.startswith(SHARED) \
                else (private, name[len(PRIVATE):])
            if value is None:
                scope.pop(key, None)
            else:
                scope[key] = value
        for scope in (shared, private):
            if len(scope) > MAX_ENTRIES or sum(map(len, scope.values())) > MAX_TOTAL_SIZE:
                raise TooMany(f"at most {MAX_ENTRIES} entries and {MAX_TOTAL_SIZE} octets")
        if not private:
            del data["private"][user]
        write_atomically(path, msgpack.packb(data, use_bin_type=True))


def _read(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {"v": FORMAT_VERSION, "shared": {}, "private": {}}
    try:
        data = msgpack.unpackb(raw, raw=False, strict_map_key=True)
        if data.get("v") != FORMAT_VERSION:
            raise ValueError(f"format version {data.get('v')!r}")
    except (ValueError, TypeError, AttributeError, msgpack.UnpackException) as exc:
        raise StoreError(f"the metadata of this folder cannot be read ({exc})") from None
    return data


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
