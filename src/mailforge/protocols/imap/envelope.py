"""ENVELOPE (RFC 3501 7.4.2): the header fields clients list messages by, addresses parsed.

Address lists are read as leniently as mail readers read them (RFC 5322 3.4 with the obsolete
forms): display names, angle addresses with source routes, groups, comments standing in for a
missing name. RFC 2047 encoded words are left as they are; the client decodes them.
"""

from __future__ import annotations

from typing import NamedTuple

from .mime import Header, token_pattern, tokenize
from .wire import NIL, nstring, plist

_ADDRESS_TOKENS = token_pattern('()<>[]:;@\\,"')
# What RFC 3501 has no way to say otherwise: an address without a domain would read as a group.
MISSING_DOMAIN = "MISSING_DOMAIN"


class Address(NamedTuple):
    name: str | None
    route: str | None
    mailbox: str | None
    host: str | None

    def format(self) -> bytes:
        return plist(_nstring(value) for value in self)


# RFC 3501 7.4.2: a group is framed by (NIL NIL "name" NIL) … (NIL NIL NIL NIL).
_GROUP_END = Address(None, None, None, None)


def envelope(header: Header) -> bytes:
    """The parenthesised ENVELOPE of a message (or of an embedded message/rfc822)."""
    sender_default = _addresses(header, "from")
    fields = [
        _nstring(header.get("date")),
        _nstring(header.get("subject")),
        _address_list(sender_default),
        _address_list(_addresses(header, "sender") or sender_default),
        _address_list(_addresses(header, "reply-to") or sender_default),
        _address_list(_addresses(header, "to")),
        _address_list(_addresses(header, "cc")),
        _address_list(_addresses(header, "bcc")),
        _nstring(header.get("in-reply-to")),
        _nstring(header.get("message-id")),
    ]
    return plist(fields)


def _nstring(text: str | None) -> bytes:
    return nstring(None if text is None else text.encode("latin-1"))


def _addresses(header: Header, name: str) -> list[Address]:
    value = header.get(name)
    return parse_addresses(value) if value else []


def _address_list(addresses: list[Address]) -> bytes:
    return plist(address.format() for address in addresses) if addresses else NIL


def parse_addresses(value: str) -> list[Address]:
    """An address-list header value → Addresses, groups framed as RFC 3501 wants. Never raises."""
    tokens = tokenize(value, _ADDRESS_TOKENS, comments=True)
    result: list[Address] = []
    pending: list[tuple[str, str]] = []  # tokens since the last separator
    in_group = False
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if token == ("special", "<"):
            close = _find(tokens, index, ("special", ">"))
            result.append(_angle_address(_phrase(pending), tokens[index:close]))
            pending, index = [], close + 1
        elif token == ("special", ":") and not in_group and _phrase(pending):
            result.append(Address(None, None, _phrase(pending), None))
            pending, in_group = [], True
        elif token == ("special", ";") and in_group:
            _flush(pending, result)
            result.append(_GROUP_END)
            pending, in_group = [], False
        elif token == ("special", ","):
            _flush(pending, result)
            pending = []
        else:
            pending.append(token)
    _flush(pending, result)
    if in_group:
        result.append(_GROUP_END)
    return result


def address_text(value: str) -> str:
    """An address-list header value as SEARCH FROM/TO/CC/BCC match in it, as Dovecot does:
    comments and folding white space gone, each address as `name <mailbox@host>` or
    `mailbox@host`, groups as `group: ..., ;`."""
    parts = []
    for address in parse_addresses(value):
        if address == _GROUP_END:
            parts.append(";")
        elif address.host is None:  # a group's start
            parts.append(f"{address.mailbox}:")
        else:
            spec = address.mailbox or ""
            if address.host and address.host != MISSING_DOMAIN:
                spec += "@" + address.host
            parts.append(f"{address.name} <{spec}>" if address.name else spec)
    return ", ".join(parts)


def _find(tokens: list[tuple[str, str]], start: int, wanted: tuple[str, str]) -> int:
    for index in range(start, len(tokens)):
        if tokens[index] == wanted:
            return index
    return len(tokens)


def _phrase(tokens: list[tuple[str, str]]) -> str | None:
    words = [text for kind, text in tokens if kind in ("atom", "quoted")]
    return " ".join(words) if words else None


def _flush(tokens: list[tuple[str, str]], result: list[Address]) -> None:
    """A bare addr-spec (`user@host (Name)`) ends at a separator."""
    words = [token for token in tokens if token[0] != "comment"]
    if not words:
        return
    comments = [text for kind, text in tokens if kind == "comment" and text.strip()]
    mailbox, host = _addr_spec(words)
    result.append(Address(comments[-1].strip() if comments else None, None, mailbox, host))


def _angle_address(name: str | None, tokens: list[tuple[str, str]]) -> Address:
    words = [token for token in tokens if token[0] != "comment"]
    route = None
    if words and words[0] == ("special", "@"):
        colon = _find(words, 0, ("special", ":"))
        route = _join(words[:colon]) or None
        words = words[colon + 1:]
    if not words:  # `<>`, the null return path; an empty host, for NIL would mean a group
        return Address(name, route, "", "")
    mailbox, host = _addr_spec(words)
    return Address(name, route, mailbox, host)


def _addr_spec(words: list[tuple[str, str]]) -> tuple[str, str]:
    at = max((i for i, token in enumerate(words) if token == ("special", "@")), default=-1)
    if at < 0:
        return _join(words), MISSING_DOMAIN
    return _join(words[:at]), _join(words[at + 1:]) or MISSING_DOMAIN


def _join(words: list[tuple[str, str]]) -> str:
    return "".join(_quote(text) if kind == "quoted" else text for kind, text in words)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
