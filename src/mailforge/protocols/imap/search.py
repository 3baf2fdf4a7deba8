"""SEARCH (RFC 3501 6.4.4): criteria parsed into a matcher tree, evaluated one message at a time.

Flag, size, date, sequence and UID keys read only MessageInfo; the message itself is loaded
(once) only when a key needs its header or text, and `Query.needs_message` tells the driver
whether the search must run in the thread pool at all; `Query.needs_body` whether the header
block alone (which the store may have cached) would do. String keys match case-insensitively
on RFC 2047-decoded header values and on the decoded text of the message's text parts.
Beyond RFC 3501: OLDER and YOUNGER (RFC 5032 WITHIN), and `$` (RFC 5182 SEARCHRES) where a
sequence or UID set goes.
"""

from __future__ import annotations

import datetime
import email.utils
import enum
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass

from mailforge.speedups import STAR, ParseError, parse_sequence_set
from mailforge.store.api import (
    ANSWERED,
    DELETED,
    DRAFT,
    FLAGGED,
    SEEN,
    MessageInfo,
    StoreError,
)

from .envelope import address_text
from .mime import (
    Header,
    ParsedOnDemand,
    UnknownEncoding,
    decode_text,
    decode_words,
    decoded_body,
)
from .results import SAVED_RESULT
from .wire import ImapSyntaxError, parse_date

# NOT, OR and parentheses inside one another; evaluation recurses this deep, no further.
MAX_DEPTH = 32
# Keys in one SEARCH; a client needs a handful, a thousand is already a crafted command.
MAX_KEYS = 1000
CHARSETS = ("US-ASCII", "UTF-8")
ADDRESS_FIELDS = frozenset({"from", "to", "cc", "bcc"})


class BadCharset(ValueError):
    """A CHARSET we do not search in: NO [BADCHARSET (US-ASCII UTF-8)]."""


class _Message(ParsedOnDemand):
    """One candidate: what the store already knows, and its bytes only if a key asks."""

    __slots__ = ("_body", "_data", "_load", "count", "info", "max_uid", "sequence")

    def __init__(self, sequence: int, info: MessageInfo, count: int, max_uid: int,
                 load: Callable[[], bytes] | None) -> None:
        super().__init__()
        self.sequence, self.info, self.count, self.max_uid = sequence, info, count, max_uid
        self._load = load
        self._data: bytes | None = None
        self._body: str | None = None

    @property
    def data(self) -> bytes:
        if self._data is None:
            if self._load is None:
                raise ValueError("this search needs the message")
            self._data = self._load()
        return self._data

    @property
    def header(self) -> Header:
        """The message's own header, read without scanning its body."""
        return self.top.header

    def header_values(self, name: str) -> list[str]:
        return [decode_words(value).casefold() for value in self.header.values(name)]

    def address_values(self, name: str) -> list[str]:
        """An address field's values without comments (envelope.address_text), decoded."""
        return [decode_words(address_text(value.decode("latin-1")).encode("latin-1")).casefold()
                for value in self.header.values(name)]

    def header_text(self) -> str:
        header = self.header
        return decode_words(self.data[header.start:header.end]).casefold()

    def body_text(self) -> str:
        """Every text part's decoded text, casefolded, computed once."""
        if self._body is None:
            texts = []
            for part in self.root.walk():
                if part.is_text and not part.children:
                    try:
                        raw = decoded_body(part)
                    except UnknownEncoding:
                        raw = part.body()
                    texts.append(decode_text(raw, part.param("charset")))
            self._body = "\n".join(texts).casefold()
        return self._body


Matcher = Callable[[_Message], bool]
Tokens = Iterator[object]


class Needs(enum.IntEnum):
    """What a key reads of a message, cheapest first (AND and OR try the cheaper side first)."""

    INFO = 0    # MessageInfo alone
    HEADER = 1  # the message's own header block
    BODY = 2    # the whole message


@dataclass(frozen=True, slots=True)
class _Node:
    match: Matcher
    needs: Needs


@dataclass(frozen=True, slots=True)
class Query:
    root: _Node
    # The MODSEQ key is among the criteria (RFC 7162 3.1.5: the answer then names the highest
    # MODSEQ found), as a key and not as another's value (SUBJECT modseq).
    by_modseq: bool = False

    @property
    def needs_message(self) -> bool:
        return self.root.needs > Needs.INFO

    @property
    def needs_body(self) -> bool:
        """False when the message's header block is all `load` need give (it is parsed alone,
        so the answer is the same as from the whole message)."""
        return self.root.needs is Needs.BODY

    def run(self, messages: Sequence[MessageInfo],
            load: Callable[[int], bytes] | None = None) -> list[int]:
        """The sequence numbers (1-based) of the messages that match; `load(uid)` reads one.
        A message another session expunged under us (StoreError from `load`) is left out."""
        max_uid = messages[-1].uid if messages else 0
        hits = []
        for sequence, info in enumerate(messages, 1):
            reader = None if load is None else (lambda uid=info.uid: load(uid))
            try:
                if self.root.match(_Message(sequence, info, len(messages), max_uid, reader)):
                    hits.append(sequence)
            except StoreError:
                continue
        return hits


KeyBuilder = Callable[["_Parser", Tokens, int], _Node]


def parse_search(args: Sequence[object], saved: Collection[int] = (),
                 now: float | None = None) -> Query:
    """The arguments of SEARCH as the command parser gives them (atoms `str`, strings `bytes`,
    parenthesised lists `list`) → a Query. Raises ImapSyntaxError (BAD) or BadCharset (NO).
    `saved`: the UIDs `$` stands for (RFC 5182); `now`: what OLDER and YOUNGER count back
    from (RFC 5032), the current time when None."""
    args = list(args)
    charset = "US-ASCII"
    if args and isinstance(args[0], str) and args[0].upper() == "CHARSET":
        if len(args) < 2 or isinstance(args[1], list):
            raise ImapSyntaxError("CHARSET needs a name")
        charset = _text(args[1]).upper()
        if charset not in CHARSETS:
            raise BadCharset(f"charset {charset} is not supported")
        args = args[2:]
    parser = _Parser(charset == "UTF-8", frozenset(saved), time.time() if now is None else now)
    root = parser.all_of(args, 0)
    return Query(root, parser.by_modseq)


class _Parser:
    def __init__(self, strict_utf8: bool, saved: frozenset[int], now: float) -> None:
        self.strict_utf8 = strict_utf8
        self.saved = saved
        self.now = now
        self.keys = 0
        self.by_modseq = False

    def all_of(self, tokens: list, depth: int) -> _Node:
        if not tokens:
            raise ImapSyntaxError("search criteria expected")
        stream = iter(tokens)
        nodes = [self.key(token, stream, depth) for token in stream]
        return _and(nodes)

    def key(self, token: object, stream: Tokens, depth: int) -> _Node:
        self.keys += 1
        if self.keys > MAX_KEYS or depth > MAX_DEPTH:
            raise ImapSyntaxError("search criteria too complex")
        if isinstance(token, list):
            return self.all_of(token, depth + 1)
        if not isinstance(token, str):
            raise ImapSyntaxError("search key expected")
        name = token.upper()
        handler = _KEYS.get(name)
        if handler is not None:
            return handler(self, stream, depth)
        if token == SAVED_RESULT:
            return _Node(lambda m: m.info.uid in self.saved, Needs.INFO)
        if token[:1].isdigit() or token[:1] == "*":
            ranges = _sequence_set(token)
            return _Node(lambda m: _in_set(ranges, m.sequence, m.count), Needs.INFO)
        raise ImapSyntaxError(f"unknown search key {token[:40]}")

    def next(self, stream: Tokens) -> object:
        token = next(stream, None)
        if token is None:
            raise ImapSyntaxError("search key needs an argument")
        return token

    def string(self, stream: Tokens) -> str:
        token = self.next(stream)
        if isinstance(token, list):
            raise ImapSyntaxError("string expected")
        raw = token if isinstance(token, bytes) else token.encode("ascii")
        try:
            return raw.decode("utf-8").casefold()
        except UnicodeDecodeError:
            if self.strict_utf8:
                raise ImapSyntaxError("search string is not UTF-8") from None
            return raw.decode("latin-1").casefold()

    def number(self, stream: Tokens) -> int:
        token = self.next(stream)
        if not isinstance(token, str) or not token.isascii() or not token.isdigit() or len(
                token) > 20:
            raise ImapSyntaxError("number expected")
        return int(token)

    def field_name(self, stream: Tokens) -> str:
        token = self.next(stream)
        if isinstance(token, list):
            raise ImapSyntaxError("header field name expected")
        return _text(token).lower()

    def date(self, stream: Tokens) -> datetime.date:
        token = self.next(stream)
        if isinstance(token, list):
            raise ImapSyntaxError("date expected")
        return parse_date(token)


def _text(token: object) -> str:
    return token.decode("ascii", "replace") if isinstance(token, bytes) else str(token)


def _sequence_set(text: str) -> list[tuple[int, int]]:
    try:
        return parse_sequence_set(text)
    except ParseError as exc:
        raise ImapSyntaxError(str(exc)) from None


def _in_set(ranges: list[tuple[int, int]], number: int, largest: int) -> bool:
    for low, high in ranges:
        low = largest if low == STAR else low
        high = largest if high == STAR else high
        if min(low, high) <= number <= max(low, high):
            return True
    return False


def _and(nodes: list[_Node]) -> _Node:
    if len(nodes) == 1:
        return nodes[0]
    # The cheap keys first, so a message they rule out is never read.
    ordered = sorted(nodes, key=lambda node: node.needs)
    matchers = [node.match for node in ordered]
    return _Node(lambda m: all(match(m) for match in matchers), max(n.needs for n in nodes))


# --- the keys ---------------------------------------------------------------------------------


def _flag(flag: str, present: bool) -> KeyBuilder:
    return lambda parser, stream, depth: _Node(lambda m: (flag in m.info.flags) is present,
                                               Needs.INFO)


def _keyword(present: bool) -> KeyBuilder:
    def build(parser: _Parser, stream: Tokens, depth: int) -> _Node:
        flag = parser.next(stream)
        if not isinstance(flag, str):
            raise ImapSyntaxError("keyword expected")
        lowered = flag.lower()
        return _Node(lambda m: any(f.lower() == lowered for f in m.info.flags) is present,
                     Needs.INFO)
    return build


def _internal_date(compare: Callable[[datetime.date, datetime.date], bool]) -> KeyBuilder:
    def build(parser: _Parser, stream: Tokens, depth: int) -> _Node:
        day = parser.date(stream)
        return _Node(lambda m: compare(_utc_date(m.info.internal_date), day), Needs.INFO)
    return build


def _sent_date(compare: Callable[[datetime.date, datetime.date], bool]) -> KeyBuilder:
    def build(parser: _Parser, stream: Tokens, depth: int) -> _Node:
        day = parser.date(stream)

        def match(m: _Message) -> bool:
            sent = _header_date(m)
            return sent is not None and compare(sent, day)
        return _Node(match, Needs.HEADER)
    return build


def _utc_date(timestamp: float) -> datetime.date:
    return datetime.date(*time.gmtime(timestamp)[:3])


def _header_date(m: _Message) -> datetime.date | None:
    """The date of the Date: field as its sender wrote it (RFC 3501: time and zone ignored)."""
    value = m.header.get("date")
    if value is None:
        return None
    try:
        parsed = email.utils.parsedate_tz(value)
        return None if parsed is None else datetime.date(*parsed[:3])
    except (ValueError, IndexError, TypeError, OverflowError):
        return None


def _header_key(field: str | None) -> KeyBuilder:
    """FROM, TO, CC and BCC match in the addresses, comments left out (as Dovecot does; a
    comment may even sit inside an address); SUBJECT and HEADER in the field as written."""
    def build(parser: _Parser, stream: Tokens, depth: int) -> _Node:
        name = field or parser.field_name(stream)
        needle = parser.string(stream)
        values = _Message.address_values if field in ADDRESS_FIELDS else _Message.header_values
        return _Node(lambda m: any(needle in value for value in values(m, name)), Needs.HEADER)
    return build


def _body(parser: _Parser, stream: Tokens, depth: int) -> _Node:
    needle = parser.string(stream)
    return _Node(lambda m: needle in m.body_text(), Needs.BODY)


def _text_key(parser: _Parser, stream: Tokens, depth: int) -> _Node:
    needle = parser.string(stream)
    return _Node(lambda m: needle in m.header_text() or needle in m.body_text(), Needs.BODY)


def _within(older: bool) -> KeyBuilder:
    """RFC 5032 OLDER and YOUNGER: INTERNALDATE against an interval in seconds before now."""
    def build(parser: _Parser, stream: Tokens, depth: int) -> _Node:
        interval = parser.number(stream)
        if interval == 0:
            raise ImapSyntaxError("interval must be at least one second")
        cutoff = parser.now - interval
        if older:
            return _Node(lambda m: m.info.internal_date <= cutoff, Needs.INFO)
        return _Node(lambda m: m.info.internal_date > cutoff, Needs.INFO)
    return build


def _size(larger: bool) -> KeyBuilder:
    def build(parser: _Parser, stream: Tokens, depth: int) -> _Node:
        limit = parser.number(stream)
        return _Node(lambda m: m.info.size > limit if larger else m.info.size < limit, Needs.INFO)
    return build


def _not(parser: _Parser, stream: Tokens, depth: int) -> _Node:
    inner = parser.key(parser.next(stream), stream, depth + 1)
    return _Node(lambda m: not inner.match(m), inner.needs)


def _or(parser: _Parser, stream: Tokens, depth: int) -> _Node:
    left = parser.key(parser.next(stream), stream, depth + 1)
    right = parser.key(parser.next(stream), stream, depth + 1)
    first, second = sorted((left, right), key=lambda node: node.needs)
    return _Node(lambda m: first.match(m) or second.match(m), max(left.needs, right.needs))


def _uid(parser: _Parser, stream: Tokens, depth: int) -> _Node:
    token = parser.next(stream)
    if not isinstance(token, str):
        raise ImapSyntaxError("UID set expected")
    if token == SAVED_RESULT:
        return _Node(lambda m: m.info.uid in parser.saved, Needs.INFO)
    ranges = _sequence_set(token)
    return _Node(lambda m: _in_set(ranges, m.info.uid, m.max_uid), Needs.INFO)


def _modseq(parser: _Parser, stream: Tokens, depth: int) -> _Node:
    """MODSEQ [entry-name entry-type] n (RFC 7162 3.1.5): every flag shares the message's
    MODSEQ here, so the entry named makes no difference."""
    token = parser.next(stream)
    if isinstance(token, bytes):
        entry_type = parser.next(stream)
        if not (isinstance(entry_type, str) and entry_type.lower() in ("priv", "shared", "all")):
            raise ImapSyntaxError("MODSEQ entry type is priv, shared or all")
        token = parser.next(stream)
    if not (isinstance(token, str) and token.isdigit() and len(token) <= 19):
        raise ImapSyntaxError("MODSEQ needs a mod-sequence value")
    lowest = int(token)
    parser.by_modseq = True
    return _Node(lambda m: m.info.modseq >= lowest, Needs.INFO)


def _constant(test: Matcher) -> KeyBuilder:
    return lambda parser, stream, depth: _Node(test, Needs.INFO)


_KEYS: dict[str, KeyBuilder] = {
    "ALL": _constant(lambda m: True),
    "ANSWERED": _flag(ANSWERED, True), "UNANSWERED": _flag(ANSWERED, False),
    "DELETED": _flag(DELETED, True), "UNDELETED": _flag(DELETED, False),
    "DRAFT": _flag(DRAFT, True), "UNDRAFT": _flag(DRAFT, False),
    "FLAGGED": _flag(FLAGGED, True), "UNFLAGGED": _flag(FLAGGED, False),
    "SEEN": _flag(SEEN, True), "UNSEEN": _flag(SEEN, False),
    "KEYWORD": _keyword(True), "UNKEYWORD": _keyword(False),
    "RECENT": _constant(lambda m: m.info.recent),
    "OLD": _constant(lambda m: not m.info.recent),
    "NEW": _constant(lambda m: m.info.recent and SEEN not in m.info.flags),
    "BEFORE": _internal_date(lambda date, day: date < day),
    "ON": _internal_date(lambda date, day: date == day),
    "SINCE": _internal_date(lambda date, day: date >= day),
    "SENTBEFORE": _sent_date(lambda date, day: date < day),
    "SENTON": _sent_date(lambda date, day: date == day),
    "SENTSINCE": _sent_date(lambda date, day: date >= day),
    "BCC": _header_key("bcc"), "CC": _header_key("cc"), "FROM": _header_key("from"),
    "TO": _header_key("to"), "SUBJECT": _header_key("subject"), "HEADER": _header_key(None),
    "BODY": _body, "TEXT": _text_key,
    "LARGER": _size(True), "SMALLER": _size(False),
    "OLDER": _within(True), "YOUNGER": _within(False),
    "NOT": _not, "OR": _or, "UID": _uid, "MODSEQ": _modseq,
}
