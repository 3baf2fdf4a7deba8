"""IMAP response syntax (RFC 3501 9): strings, lists, flags, dates and mailbox names.

Everything here builds or reads the bytes of one protocol element; nothing knows about
sessions or messages. Values that a client sent and we cannot read raise `ImapSyntaxError`,
which the machine answers with BAD.
"""

from __future__ import annotations

import base64
import calendar
import datetime
import re
from collections.abc import Iterable

from ...speedups import format_date_time  # noqa: F401 - INTERNALDATE, with the other syntax

NIL = b"NIL"

# Strings longer than this go as literals even when they could be quoted: a literal costs its
# length in digits, a quoted string a scan and maybe escapes, and clients read both.
MAX_QUOTED = 1024

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBER = {name.upper(): number for number, name in enumerate(MONTHS, 1)}

# RFC 3501 9 ATOM-CHAR: any CHAR except atom-specials ( ) { SP CTL % * " \ ].
_ATOM_CHARS = frozenset(range(0x21, 0x7F)) - frozenset(b'(){%*"\\]')
# Octets a quoted string cannot hold (CR, LF, NUL and 8-bit need a literal); once a client
# enabled UTF8=ACCEPT or IMAP4rev2, a quoted string may hold UTF-8 (RFC 6855 3).
_UNQUOTABLE = re.compile(rb"[\x00\r\n\x80-\xff]")
_UNQUOTABLE_UTF8 = re.compile(rb"[\x00\r\n]")


class ImapSyntaxError(ValueError):
    """A client-supplied value that does not follow IMAP's grammar (answered with BAD)."""


def literal(data: bytes) -> bytes:
    """`{n}` CRLF and the octets, for anything a quoted string cannot carry."""
    return b"{%d}\r\n%s" % (len(data), data)


def quoted(data: bytes) -> bytes:
    """A quoted string; the caller has made sure `data` holds no CR, LF, NUL or 8-bit."""
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def string(data: bytes | str, utf8: bool = False) -> bytes:
    """An IMAP string: quoted when it can be, else a literal."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if len(raw) > MAX_QUOTED or (_UNQUOTABLE_UTF8 if utf8 else _UNQUOTABLE).search(raw):
        return literal(raw)
    return quoted(raw)


def nstring(data: bytes | str | None) -> bytes:
    return NIL if data is None else string(data)


def astring(data: bytes | str, utf8: bool = False) -> bytes:
    """An atom when every octet may stand in one (and it does not read as NIL), else a string."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if raw and _ATOM_CHARS.issuperset(raw) and raw.upper() != NIL:
        return raw
    return string(raw, utf8)


def plist(items: Iterable[bytes]) -> bytes:
    """A parenthesised list of already formatted elements."""
    return b"(" + b" ".join(items) + b")"


def nlist(items: Iterable[bytes]) -> bytes:
    """A parenthesised list, or NIL when there is nothing to put in it."""
    items = list(items)
    return plist(items) if items else NIL


def flag_list(flags: Iterable[str], recent: bool = False) -> bytes:
    """`(\\Seen $Label)` in a stable order, system flags first; \\Recent last when it applies."""
    ordered = sorted(flags, key=lambda flag: (not flag.startswith("\\"), flag))
    if recent:
        ordered.append("\\Recent")
    return plist(flag.encode("utf-8") for flag in ordered)


# --- dates -----------------------------------------------------------------------------------
# format_date_time (INTERNALDATE) is in the speedups: FETCH renders one per message.


def parse_date_time(value: bytes | str) -> float:
    """APPEND's date-time (`"5-Nov-2026 16:29:44 +0100"`, the day may be space-padded) → epoch."""
    text = _ascii(value).strip()
    day_part, space, clock = text.partition(" ")
    clock, space2, zone = clock.partition(" ")
    if not (space and space2):
        raise ImapSyntaxError("bad date-time")
    date = parse_date(day_part)
    pieces = clock.split(":")
    if len(pieces) != 3 or not all(len(p) == 2 and p.isdigit() for p in pieces):
        raise ImapSyntaxError("bad date-time")
    hour, minute, second = (int(p) for p in pieces)
    if hour > 23 or minute > 59 or second > 60:
        raise ImapSyntaxError("bad date-time")
    if len(zone) != 5 or zone[0] not in "+-" or not zone[1:].isdigit():
        raise ImapSyntaxError("bad date-time zone")
    offset = int(zone[1:3]) * 3600 + int(zone[3:]) * 60
    utc = calendar.timegm((date.year, date.month, date.day, hour, minute, second))
    return float(utc - offset if zone[0] == "+" else utc + offset)


def parse_date(value: bytes | str) -> datetime.date:
    """SEARCH's date (`1-Feb-1994`, RFC 3501 9 date-text)."""
    text = _ascii(value).strip()
    pieces = text.split("-")
    if len(pieces) != 3:
        raise ImapSyntaxError("bad date")
    day, month, year = pieces
    number = _MONTH_NUMBER.get(month.upper())
    if (number is None or not 1 <= len(day) <= 2 or not day.isdigit()
            or len(year) != 4 or not year.isdigit()):
        raise ImapSyntaxError("bad date")
    try:
        return datetime.date(int(year), number, int(day))
    except ValueError:
        raise ImapSyntaxError("bad date") from None


def _ascii(value: bytes | str) -> str:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not value.isascii():
        raise ImapSyntaxError("bad date")
    return value


# --- mailbox names (RFC 3501 5.1.3, modified UTF-7) --------------------------------------------


def encode_mailbox(name: str) -> str:
    """A Unicode folder name in modified UTF-7: printable ASCII stands for itself, `&` is `&-`,
    everything else goes in `&...-` runs of base64 (with `,` for `/`) over UTF-16BE."""
    if _itself(name):
        return name
    out: list[str] = []
    pending: list[str] = []
    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            if pending:
                out.append(_shift("".join(pending)))
                pending.clear()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    if pending:
        out.append(_shift("".join(pending)))
    return "".join(out)


def _shift(text: str) -> str:
    encoded = base64.b64encode(text.encode("utf-16-be"), b"+,").rstrip(b"=")
    return "&" + encoded.decode("ascii") + "-"


def mailbox_name(name: str, utf8: bool = False) -> bytes:
    """A store folder name as a session's responses carry it: modified UTF-7, or UTF-8 once
    the session enabled UTF8=ACCEPT or IMAP4rev2."""
    return astring(encode_name(name, utf8), utf8)


def encode_name(name: str, utf8: bool) -> str:
    return name if utf8 else encode_mailbox(name)


def decode_name(name: bytes, utf8: bool) -> str:
    """A mailbox name a client sent, in its session's encoding; raises ValueError."""
    if not utf8:
        return decode_mailbox(name)
    text = name.decode("utf-8")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in text):
        raise ImapSyntaxError("mailbox name holds control characters")
    return text


def decode_mailbox(name: bytes | str) -> str:
    """The folder name a client sent, strictly: anything but the one canonical modified UTF-7
    spelling of some Unicode name (8-bit, bad base64, lone surrogates, encoded ASCII…) raises."""
    if isinstance(name, bytes):
        if not name.isascii():
            raise ImapSyntaxError("mailbox name is not modified UTF-7")
        name = name.decode("ascii")
    if _itself(name):
        return name
    out: list[str] = []
    pos = 0
    while pos < len(name):
        char = name[pos]
        if not 0x20 <= ord(char) <= 0x7E:
            raise ImapSyntaxError("mailbox name is not modified UTF-7")
        if char != "&":
            out.append(char)
            pos += 1
            continue
        end = name.find("-", pos + 1)
        if end < 0:
            raise ImapSyntaxError("mailbox name is not modified UTF-7")
        out.append(_unshift(name[pos + 1:end]))
        pos = end + 1
    decoded = "".join(out)
    # One spelling per name, as Dovecot insists too: otherwise two names could reach one folder.
    if encode_mailbox(decoded) != name:
        raise ImapSyntaxError("mailbox name is not modified UTF-7")
    return decoded


def _itself(name: str) -> bool:
    """Whether a name is its own modified UTF-7 (printable ASCII without `&`): most are, and
    every APPEND, STATUS and SELECT names one."""
    return name.isascii() and name.isprintable() and "&" not in name


def _unshift(run: str) -> str:
    if not run:
        return "&"
    try:
        raw = base64.b64decode(run + "=" * (-len(run) % 4), b"+,", validate=True)
        return raw.decode("utf-16-be")
    except (ValueError, UnicodeDecodeError):
        raise ImapSyntaxError("mailbox name is not modified UTF-7") from None
