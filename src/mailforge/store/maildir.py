"""Maildir mailboxes under store/<domain>/<local>/Maildir, laid out as mutt and Dovecot expect."""

from __future__ import annotations

import os
from pathlib import Path

MAILDIR_SUBDIRS = ("tmp", "new", "cur")


def mailbox_path(store_dir: Path, address: str) -> Path:
    """The Maildir of a normalised `local@domain` address.

    Addresses are validated before they reach here, but a quoted local part may still hold
    characters that mean something to a file system, so those are escaped.
    """
    local, _, domain = address.rpartition("@")
    return store_dir / _safe_name(domain) / _safe_name(local) / "Maildir"


def _safe_name(part: str) -> str:
    if part in ("", ".", ".."):
        part = "%" + part.encode().hex()
    return "".join(f"%{ord(c):02x}" if c in "/\\%\0" else c for c in part)


def ensure_maildir(path: Path, mode: int = 0o700) -> Path:
    for sub in MAILDIR_SUBDIRS:
        os.makedirs(path / sub, mode=mode, exist_ok=True)
    return path
