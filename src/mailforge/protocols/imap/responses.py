"""What IMAP command handlers return, and the argument checks they share.

A handler returns a `Tagged` (the completion: OK, NO or BAD with an optional response code)
after adding untagged responses to the session; it raises `Bad` for arguments it cannot use,
and lets the store's errors through: the dispatcher turns those into `NO [code]` once, here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ...durable import out_of_space
from ...store.api import (
    INBOX,
    SYSTEM_FLAGS,
    FolderExists,
    FolderNotFound,
    InvalidName,
    MessageGone,
    NotPermitted,
    OverQuota,
    StoreError,
    UnsupportedUse,
)
from ..session import Action
from . import wire


class Status(enum.StrEnum):
    """How a command completes (RFC 3501 7.1), or the "+" that asks for more of it."""

    OK = "OK"
    NO = "NO"
    BAD = "BAD"
    CONTINUE = "+"  # a continuation request (AUTHENTICATE's challenges)


@dataclass(frozen=True, slots=True)
class Tagged:
    status: Status
    text: str
    code: str = ""       # a response code without its brackets: "READ-WRITE", "APPENDUID 1 2"
    action: Action = Action.NONE

    def render(self, tag: str) -> bytes:
        if self.status is Status.CONTINUE:
            return f"+ {self.text}\r\n".encode()
        code = f"[{self.code}] " if self.code else ""
        return f"{tag} {self.status} {code}{self.text}\r\n".encode()


def ok(text: str, code: str = "", action: Action = Action.NONE) -> Tagged:
    return Tagged(Status.OK, text, code, action)


def no(text: str, code: str = "") -> Tagged:
    return Tagged(Status.NO, text, code)


def bad(text: str, code: str = "") -> Tagged:
    return Tagged(Status.BAD, text, code)


def continuation(text: str) -> Tagged:
    return Tagged(Status.CONTINUE, text)


class Bad(Exception):
    """Arguments a command cannot use: answered BAD with this text."""


def store_error(exc: StoreError, trycreate: bool) -> Tagged:
    """The NO for a store error (RFC 5530 codes); `trycreate`: the command writes into a folder
    the client may create first (APPEND, COPY, MOVE: RFC 3501 6.3.11)."""
    if isinstance(exc, FolderNotFound):
        return no(str(exc) or "No such mailbox", "TRYCREATE" if trycreate else "NONEXISTENT")
    code = next((code for kind, code in STORE_ERROR_CODES if isinstance(exc, kind)), "")
    return no(str(exc) or "Operation failed", code)


def accounts_unavailable() -> Tagged:
    """The accounts database could not answer a login: a trouble that passes, not a failed
    login (RFC 5530 [UNAVAILABLE])."""
    return no("Cannot check the login now, try again later", "UNAVAILABLE")


def disk_error(exc: OSError) -> Tagged:
    """The NO for a store that failed under a command. A full disk is no quota of the user's
    ([OVERQUOTA] is for that, RFC 5530) but a server trouble that passes: [UNAVAILABLE]."""
    if out_of_space(exc):
        return no("Not enough disk space, try again later", "UNAVAILABLE")
    return no("The store cannot be read now, try again", "UNAVAILABLE")


STORE_ERROR_CODES = (
    (FolderExists, "ALREADYEXISTS"),
    (InvalidName, "CANNOT"),
    (MessageGone, "EXPUNGEISSUED"),  # COPY/MOVE of a message another session expunged
    (NotPermitted, "NOPERM"),
    (OverQuota, "OVERQUOTA"),
    (UnsupportedUse, "USEATTR"),  # RFC 6154 CREATE-SPECIAL-USE
)


# --- arguments as the parser gives them: str atoms, bytes strings, lists ------------------------

def count(args: list, low: int, high: int | None = None, syntax: str = "") -> None:
    high = low if high is None else high
    if not low <= len(args) <= high:
        raise Bad(f"Syntax: {syntax}" if syntax else "Wrong number of arguments")


def astring(arg: object) -> bytes:
    """An astring argument (atom, quoted or literal) as octets."""
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode("ascii")
    raise Bad("Expected a string, got a list")


def text(arg: object) -> str:
    """An astring as UTF-8 text (user names, passwords, search strings)."""
    try:
        return astring(arg).decode("utf-8")
    except UnicodeDecodeError:
        raise Bad("String is not valid UTF-8") from None


def atom(arg: object) -> str:
    if not isinstance(arg, str):
        raise Bad("Expected an atom")
    return arg


def folder_name(arg: object, utf8: bool = False) -> str:
    """A mailbox argument: modified UTF-7 on the wire, or UTF-8 once the session enabled
    UTF8=ACCEPT or IMAP4rev2 (RFC 6855 3); the store's Unicode name here. "INBOX" in any case
    is the inbox (RFC 3501 5.1), and a trailing separator is dropped. A valid astring that is
    no name in the session's encoding names no folder: NO (as Dovecot answers), not BAD."""
    try:
        name = wire.decode_name(astring(arg), utf8)
    except (UnicodeDecodeError, ValueError):
        kind = "UTF-8" if utf8 else "modified UTF-7"
        raise InvalidName(f"Mailbox name is not valid {kind}") from None
    if name.upper() == INBOX or name.upper().startswith(INBOX + "/"):
        name = INBOX + name[len(INBOX):]
    return name


def flag_list(arg: object) -> list[str]:
    """A flag, or a parenthesised list of them; \\Recent is the server's to set."""
    items = arg if isinstance(arg, list) else [arg]
    flags = []
    for item in items:
        if not isinstance(item, str) or not item or any(c in item for c in "%*]"):
            raise Bad("Invalid flag")
        if item.startswith("\\"):
            item = SYSTEM_FLAG_NAMES.get(item.upper())
            if item is None:
                raise Bad("Unknown system flag")
        flags.append(item)
    return flags


SYSTEM_FLAG_NAMES = {name.upper(): name for name in SYSTEM_FLAGS}
