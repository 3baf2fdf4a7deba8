"""The "#shared/OWNER/folder" namespace: another mailbox's folders, of the same domain only.

OWNER is the owner's local part; the domain is always the one of the account that asks, so
no name can lead outside it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

from ..addresses import AddressError, normalize_address
from .api import INBOX, SEPARATOR, SHARED_PREFIX, InvalidName
from .maildir import mailbox_path


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


def owners(store_dir: Path, domain: str) -> Iterator[tuple[str, Path]]:
    """Every mailbox of the domain that has a Maildir: (address, Maildir)."""
    domain_dir = mailbox_path(store_dir, f"x@{domain}").parent.parent
    try:
        entries = os.listdir(domain_dir)
    except FileNotFoundError:
        return
    for entry in sorted(entries):
        address = f"{unquote(entry)}@{domain}"
        root = mailbox_path(store_dir, address)
        if root.is_dir():
            yield address, root
