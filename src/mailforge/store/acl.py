"""Access control lists (RFC 4314): which rights each identifier holds on a folder.

A folder's list lives in its own directory, in the `mailforge-acl` file ("identifier TAB
rights" lines under a version line), so that it moves with the folder on RENAME and goes with
it on DELETE. Identifiers are `anyone`, `authenticated` (the same people here: only the
domain's own mailboxes ever reach a folder) and canonical addresses of the folder's domain.
Negative rights ("-bob") are not offered: RFC 4314 lets a server refuse them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from ..addresses import AddressError, normalize_address
from ..durable import write_atomically
from .api import DELETED, SEEN, InvalidName, NotPermitted

# RFC 4314 2.1, in the order the RFC lists them (and so GETACL and MYRIGHTS write them).
ALL_RIGHTS = "lrswipkxtea"
# RFC 4314 2.1.1: RFC 2086's create and delete rights stand for the rights they were split into.
OBSOLETE_RIGHTS = {"c": "kx", "d": "te"}
ANYONE, AUTHENTICATED = "anyone", "authenticated"
ACL_FILE = "mailforge-acl"
_HEADER = "mailforge-acl 1\n"
# Public folders by the domain's setting: every mailbox reads them, a writer may do all but
# administer them (what "may change them" meant before ACLs).
PUBLIC_READER_RIGHTS = frozenset("lr")
PUBLIC_WRITER_RIGHTS = frozenset("lrswipkxte")
# RFC 4314 4: \Seen needs "s", \Deleted "t", every other flag "w" (STORE, and the flags an
# APPEND or COPY brings into a folder).
FLAG_RIGHTS = {SEEN: "s", DELETED: "t"}
KEYWORD_RIGHT = "w"

Acl = dict[str, frozenset[str]]


def parse_rights(text: str) -> frozenset[str]:
    """The rights of a rights string (obsolete c and d expanded); ValueError for a letter
    that is no right."""
    rights: set[str] = set()
    for letter in text:
        if letter in ALL_RIGHTS:
            rights.add(letter)
        elif letter in OBSOLETE_RIGHTS:
            rights.update(OBSOLETE_RIGHTS[letter])
        else:
            raise ValueError(f"{letter!r} is not a right (the rights are {ALL_RIGHTS})")
    return frozenset(rights)


def permitted_flags(flags: Iterable[str], rights: frozenset[str]) -> list[str]:
    """The flags the rights let a session set or clear; the rest are left silently."""
    return [flag for flag in flags if FLAG_RIGHTS.get(flag, KEYWORD_RIGHT) in rights]


def render(rights: Iterable[str]) -> str:
    held = set(rights)
    return "".join(letter for letter in ALL_RIGHTS if letter in held)


def changed(current: frozenset[str], modification: str) -> frozenset[str]:
    """SETACL's rights argument applied: "+xy" adds, "-xy" removes, "xy" replaces."""
    if modification[:1] == "+":
        return current | parse_rights(modification[1:])
    if modification[:1] == "-":
        return current - parse_rights(modification[1:])
    return parse_rights(modification)


def identifier(text: str, domain: str) -> str:
    """The canonical identifier: anyone, authenticated, or an address of `domain` (a bare
    local part is taken to be one). Rights never reach outside the folder's domain."""
    if text.startswith("-"):
        raise InvalidName("negative rights are not supported")
    if text.lower() in (ANYONE, AUTHENTICATED):
        return text.lower()
    try:
        address = normalize_address(text if "@" in text else f"{text}@{domain}")
    except AddressError:
        raise InvalidName(f"{text!r} is no identifier") from None
    if address.rpartition("@")[2] != domain:
        raise NotPermitted(f"{address} is not a mailbox of {domain}")
    return address


def rights_of(user: str, acl: Mapping[str, frozenset[str]]) -> frozenset[str]:
    """What `user` (a canonical address) may do under `acl`."""
    held: frozenset[str] = frozenset()
    for name in (ANYONE, AUTHENTICATED, user):
        held |= acl.get(name, frozenset())
    return held


def merged(*acls: Mapping[str, frozenset[str]]) -> Acl:
    """One list holding every identifier's rights of all of them."""
    out: Acl = {}
    for acl in acls:
        for name, rights in acl.items():
            out[name] = out.get(name, frozenset()) | rights
    return out


def public_defaults(writers: str, everyone: str) -> Acl:
    """The domain's public-folder setting as an ACL: `writers` is `everyone` or a
    comma-separated list of addresses (empty: nobody)."""
    if writers == everyone:
        return {ANYONE: PUBLIC_WRITER_RIGHTS}
    acl = {ANYONE: PUBLIC_READER_RIGHTS}
    acl.update((address, PUBLIC_WRITER_RIGHTS) for address in writers.split(",") if address)
    return acl


def load(directory: Path) -> Acl:
    """The list kept in a folder's directory (empty when it has none)."""
    try:
        text = (directory / ACL_FILE).read_text("utf-8")
    except FileNotFoundError:
        return {}
    acl: Acl = {}
    for line in text.removeprefix(_HEADER).splitlines():
        name, _, letters = line.partition("\t")
        if name:
            acl[name] = frozenset(letters) & frozenset(ALL_RIGHTS)
    return acl


def save(directory: Path, acl: Mapping[str, frozenset[str]]) -> None:
    lines = "".join(f"{name}\t{render(rights)}\n" for name, rights in sorted(acl.items()) if rights)
    write_atomically(directory / ACL_FILE, (_HEADER + lines).encode())


def set_entry(directory: Path, domain: str, owner: str | None, who: str, modification: str) -> None:
    """SETACL (and `mailforge acl set`): change one identifier's rights on the folder of
    `directory`, owned by `owner` (None: a public folder); ValueError for unknown rights."""
    who = _changeable(who, domain, owner)
    acl = load(directory)
    acl[who] = changed(acl.get(who, frozenset()), modification)
    save(directory, acl)


def delete_entry(directory: Path, domain: str, owner: str | None, who: str) -> None:
    """DELETEACL (and `mailforge acl delete`)."""
    who = _changeable(who, domain, owner)
    acl = load(directory)
    if acl.pop(who, None) is not None:
        save(directory, acl)


def _changeable(text: str, domain: str, owner: str | None) -> str:
    who = identifier(text, domain)
    if who == owner:
        raise InvalidName("the owner always holds every right on their folders")
    return who
