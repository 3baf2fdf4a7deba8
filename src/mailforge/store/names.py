"""Folder names ↔ Maildir++ directory names, and the special-use folders (RFC 6154).

Maildir++ keeps every folder as one directory beside new/ cur/ tmp/ of the INBOX, named by
the folder's path with "." as separator: "Sent/2024" is `.Sent.2024`. A "." (or another
character that would break that scheme) inside a folder's own name is escaped the way Dovecot's
listescape does, as "\\" and two lowercase hex digits: "v1.2" is `.v1\\2e2`. Names are kept in
UTF-8 on disk, as Dovecot's `:UTF-8` layout option does (mutt shows them as they are).
"""

from __future__ import annotations

import unicodedata

from .api import INBOX, PUBLIC_PREFIX, SEPARATOR, SHARED_PREFIX, InvalidName

DIR_SEPARATOR = "."
ESCAPE = "\\"
# One directory entry holds the whole path: file systems stop names at 255 bytes.
MAX_DIR_NAME_BYTES = 255
# Characters that cannot stand for themselves in a directory name component.
_ESCAPED = frozenset(".\\/")

# RFC 6154 attributes for the folders every mailbox gets (created on first open).
SPECIAL_USE = {
    "Sent": "\\Sent",
    "Drafts": "\\Drafts",
    "Trash": "\\Trash",
    "Junk": "\\Junk",
    "Archive": "\\Archive",
}


def normalize(name: str) -> str:
    """The canonical form of a folder name: INBOX in capitals (it is case-insensitive, RFC 3501
    5.1), every other component as given; InvalidName for what no folder can be called."""
    if not name or name.startswith(SEPARATOR) or name.endswith(SEPARATOR):
        raise InvalidName(f"invalid folder name {name!r}")
    parts = name.split(SEPARATOR)
    if parts[0].upper() == INBOX:
        parts[0] = INBOX
    for part in parts:
        if not part or any(unicodedata.category(c) == "Cc" for c in part):
            raise InvalidName(f"invalid folder name {name!r}")
    return SEPARATOR.join(parts)


def is_public(name: str) -> bool:
    return name.startswith(PUBLIC_PREFIX)


def is_shared(name: str) -> bool:
    return name.startswith(SHARED_PREFIX)


def is_namespace(name: str) -> bool:
    """A level above every folder of its tree: "#public", "#shared" or "#shared/OWNER"."""
    return (name + SEPARATOR in (PUBLIC_PREFIX, SHARED_PREFIX)
            or (is_shared(name) and SEPARATOR not in name[len(SHARED_PREFIX):]))


def to_dir(name: str) -> str:
    """The directory of a (normalised, non-INBOX) folder, relative to the Maildir root."""
    dir_name = "".join(DIR_SEPARATOR + _escape(part) for part in name.split(SEPARATOR))
    if len(dir_name.encode("utf-8", "surrogateescape")) > MAX_DIR_NAME_BYTES:
        raise InvalidName(f"folder name too long: {name!r}")
    return dir_name


def from_dir(dir_name: str) -> str | None:
    """The folder a directory holds, or None when it is not a Maildir++ folder directory."""
    if not dir_name.startswith(DIR_SEPARATOR) or dir_name in (".", ".."):
        return None
    parts = dir_name[1:].split(DIR_SEPARATOR)
    if not all(parts):  # ".a..b" is not something we made: leave it alone rather than guess
        return None
    try:
        return SEPARATOR.join(_unescape(part) for part in parts)
    except ValueError:
        return None


def parents(name: str) -> list[str]:
    """The folders above `name`, outermost first: "a/b/c" → ["a", "a/b"]."""
    parts = name.split(SEPARATOR)
    return [SEPARATOR.join(parts[:i]) for i in range(1, len(parts))]


def _escape(part: str) -> str:
    return "".join(f"{ESCAPE}{ord(c):02x}" if c in _ESCAPED else c for c in part)


def _unescape(part: str) -> str:
    out, i = [], 0
    while i < len(part):
        if part[i] == ESCAPE:
            code = part[i + 1:i + 3]
            if len(code) != 2:
                raise ValueError(part)
            out.append(chr(int(code, 16)))
            i += 3
        else:
            out.append(part[i])
            i += 1
    return "".join(out)

