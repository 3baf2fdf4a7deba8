"""What SEARCH and SORT give back when the client asks with RETURN (...): the ESEARCH response
(RFC 4731, and RFC 5267 for SORT) and the saved result, `$` (RFC 5182 SEARCHRES).
RFC 5267's PARTIAL m:n reports only the m-th to n-th numbers of the result; its UPDATE asks
for the result to be kept up to date (context.py), and alone reports nothing at first.

The numbers come in the command's result order: ascending for SEARCH, the sort order for SORT.
MIN and MAX are the first and the last of them (for SEARCH the lowest and the highest; for
SORT, RFC 5267 3.2, the first and the last message sorted), ALL is a sequence set that keeps
that order.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from .wire import ImapSyntaxError


# Where a sequence or UID set goes: the messages the last RETURN (SAVE) found (RFC 5182 2.1).
SAVED_RESULT = "$"


class Return(enum.StrEnum):
    MIN = "MIN"
    MAX = "MAX"
    ALL = "ALL"
    COUNT = "COUNT"
    SAVE = "SAVE"
    PARTIAL = "PARTIAL"
    UPDATE = "UPDATE"


# RFC 4731 3.1: the order the result items go in the ESEARCH response (PARTIAL after them).
_REPORTED = (Return.MIN, Return.MAX, Return.ALL, Return.COUNT, Return.PARTIAL)
# RFC 5267 4.4: a partial range is two positions of the result, 32-bit and not zero.
MAX_POSITION = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class ReturnOptions:
    """The RETURN options of one command; `extended` is False for a plain SEARCH or SORT,
    which is answered with `* SEARCH` or `* SORT` as RFC 3501 and RFC 5256 have it."""

    options: frozenset[Return] = frozenset()
    extended: bool = False
    partial: tuple[int, int] = (0, 0)  # PARTIAL's first and last position, in that order

    @property
    def updates(self) -> bool:
        return Return.UPDATE in self.options

    @property
    def saves(self) -> bool:
        return Return.SAVE in self.options

    @property
    def reports(self) -> bool:
        """Whether an ESEARCH response goes out: not when SAVE is all that was asked for
        (RFC 5182 2.4)."""
        return self.extended and self.options != {Return.SAVE}

    @property
    def _shown(self) -> set[Return]:
        """The result items reported: ALL when none is named, unless UPDATE is, whose first
        answer then carries the tag alone (RFC 5267 4.2)."""
        shown = self.options & set(_REPORTED)
        return shown or (set() if self.updates else {Return.ALL})

    def saved(self, numbers: Sequence[int]) -> list[int]:
        """What SAVE keeps: only the MIN and MAX messages when those are all that was asked
        besides it (RFC 5182 2.4), else the whole result."""
        if not numbers or self.options & {Return.ALL, Return.COUNT}:
            return list(numbers)
        kept = []
        if Return.MIN in self.options:
            kept.append(numbers[0])
        if Return.MAX in self.options and numbers[-1] not in kept:
            kept.append(numbers[-1])
        return kept or list(numbers)

    def esearch(self, tag: str, numbers: Sequence[int], by_uid: bool,
                modseqs: Sequence[int] | None = None) -> bytes:
        """The `* ESEARCH (TAG "x") [UID] ...` line; an empty result reports COUNT 0 only.
        `modseqs` (each number's, for a search by MODSEQ) add the highest MODSEQ of the
        messages reported: of MIN and MAX alone when only those are (RFC 7162 3.1.5)."""
        shown = self._shown
        parts = [esearch_head(tag, by_uid)]
        for option in _REPORTED:
            if option not in shown:
                continue
            if option is Return.COUNT:
                parts.append(b"COUNT %d" % len(numbers))
            elif option is Return.PARTIAL:
                parts.append(self._partial(numbers))
            elif numbers:
                value = {Return.MIN: b"%d" % numbers[0], Return.MAX: b"%d" % numbers[-1],
                         Return.ALL: sequence_set(numbers)}[option]
                parts.append(option.encode("ascii") + b" " + value)
        if modseqs:
            if shown & {Return.ALL, Return.COUNT, Return.PARTIAL}:
                highest = max(modseqs)
            else:
                highest = max(modseqs[0] if Return.MIN in shown else 0,
                              modseqs[-1] if Return.MAX in shown else 0)
            parts.append(b"MODSEQ %d" % highest)
        return b" ".join(parts) + b"\r\n"

    def _partial(self, numbers: Sequence[int]) -> bytes:
        first, last = self.partial
        window = numbers[first - 1:last]
        found = sequence_set(window) if window else b"NIL"
        return b"PARTIAL (%d:%d %s)" % (first, last, found)


def numbers_line(name: bytes, numbers: Sequence[int], modseqs: Sequence[int] | None) -> bytes:
    """`* SEARCH n ...` or `* SORT n ...`; after a search by MODSEQ that found messages, the
    highest MODSEQ of them ends it, ` (MODSEQ m)` (RFC 7162 3.1.6, 3.1.9)."""
    highest = b" (MODSEQ %d)" % max(modseqs) if modseqs else b""
    return b"* %s%s%s\r\n" % (name, b"".join(b" %d" % n for n in numbers), highest)


def esearch_head(tag: str, by_uid: bool) -> bytes:
    """`* ESEARCH (TAG "x")`, and ` UID` when the numbers are UIDs."""
    head = b'* ESEARCH (TAG "%s")' % tag.encode("ascii")
    return head + b" UID" if by_uid else head


def split_return(args: list) -> tuple[ReturnOptions, list]:
    """RETURN (option ...) at the start of SEARCH's or SORT's arguments, and the rest.
    `RETURN ()` means ALL (RFC 4731 3.1); PARTIAL is followed by its range."""
    if not (args and isinstance(args[0], str) and args[0].upper() == "RETURN"):
        return ReturnOptions(), args
    if len(args) < 2 or not isinstance(args[1], list):
        raise ImapSyntaxError("RETURN needs a parenthesised list of options")
    options = set()
    partial = (0, 0)
    items = iter(args[1])
    for item in items:
        try:
            option = Return(item.upper() if isinstance(item, str) else "")
        except ValueError:
            raise ImapSyntaxError("unknown RETURN option") from None
        if option is Return.PARTIAL:
            partial = _partial_range(next(items, None))
        options.add(option)
    return ReturnOptions(frozenset(options or {Return.ALL}), True, partial), args[2:]


def _partial_range(token: object) -> tuple[int, int]:
    """PARTIAL's m:n, two positions from 1 in either order (RFC 5267 4.4); not `*`."""
    first, _, last = token.partition(":") if isinstance(token, str) else ("", "", "")
    if not (first.isdigit() and last.isdigit() and len(first) <= 10 and len(last) <= 10):
        raise ImapSyntaxError("PARTIAL needs a range of two positions, m:n")
    low, high = sorted((int(first), int(last)))
    if low < 1 or high > MAX_POSITION:
        raise ImapSyntaxError("PARTIAL positions run from 1 to 4294967295")
    return low, high


def sequence_set(numbers: Sequence[int]) -> bytes:
    """Numbers as a sequence set in their own order, ascending runs joined: 1:3,7,5 ."""
    pieces = []
    start = 0
    for index in range(1, len(numbers) + 1):
        if index < len(numbers) and numbers[index] == numbers[index - 1] + 1:
            continue
        first, last = numbers[start], numbers[index - 1]
        pieces.append(b"%d" % first if first == last else b"%d:%d" % (first, last))
        start = index
    return b",".join(pieces)
