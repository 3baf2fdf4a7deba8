"""GETMETADATA and SETMETADATA (RFC 5464): annotations on folders and on the server ("").

    GETMETADATA [(MAXSIZE n DEPTH 0|1|infinity)] mailbox (entry ...) | entry
    SETMETADATA mailbox (entry value ...)            value: a string, a literal8, or NIL

Entries are kept by the store (store/metadata.py, `Mailbox.metadata`/`set_metadata`), which
also checks the rights (RFC 5464 3.3) and the limits; here are the names, depth and sizes.
"""

from __future__ import annotations

from ...store.api import Mailbox
from ...store.metadata import PRIVATE, SHARED, TooBig, TooMany
from . import wire
from .command_session import CommandSession
from .responses import Bad, Tagged, astring, atom, count, folder_name, no, ok

CAPABILITIES = ("METADATA", "METADATA-SERVER")
SERVER = ""  # the mailbox name that stands for the server
# RFC 5464 3.2: printable ASCII, no wildcards; slashes separate levels, none doubled or last.
_FORBIDDEN = frozenset("*%")
MAX_ENTRY_NAME = 1024
# How many entries one command may name: a bound on the work one command makes.
MAX_NAMED_ENTRIES = 100


def getmetadata(session: CommandSession, tag: str, args: list) -> Tagged:
    count(args, 2, 3, syntax="GETMETADATA [(options)] mailbox entries")
    maxsize, depth = _options(args[0]) if len(args) == 3 else (None, 0)
    name = _mailbox_name(args[-2])
    wanted = _entry_names(args[-1])
    stored = _mailbox(session).metadata(name)
    found: list[tuple[str, bytes | None]] = []
    for entry in wanted:
        if entry + "/" not in (PRIVATE, SHARED):  # the tops hold no value of their own
            found.append((entry, stored.get(entry)))  # named and absent: NIL (RFC 5464 4.2)
        found += sorted((key, value) for key, value in stored.items()
                        if _below(entry, key, depth))
    longest = 0
    if maxsize is not None:
        longest = max((len(v) for _, v in found if v is not None and len(v) > maxsize), default=0)
        found = [(key, value) for key, value in found if value is None or len(value) <= maxsize]
    if found:
        items = b" ".join(wire.astring(key) + b" " + wire.nstring(value) for key, value in found)
        session.untagged(b"* METADATA %s (%s)\r\n" % (_wire_mailbox(name), items))
    if longest:
        return ok("GETMETADATA completed", f"METADATA LONGENTRIES {longest}")
    return ok("GETMETADATA completed")


def setmetadata(session: CommandSession, tag: str, args: list) -> Tagged:
    count(args, 2, syntax="SETMETADATA mailbox (entry value ...)")
    name = _mailbox_name(args[0])
    pairs = args[1]
    if not isinstance(pairs, list) or not pairs or len(pairs) % 2:
        raise Bad("Syntax: SETMETADATA mailbox (entry value ...)")
    if len(pairs) // 2 > MAX_NAMED_ENTRIES:
        return no(f"At most {MAX_NAMED_ENTRIES} entries a command", "METADATA TOOMANY")
    changes: dict[str, bytes | None] = {}
    for entry, value in zip(pairs[::2], pairs[1::2]):
        changes[_entry_name(entry)] = _value(value)
    try:
        _mailbox(session).set_metadata(name, changes)
    except TooBig as exc:
        return no(str(exc), f"METADATA MAXSIZE {exc.limit}")
    except TooMany as exc:
        return no(str(exc), "METADATA TOOMANY")
    return ok("SETMETADATA completed")


def _options(arg: object) -> tuple[int | None, int | None]:
    """(MAXSIZE, DEPTH): DEPTH None is infinity."""
    if not isinstance(arg, list) or len(arg) % 2:
        raise Bad("GETMETADATA options are (MAXSIZE n DEPTH 0|1|infinity)")
    maxsize: int | None = None
    depth: int | None = 0
    for key, value in zip(arg[::2], arg[1::2]):
        option, text = atom(key).upper(), atom(value)
        if option == "MAXSIZE" and text.isdigit():
            maxsize = int(text)
        elif option == "DEPTH" and text.lower() in ("0", "1", "infinity"):
            depth = None if text.lower() == "infinity" else int(text)
        else:
            raise Bad(f"Unknown GETMETADATA option {option[:20]} {text[:20]}")
    return maxsize, depth


def _below(entry: str, key: str, depth: int | None) -> bool:
    """Whether `key` is a descendant of `entry` within `depth` levels (0: none)."""
    if depth == 0 or not key.startswith(entry + "/"):
        return False
    return depth is None or key[len(entry) + 1:].count("/") < depth


def _entry_names(arg: object) -> list[str]:
    items = arg if isinstance(arg, list) else [arg]
    if not items or len(items) > MAX_NAMED_ENTRIES:
        raise Bad(f"Name 1 to {MAX_NAMED_ENTRIES} entries")
    return list(dict.fromkeys(_entry_name(item, top_allowed=True) for item in items))


def _entry_name(arg: object, top_allowed: bool = False) -> str:
    """A valid entry name, lower-cased; `top_allowed`: /private or /shared alone (what
    GETMETADATA with DEPTH may start from, but no entry of its own)."""
    try:
        name = astring(arg).decode("ascii").lower()
    except UnicodeDecodeError:
        raise Bad("Entry names are ASCII") from None
    if top_allowed and name + "/" in (PRIVATE, SHARED):
        return name
    parts = name.split("/")
    if (not name.startswith((PRIVATE, SHARED)) or len(name) > MAX_ENTRY_NAME
            or _FORBIDDEN.intersection(name) or any(not p.isprintable() for p in parts)
            or "" in parts[1:] or len(parts) < 3):
        raise Bad(f"Invalid entry name {name[:40]!r}: /private/... or /shared/...")
    return name


def _value(arg: object) -> bytes | None:
    if isinstance(arg, str):
        if arg.upper() == "NIL":
            return None
        raise Bad("A value is a string, a literal or NIL")
    if not isinstance(arg, bytes):
        raise Bad("A value is a string, a literal or NIL")
    return bytes(arg)


def _mailbox_name(arg: object) -> str:
    return SERVER if astring(arg) == b"" else folder_name(arg)


def _wire_mailbox(name: str) -> bytes:
    return wire.astring(wire.encode_mailbox(name)) if name else b'""'


def _mailbox(session: CommandSession) -> Mailbox:
    assert session.mailbox is not None
    return session.mailbox
