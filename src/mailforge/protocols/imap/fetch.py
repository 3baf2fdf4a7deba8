"""One FETCH response (RFC 3501 6.4.5 and 7.4.2, BINARY from RFC 3516) for one message.

The machine asks `needs_message` whether the store must read the message at all (FLAGS, UID,
INTERNALDATE and RFC822.SIZE come from MessageInfo alone) and `sets_seen` whether to set \\Seen
before answering; it then passes the message's CRLF bytes to `fetch_response`, or only its
cached summary when `answerable_from_summary` says that is enough (ENVELOPE, BODY,
BODYSTRUCTURE and the message's header sections). A BINARY of a part in an encoding we cannot
undo raises `mime.UnknownEncoding` (NO [UNKNOWN-CTE]).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

from mailforge.speedups import FetchAttribute, fetchcodes
from mailforge.store.api import MessageInfo, MessageSummary

from .bodystructure import body_structure
from .envelope import envelope
from .mime import Header, ParsedOnDemand, Part, decoded_body, find_part, parse_message
from .wire import NIL, astring, flag_list, format_date_time, literal

# Items answered from MessageInfo; everything else needs the message's bytes.
_INFO_ONLY = frozenset(("FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE"))
# Items answered from MessageInfo and a MessageSummary (BODY has its own rule).
_SUMMARY_ONLY = _INFO_ONLY | {"ENVELOPE", "BODYSTRUCTURE", "RFC822.HEADER"}
# Sections of the message's own header: the summary's header block holds all they need.
_HEADER_SECTIONS = frozenset(("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"))


def needs_message(items: Sequence[FetchAttribute]) -> bool:
    return any(item.name not in _INFO_ONLY for item in items)


def answerable_from_summary(items: Sequence[FetchAttribute]) -> bool:
    """Whether the message's summary is enough for every item: none needs its body."""
    return all(_summary_answers(item) for item in items)


def _summary_answers(item: FetchAttribute) -> bool:
    if item.name == "BODY":
        return item.section is None or item.section.upper() in _HEADER_SECTIONS
    return item.name in _SUMMARY_ONLY


# A plan's item codes (speedups.render_fetch), by item name; BODY's only without a section.
_PLAN_CODES = {"UID": fetchcodes.UID, "FLAGS": fetchcodes.FLAGS,
               "INTERNALDATE": fetchcodes.INTERNALDATE, "RFC822.SIZE": fetchcodes.RFC822_SIZE,
               "ENVELOPE": fetchcodes.ENVELOPE, "BODYSTRUCTURE": fetchcodes.BODYSTRUCTURE}

Plan = tuple[int | Callable[[MessageInfo, MessageSummary | None], bytes], ...]


def fetch_plan(items: Sequence[FetchAttribute], uid: bool, modseq: bool) -> Plan | None:
    """The items as a plan for speedups.render_fetch, which renders a whole FETCH at once;
    None when some item needs the message's bytes or \\Seen is to be set (fetch_response then
    answers message by message). `uid` and `modseq` as for fetch_response."""
    if not answerable_from_summary(items) or sets_seen(items):
        return None
    plan: list[int | Callable[[MessageInfo, MessageSummary | None], bytes]] = []
    if uid and not any(item.name == "UID" for item in items):
        plan.append(fetchcodes.UID)
    for item in items:
        if item.name == "BODY" and item.section is None:
            plan.append(fetchcodes.BODY)
        elif item.name in _PLAN_CODES:
            plan.append(_PLAN_CODES[item.name])
        elif item.name == "BODY":
            plan.append(_planned_header_section(item))
        else:
            plan.append(functools.partial(_from_summary, item))
    if modseq:
        plan.append(fetchcodes.MODSEQ)
    return tuple(plan)


def _planned_header_section(item: FetchAttribute
                            ) -> Callable[[MessageInfo, MessageSummary | None], bytes]:
    """BODY[HEADER], BODY[HEADER.FIELDS (...)] or BODY[HEADER.FIELDS.NOT (...)] of the
    message itself, from its summary: the answer's label, which every message's shares,
    worked out once for the whole FETCH."""
    head = _section_head(b"BODY", _section_label(item), item.partial)
    section = item.section.upper()
    if section == "HEADER":
        def render(info: MessageInfo, summary: MessageSummary | None) -> bytes:
            assert summary is not None
            content = section_content(_header_block_part(summary.header), section)
            return _with_content(head, b"BODY", content, item.partial)
        return render
    # HEADER.FIELDS (.NOT): the field names a FETCH of many messages asks each of them for.
    wanted = Header.wanted(item.fields)
    exclude = section == "HEADER.FIELDS.NOT"

    def render_fields(info: MessageInfo, summary: MessageSummary | None) -> bytes:
        assert summary is not None
        content = _header_block_part(summary.header).header.pick(wanted, exclude)
        return _with_content(head, b"BODY", content, item.partial)
    return render_fields


def plan_needs_summary(plan: Plan) -> bool:
    return any(not isinstance(entry, int) or entry in fetchcodes.SUMMARY_CODES for entry in plan)


def _from_summary(item: FetchAttribute, info: MessageInfo, summary: MessageSummary | None) -> bytes:
    """A planned item that render_fetch leaves to Python: a header section, RFC822.HEADER."""
    return _ITEMS[item.name](item, _Message(info, None, summary))


def sets_seen(items: Sequence[FetchAttribute]) -> bool:
    """RFC 3501 6.4.5: BODY[...] (not BODY.PEEK), RFC822 and RFC822.TEXT set \\Seen; so does
    BINARY[...] (RFC 3516 4.2), but not BINARY.SIZE."""
    return any(item.name in ("RFC822", "RFC822.TEXT")
               or (item.name in ("BODY", "BINARY") and item.section is not None and not item.peek)
               for item in items)


class _Message(ParsedOnDemand):
    """The message's bytes and, parsed once and only when an item needs it, its structure; or
    its summary, and then `data` is its header block alone (all that `top` is asked for)."""

    __slots__ = ("data", "info", "summary")

    def __init__(self, info: MessageInfo, data: bytes | None,
                 summary: MessageSummary | None) -> None:
        super().__init__()
        self.info = info
        self.summary = summary
        self.data = summary.header if summary is not None else data if data is not None else b""

    @property
    def top(self) -> Part:
        if self.summary is not None:
            return _header_block_part(self.summary.header)
        return ParsedOnDemand.top.fget(self)  # type: ignore[attr-defined]

    def envelope(self) -> bytes:
        return self.summary.envelope if self.summary is not None else envelope(self.top.header)

    def body_structure(self, extended: bool) -> bytes:
        if self.summary is None:
            return body_structure(self.root, extended)
        return self.summary.bodystructure if extended else self.summary.body


@functools.lru_cache(maxsize=2048)
def _header_block_part(header: bytes) -> Part:
    """A summary's header block parsed once (BODY[HEADER.FIELDS (...)] of the same messages
    is asked for again and again); the summaries are kept, so the bytes' hash is too. Parts
    are never changed after parsing."""
    return parse_message(header, shallow=True)


def fetch_response(sequence: int, info: MessageInfo, items: Sequence[FetchAttribute],
                   message: bytes | None = None, *, summary: MessageSummary | None = None,
                   uid: bool = False, flags: bool = False, modseq: bool = False,
                   recent: bool = True) -> bytes:
    """`* n FETCH (...)` CRLF, from the message's bytes or, when the items allow, its summary.
    `uid`: add UID when not asked for (UID FETCH); `flags`: add FLAGS when not asked for (the
    FETCH just set \\Seen, RFC 3501 6.4.5); `modseq`: add MODSEQ (RFC 7162 3.1.4), which the
    item parser leaves to the caller; `recent`: FLAGS may show \\Recent (not to IMAP4rev2)."""
    if message is None and needs_message(items) and not (
            summary is not None and answerable_from_summary(items)):
        raise ValueError("these FETCH items need the message")
    if info.recent and not recent:
        info = dataclasses.replace(info, recent=False)
    context = _Message(info, message, summary if message is None else None)
    out = [_ITEMS[item.name](item, context) for item in items]
    if uid or flags:
        names = {item.name for item in items}
        if uid and "UID" not in names:
            out.insert(0, _uid(context))
        if flags and "FLAGS" not in names:
            out.append(_flags(context))
    if modseq:
        out.append(b"MODSEQ (%d)" % info.modseq)
    return b"* %d FETCH (%s)\r\n" % (sequence, b" ".join(out))


def _flags(message: _Message) -> bytes:
    return flags_item(message.info.flags, message.info.recent)


@functools.lru_cache(maxsize=1024)
def flags_item(flags: frozenset[str], recent: bool) -> bytes:
    """A folder's messages share a few flag sets: each is rendered once."""
    return b"FLAGS " + flag_list(flags, recent)


def _uid(message: _Message) -> bytes:
    return b"UID %d" % message.info.uid


_SIMPLE: dict[str, Callable[[_Message], bytes]] = {
    "FLAGS": _flags,
    "UID": _uid,
    "INTERNALDATE": lambda m: b"INTERNALDATE " + format_date_time(m.info.internal_date),
    "RFC822.SIZE": lambda m: b"RFC822.SIZE %d" % m.info.size,
    "ENVELOPE": lambda m: b"ENVELOPE " + m.envelope(),
    "RFC822": lambda m: b"RFC822 " + literal(m.data),
    "RFC822.HEADER": lambda m: b"RFC822.HEADER " + literal(m.top.mime_header()),
    "RFC822.TEXT": lambda m: b"RFC822.TEXT " + literal(m.top.body()),
    "BODYSTRUCTURE": lambda m: b"BODYSTRUCTURE " + m.body_structure(extended=True),
}


def _simple(item: FetchAttribute, message: _Message) -> bytes:
    return _SIMPLE[item.name](message)


def _body(item: FetchAttribute, message: _Message) -> bytes:
    if item.section is None:
        return b"BODY " + message.body_structure(extended=False)
    if not item.section:  # BODY[]: the message as it is, nothing to parse
        return _sectioned(b"BODY", "", message.data, item.partial)
    label = _section_label(item)
    whole_message = not item.section[:1].isdigit()
    root = message.top if whole_message else message.root
    content = section_content(root, item.section, item.fields)
    return _sectioned(b"BODY", label, content, item.partial)


def _binary(item: FetchAttribute, message: _Message) -> bytes:
    content = _binary_content(message.top if not item.section else message.root, item.section)
    if item.name == "BINARY.SIZE":
        return b"BINARY.SIZE[%s] %s" % (item.section.encode(), NIL if content is None
                                          else b"%d" % len(content))
    return _sectioned(b"BINARY", item.section or "", content, item.partial)


def _section_label(item: FetchAttribute) -> str:
    """What goes between the brackets of the answer: the section, and the fields asked for."""
    assert item.section is not None
    if not item.fields:
        return item.section
    return (item.section + " ("
            + " ".join(astring(name).decode("ascii") for name in item.fields) + ")")


def _sectioned(name: bytes, label: str, content: bytes | None,
               partial: tuple[int, int] | None) -> bytes:
    return _with_content(_section_head(name, label, partial), name, content, partial)


def _section_head(name: bytes, label: str, partial: tuple[int, int] | None) -> bytes:
    head = name + b"[" + label.encode("ascii") + b"]"
    return head if partial is None else head + b"<%d>" % partial[0]


def _with_content(head: bytes, name: bytes, content: bytes | None,
                  partial: tuple[int, int] | None) -> bytes:
    if partial is not None and content is not None:
        start, count = partial
        content = content[start:start + count]
    if content is None:
        return head + b" " + NIL
    if name == b"BINARY" and b"\x00" in content:
        return head + b" ~" + literal(content)  # RFC 3516 literal8
    return head + b" " + literal(content)


def section_content(root: Part, section: str, fields: Sequence[str] = ()) -> bytes | None:
    """The octets a BODY[section] names, or None (NIL) when the message has no such part."""
    numbers, text = split_section(section)
    data = root.data
    part = find_part(root, numbers)
    if part is None:
        return None
    if not text:
        return part.body() if numbers else data
    if text == "MIME":
        return part.mime_header()
    embedded = part.message if numbers else root
    if embedded is None:
        return None
    if text == "HEADER":
        return embedded.mime_header()
    if text == "TEXT":
        return embedded.body()
    return embedded.header.pick(Header.wanted(fields), exclude=text == "HEADER.FIELDS.NOT")


def _binary_content(root: Part, section: str | None) -> bytes | None:
    if not section:
        return root.data
    part = find_part(root, split_section(section)[0])
    return None if part is None else decoded_body(part)


def split_section(section: str) -> tuple[list[int], str]:
    """'1.2.HEADER.FIELDS' → ([1, 2], 'HEADER.FIELDS') (the parser has checked the syntax)."""
    pieces = section.split(".")
    count = 0
    while count < len(pieces) and pieces[count].isdigit():
        count += 1
    return [int(piece) for piece in pieces[:count]], ".".join(pieces[count:]).upper()


_ITEMS: dict[str, Callable[[FetchAttribute, _Message], bytes]] = {
    **{name: _simple for name in _SIMPLE},
    "BODY": _body,
    "BINARY": _binary,
    "BINARY.SIZE": _binary,
}
