"""Exceptions and result types shared by the extensions and their twins.

Defined in plain Python, once, so `except ParseError` and `isinstance(x, Command)` hold
whichever implementation raised or built them (as httptools' parser/errors.py does).
"""

from __future__ import annotations

from typing import NamedTuple


class ParseError(ValueError):
    """Input that cannot be tokenized; the message is fit for a reply text.

    The IMAP parser also says how far into the fed chunk the bad command went (`consumed`,
    so the caller can carry on with the next one) and the command's tag when it got that far.
    """

    def __init__(self, message: str, consumed: int = 0, tag: str | None = None) -> None:
        super().__init__(message)
        self.consumed = consumed
        self.tag = tag

    def located(self, consumed: int, tag: str | None) -> ParseError:
        """The same error, of the same class, placed in the fed chunk: the IMAP parser knows
        where the bad command ends only after its tokenizer raised."""
        return type(self)(self.args[0], consumed, tag)

    def __eq__(self, other: object) -> bool:
        return (type(other) is type(self) and self.args == other.args
                and (self.consumed, self.tag) == (other.consumed, other.tag))

    __hash__ = ValueError.__hash__


class LiteralTooBig(ParseError):
    """An IMAP literal over the parser's `max_literal`: the server answers BAD [TOOBIG]
    (RFC 7889) with its limit, not a syntax error."""


class Literal(bytes):
    """A string the client sent as a literal (`{n}`), not quoted: APPEND tells a message from
    a date-time, and CATENATE its TEXT from its URL, by this type."""

    __slots__ = ()


class Literal8(Literal):
    """A literal8 (`~{n}`, RFC 3516 4.3): it may hold NUL and any other octet."""

    __slots__ = ()


class Command(NamedTuple):
    """One complete IMAP command.

    Arguments: `str` is an atom (NIL, flags, sequence sets, fetch items), `bytes` a string
    (a `Literal` or `Literal8` when it came as one), `list` a parenthesised list of the same.
    """

    tag: str
    name: str  # upper-cased; "UID FETCH" and the like for UID commands
    args: list


class FetchAttribute(NamedTuple):
    """One FETCH data item: `BODY.PEEK[HEADER.FIELDS (From)]<0.100>` →
    name "BODY", peek True, section "HEADER.FIELDS", fields ("FROM",), partial (0, 100)."""

    name: str
    peek: bool = False
    section: str | None = None  # None: no [...]; "" for BODY[]; "1.2.MIME", "HEADER"...
    fields: tuple[str, ...] = ()
    partial: tuple[int, int] | None = None
