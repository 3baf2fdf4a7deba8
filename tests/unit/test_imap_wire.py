"""IMAP response syntax: strings, lists, flags, dates and modified UTF-7 names."""

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailforge.protocols.imap import wire
from mailforge.protocols.imap.wire import ImapSyntaxError


@pytest.mark.parametrize("value, expected", [
    (b"hello world", b'"hello world"'),
    (b'say "hi" \\o/', b'"say \\"hi\\" \\\\o/"'),
    (b"", b'""'),
    (b"two\r\nlines", b"{10}\r\ntwo\r\nlines"),
    ("Grüße", b"{7}\r\nGr\xc3\xbc\xc3\x9fe"),
    (b"nul\x00", b"{4}\r\nnul\x00"),
    (b"x" * 2000, b"{2000}\r\n" + b"x" * 2000),
])
def test_string_is_quoted_when_safe_else_literal(value, expected):
    assert wire.string(value) == expected


def test_nstring_and_astring():
    assert wire.nstring(None) == b"NIL"
    assert wire.nstring(b"NIL") == b'"NIL"'
    assert wire.astring("INBOX") == b"INBOX"
    assert wire.astring("nil") == b'"nil"'
    assert wire.astring("Sent Items") == b'"Sent Items"'
    assert wire.astring("a]b") == b'"a]b"'
    assert wire.astring("") == b'""'


def test_lists_and_flags():
    assert wire.plist([b"a", b"NIL"]) == b"(a NIL)"
    assert wire.nlist([]) == b"NIL"
    assert wire.flag_list({"$Label1", "\\Seen", "\\Answered"}) == b"(\\Answered \\Seen $Label1)"
    assert wire.flag_list(set(), recent=True) == b"(\\Recent)"
    assert wire.flag_list(()) == b"()"


def test_internaldate_format_rfc3501():
    stamp = datetime.datetime(1996, 7, 17, 9, 44, 25, tzinfo=datetime.UTC).timestamp()
    assert wire.format_date_time(stamp) == b'"17-Jul-1996 09:44:25 +0000"'
    assert wire.format_date_time(0) == b'" 1-Jan-1970 00:00:00 +0000"'


@pytest.mark.parametrize("text, expected", [
    ("17-Jul-1996 02:44:25 -0700", "1996-07-17T09:44:25"),
    (" 5-Nov-2026 16:29:44 +0100", "2026-11-05T15:29:44"),
    ("05-nov-2026 16:29:44 +0000", "2026-11-05T16:29:44"),
    (b"29-Feb-2024 23:59:59 +0530", "2024-02-29T18:29:59"),
])
def test_parse_date_time(text, expected):
    moment = datetime.datetime.fromtimestamp(wire.parse_date_time(text), datetime.UTC)
    assert moment.replace(tzinfo=None).isoformat() == expected


@pytest.mark.parametrize("text", [
    "", "17-Jul-1996", "17-Jul-1996 02:44:25", "17-Jux-1996 02:44:25 +0000",
    "30-Feb-2024 00:00:00 +0000", "17-Jul-1996 24:00:00 +0000", "17-Jul-1996 2:44:25 +0000",
    "17-Jul-1996 02:44:25 0700", "17-Jul-1996 02:44:25 +07:00", "17-Jul-96 02:44:25 +0000",
    "١٧-Jul-1996 02:44:25 +0000",
])
def test_bad_date_time(text):
    with pytest.raises(ImapSyntaxError):
        wire.parse_date_time(text)


def test_parse_date():
    assert wire.parse_date("1-Feb-1994") == datetime.date(1994, 2, 1)
    assert wire.parse_date(b"01-FEB-1994") == datetime.date(1994, 2, 1)
    for bad in ("1-Feb-94", "Feb-1-1994", "32-Jan-2000", "1 Feb 1994", "", "1-Feb-1994-"):
        with pytest.raises(ImapSyntaxError):
            wire.parse_date(bad)


@pytest.mark.parametrize("name, encoded", [
    ("INBOX", "INBOX"),
    ("Tom & Jerry", "Tom &- Jerry"),
    # RFC 3501 5.1.3's example.
    ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
    ("Entwürfe", "Entw&APw-rfe"),
    ("Papierkorb ✓😀", "Papierkorb &JxPYPd4A-"),
])
def test_modified_utf7_round_trip(name, encoded):
    assert wire.encode_mailbox(name) == encoded
    assert wire.decode_mailbox(encoded) == name
    assert wire.decode_mailbox(encoded.encode("ascii")) == name


@pytest.mark.parametrize("encoded", [
    "&",             # no closing -
    "&U,BTFw",       # no closing -
    "&AGE-",         # encodes printable ASCII "a"
    "&U,BTFw-&ZeVnLIqe-",  # two runs back to back: one run is the only spelling
    "&U/BTFw-",      # "/" instead of ","
    "&U,BTFx-",      # non-zero padding bits
    "&2D0-",         # a lone surrogate
    "&AA-",          # an odd number of octets... and NUL
    "Entwürfe",      # 8-bit
    "tab\there",
    b"caf\xc3\xa9",
])
def test_modified_utf7_strict_decode(encoded):
    with pytest.raises(ImapSyntaxError):
        wire.decode_mailbox(encoded)


@given(st.text(max_size=30))
def test_modified_utf7_any_name_round_trips(name):
    try:
        encoded = wire.encode_mailbox(name)
    except UnicodeEncodeError:  # lone surrogates are not names
        return
    assert encoded.isascii()
    assert wire.decode_mailbox(encoded) == name


@given(st.binary(max_size=40) | st.text(alphabet="&-+,/AZaz09 \x7f", max_size=20))
def test_decode_raises_only_syntax_errors(data):
    try:
        wire.decode_mailbox(data)
    except ImapSyntaxError:
        pass
