"""APPEND's CATENATE (RFC 4469): a message built from literal TEXT pieces and IMAP URLs (RFC
5092) to messages, or parts of them, in the same user's folders.

URLs are taken in their absolute-path form, which names this server and this user:
`/mailbox[;UIDVALIDITY=n]/;UID=n[/;SECTION=s][/;PARTIAL=start[.count]]`. One that names
no message is a BADURL, and the message is stored only if every URL resolves.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from ...speedups import Literal, ParseError, parse_fetch_attributes
from ...store.api import Mailbox, StoreError
from . import wire
from .fetch import section_content
from .mime import parse_message
from .responses import Bad, astring, folder_name

CATENATE_SYNTAX = "CATENATE (TEXT literal / URL url ...)"
_URL = re.compile(r"/(?P<mailbox>[^;]+?)(?:;UIDVALIDITY=(?P<uidvalidity>[1-9][0-9]{0,9}))?"
                  r"/;UID=(?P<uid>[1-9][0-9]{0,9})(?:/;SECTION=(?P<section>[^/]*))?"
                  r"(?:/;PARTIAL=(?P<start>[0-9]{1,10})(?:\.(?P<count>[1-9][0-9]{0,9}))?)?",
                  re.IGNORECASE)
# A piece of the message: a TEXT literal's octets, or a URL to resolve (as its text).
Piece = bytes | str


class BadUrl(Exception):
    """A URL that is no message of this user's: NO [BADURL url] (RFC 4469 6)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


class TooBig(Exception):
    """The message would pass the APPEND limit: NO [TOOBIG] (RFC 4469 6)."""


def pieces(arg: object) -> list[Piece]:
    """The cat-parts of `CATENATE (...)`: TEXT with a literal, URL with an astring."""
    if not isinstance(arg, list) or not arg or len(arg) % 2:
        raise Bad(f"Syntax: {CATENATE_SYNTAX}")
    found: list[Piece] = []
    for kind, value in zip(arg[::2], arg[1::2]):
        kind = kind.upper() if isinstance(kind, str) else ""
        if kind == "TEXT" and isinstance(value, Literal):
            found.append(value)
        elif kind == "URL" and not isinstance(value, list):
            found.append(astring(value).decode("utf-8", "replace"))
        else:
            raise Bad(f"Syntax: {CATENATE_SYNTAX}")
    return found


def join(mailbox: Mailbox, message: list[Piece], limit: int) -> bytes:
    """The message the pieces make, every URL resolved in `mailbox`."""
    chunks, size = [], 0
    for piece in message:
        chunk = piece if isinstance(piece, bytes) else resolve(mailbox, piece)
        size += len(chunk)
        if size > limit:
            raise TooBig
        chunks.append(chunk)
    # Always a join: the store's compiled writer takes exact bytes, not the parser's Literal.
    return b"".join(chunks)


def resolve(mailbox: Mailbox, url: str) -> bytes:
    """The octets an IMAP URL names (RFC 5092 6), in the CRLF form that FETCH sends."""
    match = _URL.fullmatch(url)
    if match is None:
        raise BadUrl(url)
    try:
        section = parse_fetch_attributes(f"BODY[{unquote(match['section'] or '')}]")[0]
        name = folder_name(wire.encode_mailbox(unquote(match["mailbox"])))
        folder = mailbox.select(name, read_only=True)
    except (ParseError, StoreError):
        raise BadUrl(url) from None
    try:
        uid = int(match["uid"])
        wanted_validity = match["uidvalidity"]
        if ((wanted_validity and int(wanted_validity) != folder.uidvalidity)
                or not any(info.uid == uid for info in folder.messages())):
            raise BadUrl(url)
        data = folder.read(uid)
    except StoreError:
        raise BadUrl(url) from None
    finally:
        folder.close()
    content = section_content(parse_message(data), section.section or "", section.fields)
    if content is None:
        raise BadUrl(url)
    if match["start"] is not None:
        start = int(match["start"])
        content = content[start:start + int(match["count"])] if match["count"] else content[start:]
    return content
