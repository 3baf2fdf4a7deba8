"""The "#shared/OWNER/folder" namespace: another mailbox's folders, of the same domain only.

OWNER is the owner's local part; the domain is always the one of the account that asks, so
no name can lead outside it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path

from ..addresses import AddressError, normalize_address
from . import acl
from .api import INBOX, SEPARATOR, SHARED_PREFIX, InvalidName
from .maildir import mailbox_path

# In a domain's directory of the store: the mailboxes that shared a folder, one per line.
SHARERS_FILE = "mailforge-sharers"


def split(name: str, domain: str) -> tuple[str, str]:
    """The owner's address and the folder's name in the owner's tree, of a (normalised)
    "#shared/OWNER/folder" name."""
    local, _, inner = name[len(SHARED_PREFIX):].partition(SEPARATOR)
    try:
        owner = normalize_address(f"{local}@{domain}")
    except AddressError:
        raise InvalidName(f"invalid folder name {name!r}") from None
    return owner, INBOX if inner.upper() == INBOX else inner


def folder_name(owner: str, inner: str) -> str:
    return f"{SHARED_PREFIX}{owner.rpartition('@')[0]}{SEPARATOR}{inner}"


def set_entry(store_dir: Path, directory: Path, domain: str, owner: str | None, who: str,
              modification: str) -> None:
    """SETACL and `mailforge acl set` (acl.set_entry), remembering a personal folder's owner
    among the domain's sharers, so that LIST looks into their mailboxes alone."""
    acl.set_entry(directory, domain, owner, who, modification)
    if owner is not None:
        # One short O_APPEND write: atomic, so writers need no lock; readers drop duplicates.
        fd = os.open(_sharers_file(store_dir, domain), os.O_WRONLY | os.O_APPEND | os.O_CREAT
                     | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, f"{owner}\n".encode())
        finally:
            os.close(fd)


def sharers(store_dir: Path, domain: str) -> Iterator[tuple[str, Path]]:
    """Every mailbox of the domain that ever shared a folder and has a Maildir: (address,
    Maildir). A mailbox that took its rights away again stays listed: it costs a look, no more."""
    try:
        text = _sharers_file(store_dir, domain).read_text("utf-8")
    except FileNotFoundError:
        return
    for address in sorted(set(text.split())):
        root = mailbox_path(store_dir, address)
        if address.endswith(f"@{domain}") and root.is_dir():
            yield address, root


@functools.lru_cache(maxsize=256)
def _sharers_file(store_dir: Path, domain: str) -> Path:
    # Asked at every LIST of every account of the domain.
    return mailbox_path(store_dir, f"x@{domain}").parent.parent / SHARERS_FILE
