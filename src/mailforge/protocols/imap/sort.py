"""SORT (RFC 5256 3) and SORT=DISPLAY (RFC 5957): the sort criteria and the order they give.

Pure: a `Candidate` is a message's sequence number, MessageInfo and header block, and
`sort_messages` orders candidates. Strings compare case-insensitively (`collate`); a message
without the field sorts as if it were empty, first. Messages all criteria find equal keep their
mailbox order, REVERSE or not (RFC 5256 3: the sequence number breaks ties).
"""

from __future__ import annotations

import email.utils
import enum
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ...store.api import MessageInfo
from .envelope import MISSING_DOMAIN, Address, parse_addresses
from .mime import Header, decode_words
from .subject import base_subject
from .wire import ImapSyntaxError


class SortKey(enum.StrEnum):
    ARRIVAL = "ARRIVAL"
    CC = "CC"
    DATE = "DATE"
    FROM = "FROM"
    SIZE = "SIZE"
    SUBJECT = "SUBJECT"
    TO = "TO"
    DISPLAYFROM = "DISPLAYFROM"
    DISPLAYTO = "DISPLAYTO"


REVERSE = "REVERSE"
# The keys MessageInfo alone answers: a SORT by them reads no header.
INFO_KEYS = frozenset({SortKey.ARRIVAL, SortKey.SIZE})


@dataclass(frozen=True, slots=True)
class Criterion:
    key: SortKey
    reverse: bool = False


@dataclass(frozen=True, slots=True)
class Candidate:
    """One message as SORT and THREAD see it; `header` may be empty when no key reads it."""

    sequence: int
    info: MessageInfo
    header: Header


def parse_criteria(arg: object) -> list[Criterion]:
    """SORT's parenthesised criteria, `(REVERSE DATE SUBJECT)` → Criteria (BAD if malformed)."""
    if not isinstance(arg, list) or not arg:
        raise ImapSyntaxError("sort criteria expected")
    criteria = []
    reverse = False
    for item in arg:
        name = item.upper() if isinstance(item, str) else ""
        if name == REVERSE and not reverse:
            reverse = True
            continue
        try:
            criteria.append(Criterion(SortKey(name), reverse))
        except ValueError:
            raise ImapSyntaxError(f"unknown sort criterion {name[:40]}") from None
        reverse = False
    if reverse:
        raise ImapSyntaxError("REVERSE needs a sort criterion after it")
    return criteria


def needs_header(criteria: Sequence[Criterion]) -> bool:
    return any(criterion.key not in INFO_KEYS for criterion in criteria)


def sort_messages(criteria: Sequence[Criterion], candidates: Sequence[Candidate]
                  ) -> list[Candidate]:
    """The candidates in the order the criteria give, ties in sequence order."""
    ordered = sorted(candidates, key=lambda c: c.sequence)
    # Stable sorts from the last criterion to the first: each keeps the order of the ones
    # after it among the messages it finds equal (reverse=True is stable too).
    for criterion in reversed(criteria):
        ordered.sort(key=_KEYS[criterion.key], reverse=criterion.reverse)
    return ordered


def collate(text: str) -> str:
    """The form strings are compared in: compatibility-decomposed, upper case (for ASCII the
    i;ascii-casemap collation RFC 5256 names)."""
    return unicodedata.normalize("NFKD", text).upper()


def sent_date(candidate: Candidate) -> float:
    """The Date: field in seconds since the epoch (its zone applied), or INTERNALDATE when the
    field is missing or cannot be read (RFC 5256 2.2)."""
    value = candidate.header.get("date")
    if value is not None:
        try:
            parsed = email.utils.parsedate_tz(value)
            if parsed is not None:
                return float(email.utils.mktime_tz(parsed))
        except (ValueError, IndexError, TypeError, OverflowError):
            pass
    return candidate.info.internal_date


def _first_address(candidate: Candidate, field: str) -> Address | None:
    value = candidate.header.get(field)
    addresses = parse_addresses(value) if value else []
    return addresses[0] if addresses else None


def _mailbox(field: str) -> Callable[[Candidate], str]:
    """RFC 5256 3: the addr-mailbox (local part) of the field's first address."""
    def key(candidate: Candidate) -> str:
        address = _first_address(candidate, field)
        return collate(address.mailbox or "") if address else ""
    return key


def _display(field: str) -> Callable[[Candidate], str]:
    """RFC 5957: the first address's display name, decoded; without one, mailbox@host."""
    def key(candidate: Candidate) -> str:
        address = _first_address(candidate, field)
        if address is None:
            return ""
        name = decode_words(address.name.encode("latin-1")).strip() if address.name else ""
        if not name:
            name = address.mailbox or ""
            if address.host and address.host != MISSING_DOMAIN:
                name += "@" + address.host
        return collate(name)
    return key


def _subject(candidate: Candidate) -> str:
    raw = candidate.header.values("subject")
    return collate(base_subject(raw[0] if raw else None).text)


_KEYS: dict[SortKey, Callable[[Candidate], object]] = {
    SortKey.ARRIVAL: lambda c: c.info.internal_date,
    SortKey.CC: _mailbox("cc"),
    SortKey.DATE: sent_date,
    SortKey.FROM: _mailbox("from"),
    SortKey.SIZE: lambda c: c.info.size,
    SortKey.SUBJECT: _subject,
    SortKey.TO: _mailbox("to"),
    SortKey.DISPLAYFROM: _display("from"),
    SortKey.DISPLAYTO: _display("to"),
}
