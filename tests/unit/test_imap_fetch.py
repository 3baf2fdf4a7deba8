"""FETCH responses: every item and section form, against RFC 3501's examples where it has them."""

import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailforge.protocols.imap import fetch
from mailforge.protocols.imap.envelope import Address, parse_addresses
from mailforge.protocols.imap.mime import UnknownEncoding
from mailforge.speedups import parse_fetch_attributes
from mailforge.store.api import MessageInfo

from .imap_messages import ALTERNATIVE, MALFORMED, MIXED, NESTED, PLAIN, crlf

JULY_17 = datetime.datetime(1996, 7, 17, 9, 44, 25, tzinfo=datetime.UTC).timestamp()


def info(data=PLAIN, flags=("\\Seen",), recent=False):
    return MessageInfo(uid=4827313, flags=frozenset(flags), internal_date=JULY_17,
                       size=len(data), recent=recent)


def respond(items, data=PLAIN, **options):
    return fetch.fetch_response(12, info(data), parse_fetch_attributes(items), data, **options)


def test_rfc3501_fetch_full_example():
    # RFC 3501 7.4.2's example, with this message's size and lines and INTERNALDATE in UTC.
    assert respond("FULL") == (
        b'* 12 FETCH (FLAGS (\\Seen) INTERNALDATE "17-Jul-1996 09:44:25 +0000" '
        b'RFC822.SIZE %d ENVELOPE ("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" '
        b'"IMAP4rev1 WG mtg summary and minutes" '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'((NIL NIL "imap" "cac.washington.edu")) '
        b'((NIL NIL "minutes" "CNRI.Reston.VA.US") ("John Klensin" NIL "KLENSIN" "MIT.EDU")) '
        b'NIL NIL "<B27397-0100000@cac.washington.edu>") '
        b'BODY ("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 45 2))\r\n' % len(PLAIN))


def test_info_only_items_need_no_message():
    items = parse_fetch_attributes(["FLAGS", "UID", "RFC822.SIZE", "INTERNALDATE"])
    assert not fetch.needs_message(items)
    assert fetch.fetch_response(3, info(flags=("\\Seen", "$Junk"), recent=True), items) == (
        b'* 3 FETCH (FLAGS (\\Seen $Junk \\Recent) UID 4827313 RFC822.SIZE %d '
        b'INTERNALDATE "17-Jul-1996 09:44:25 +0000")\r\n' % len(PLAIN))
    assert fetch.needs_message(parse_fetch_attributes("ENVELOPE"))
    with pytest.raises(ValueError):
        fetch.fetch_response(1, info(), parse_fetch_attributes("BODY[]"))


def test_uid_fetch_adds_uid_and_seen_adds_flags():
    assert respond("RFC822.SIZE", uid=True).startswith(b"* 12 FETCH (UID 4827313 RFC822.SIZE")
    assert respond("UID", uid=True) == b"* 12 FETCH (UID 4827313)\r\n"
    assert respond("BODY[TEXT]", flags=True).endswith(b" FLAGS (\\Seen))\r\n")
    assert respond(["FLAGS", "BODY[TEXT]"], flags=True).count(b"FLAGS") == 1


@pytest.mark.parametrize("items, seen", [
    ("BODY[]", True), ("BODY.PEEK[]", False), ("RFC822", True), ("RFC822.TEXT", True),
    ("RFC822.HEADER", False), ("BODY", False), ("BODYSTRUCTURE", False), ("BINARY[1]", True),
    ("BINARY.PEEK[1]", False), ("BINARY.SIZE[1]", False), ("ALL", False),
    (["FLAGS", "BODY[HEADER.FIELDS (From)]"], True),
])
def test_sets_seen(items, seen):
    assert fetch.sets_seen(parse_fetch_attributes(items)) is seen


def test_whole_message_forms():
    header, _, text = PLAIN.partition(b"\r\n\r\n")
    assert respond("RFC822") == b"* 12 FETCH (RFC822 {%d}\r\n%s)\r\n" % (len(PLAIN), PLAIN)
    assert respond("BODY[]") == b"* 12 FETCH (BODY[] {%d}\r\n%s)\r\n" % (len(PLAIN), PLAIN)
    assert respond("RFC822.HEADER") == b"* 12 FETCH (RFC822.HEADER {%d}\r\n%s\r\n\r\n)\r\n" % (
        len(header) + 4, header)
    assert respond("BODY.PEEK[HEADER]") == respond("RFC822.HEADER").replace(
        b"RFC822.HEADER", b"BODY[HEADER]")
    assert respond("RFC822.TEXT") == b"* 12 FETCH (RFC822.TEXT {%d}\r\n%s)\r\n" % (len(text), text)
    assert respond("BODY[TEXT]") == b"* 12 FETCH (BODY[TEXT] {%d}\r\n%s)\r\n" % (len(text), text)


def test_header_fields_echo_the_list_and_keep_folding():
    assert respond("BODY.PEEK[HEADER.FIELDS (Subject CC X-None)]") == (
        b"* 12 FETCH (BODY[HEADER.FIELDS (Subject CC X-None)] {114}\r\n"
        b"Subject: IMAP4rev1 WG mtg summary and minutes\r\n"
        b"cc: minutes@CNRI.Reston.VA.US,\r\n John Klensin <KLENSIN@MIT.EDU>\r\n\r\n)\r\n")
    response = respond("BODY[HEADER.FIELDS.NOT (Return-Path Date From Subject To Cc)]")
    assert response == (b"* 12 FETCH (BODY[HEADER.FIELDS.NOT (Return-Path Date From Subject To Cc)]"
                        b" {51}\r\nMessage-Id: <B27397-0100000@cac.washington.edu>\r\n\r\n)\r\n")


def test_partial():
    assert respond("BODY.PEEK[]<0.6>") == b"* 12 FETCH (BODY[]<0> {6}\r\nReturn)\r\n"
    assert respond("BODY[TEXT]<6.3>") == b"* 12 FETCH (BODY[TEXT]<6> {3}\r\nall)\r\n"
    assert respond("BODY[]<100000.10>") == b"* 12 FETCH (BODY[]<100000> {0}\r\n)\r\n"


def body_of(items, data):
    response = respond(items, data)
    _head, _, rest = response.partition(b"}\r\n")
    assert rest.endswith(b")\r\n")
    return rest[:-3]


@pytest.mark.parametrize("section, expected", [
    ("1", b"Forwarding this."),
    ("1.MIME", b"Content-Type: text/plain\r\n\r\n"),
    ("2.MIME", b"Content-Type: message/rfc822\r\n\r\n"),
    ("2.HEADER.FIELDS (Subject)", b"Subject: Quarterly report\r\n\r\n"),
    ("2.HEADER.FIELDS.NOT (From Subject Message-ID MIME-Version)",
     b"Content-Type: multipart/alternative; boundary=b2\r\n\r\n"),
    ("2.1", b"Plain inner."),
    ("2.2", b"<b>HTML inner.</b>"),
    ("2.2.MIME", b"Content-Type: text/html\r\n\r\n"),
    ("2.1.1", b"Plain inner."),
])
def test_nested_sections(section, expected):
    assert body_of(f"BODY[{section}]", NESTED) == expected


def test_nested_header_text_and_body():
    forwarded = body_of("BODY[2]", NESTED)
    assert forwarded.startswith(b"From: Anna Smith") and forwarded.endswith(b"--b2--\r\n")
    header, text = body_of("BODY[2.HEADER]", NESTED), body_of("BODY[2.TEXT]", NESTED)
    assert header + text == forwarded
    assert header.endswith(b"boundary=b2\r\n\r\n")


@pytest.mark.parametrize("section", ["3", "1.HEADER", "1.TEXT", "2.3", "1.2"])
def test_missing_sections_are_nil(section):
    assert respond(f"BODY[{section}]", NESTED) == f"* 12 FETCH (BODY[{section}] NIL)\r\n".encode()


def test_rfc3501_multipart_body_example():
    # RFC 3501 7.4.2's BODY example, rebuilt: a 1152-octet 23-line text and a 4554-octet
    # 73-line BASE64 diff.
    text = b"".join(b"%-48s\r\n" % b"line" for _ in range(22)) + b"x" * 50 + b"\r\n"
    diff = b"".join(b"A" * 60 + b"\r\n" for _ in range(72)) + b"A" * 88 + b"\r\n"
    message = (b"Content-Type: MULTIPART/MIXED; BOUNDARY=\"sep\"\r\n\r\n--sep\r\n"
               b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n\r\n" + text + b"\r\n--sep\r\n"
               b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII; NAME=cc.diff\r\n"
               b"Content-ID: <960723163407.20117h@cac.washington.edu>\r\n"
               b"Content-Description: Compiler diff\r\nContent-Transfer-Encoding: BASE64\r\n\r\n"
               + diff + b"\r\n--sep--\r\n")
    assert respond("BODY", message) == (
        b'* 12 FETCH (BODY (("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1152 23)'
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII" "NAME" "cc.diff") '
        b'"<960723163407.20117h@cac.washington.edu>" "Compiler diff" "BASE64" 4554 73) '
        b'"MIXED"))\r\n')


def test_bodystructure_of_mixed_message():
    assert respond("BODYSTRUCTURE", MIXED) == (
        b'* 12 FETCH (BODYSTRUCTURE ('
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7BIT" 24 1 NIL NIL NIL NIL)'
        b'("text" "html" ("charset" "us-ascii") NIL NIL "7BIT" 31 1 NIL NIL NIL NIL)'
        b' "alternative" ("boundary" "inner") NIL NIL NIL)'
        b'("application" "pdf" ("name*" "UTF-8\'\'Bericht%20Q1%E2%80%93final.pdf") NIL'
        b' "The report" "base64" 22 NIL ("attachment" ("filename" "report.pdf" "size" "12"))'
        b' ("en" "de") NIL)'
        b'("image" "png" NIL "<logo@example.com>" NIL "base64" 12 NIL ("inline" NIL) NIL'
        b' "http://example.com/logo.png")'
        b' "mixed" ("boundary" "outer") NIL NIL NIL))\r\n')


def test_body_of_nested_message_has_envelope_and_no_extensions():
    assert len(body_of("BODY[2]", NESTED)) == 279
    assert respond("BODY", NESTED) == (
        b'* 12 FETCH (BODY (("text" "plain" NIL NIL NIL "7BIT" 16 1)'
        b'("message" "rfc822" NIL NIL NIL "7BIT" 279 (NIL "Quarterly report" '
        b'(("Anna Smith" NIL "anna" "example.com")) (("Anna Smith" NIL "anna" "example.com")) '
        b'(("Anna Smith" NIL "anna" "example.com")) NIL NIL NIL NIL "<mixed-2@example.com>") '
        b'(("text" "plain" NIL NIL NIL "7BIT" 12 1)("text" "html" NIL NIL NIL "7BIT" 18 1) '
        b'"alternative") 15) "mixed"))\r\n')


def test_bodystructure_with_8bit_header_uses_literals():
    response = respond("BODYSTRUCTURE", crlf(
        "Content-Type: text/plain; name=\"Grüße.txt\"\nContent-Description: Grüße\n\nx"))
    assert b'("name" {11}\r\nGr\xc3\xbc\xc3\x9fe.txt) NIL {7}\r\nGr\xc3\xbc\xc3\x9fe "7BIT"' in response


def test_envelope_of_alternative_keeps_encoded_words():
    response = respond("ENVELOPE", ALTERNATIVE)
    assert response == (
        b'* 12 FETCH (ENVELOPE ("Mon, 2 Mar 2026 10:00:00 +0100" '
        b'"=?UTF-8?B?R3LDvMOfZSBhdXMgS8O2bG4=?=" '
        b'(("=?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?=" NIL "juergen" "example.de")) '
        b'(("=?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?=" NIL "juergen" "example.de")) '
        b'(("=?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?=" NIL "juergen" "example.de")) '
        b'(("Smith, Anna" NIL "anna" "example.com") (NIL NIL "bob" "example.com")) '
        b'NIL NIL NIL "<alt-1@example.de>"))\r\n')


def test_envelope_groups_and_malformed():
    response = respond("ENVELOPE", MIXED)
    assert (b'((NIL NIL "team" NIL) (NIL NIL "carol" "example.com") ("Dave" NIL "dave" '
            b'"example.com") (NIL NIL NIL NIL) (NIL NIL "eve" "example.com"))') in response
    response = respond("ENVELOPE", MALFORMED)
    assert response == (b'* 12 FETCH (ENVELOPE (NIL {7}\r\ncaf\xc3\xa9 \xff '
                        b'(("Mallory" NIL "mallory" "example.net")) '
                        b'(("Mallory" NIL "mallory" "example.net")) '
                        b'(("Mallory" NIL "mallory" "example.net")) NIL NIL NIL NIL NIL))\r\n')


@pytest.mark.parametrize("value, expected", [
    ("undisclosed-recipients:;", [Address(None, None, "undisclosed-recipients", None),
                                  Address(None, None, None, None)]),
    ("a@b (Comment Name)", [Address("Comment Name", None, "a", "b")]),
    ('"Doe, John" <@relay.example:john@example.com>',
     [Address("Doe, John", "@relay.example", "john", "example.com")]),
    ('"john doe"@example.com', [Address(None, None, '"john doe"', "example.com")]),
    ("localonly", [Address(None, None, "localonly", "MISSING_DOMAIN")]),
    ("<>", [Address(None, None, "", "")]),
    ("a@[127.0.0.1], , b@c", [Address(None, None, "a", "[127.0.0.1]"),
                              Address(None, None, "b", "c")]),
    ("a\x01b@c\x00d, \\x", [Address(None, None, "a\x01b", "c\x00d"),
                              Address(None, None, "\\x", "MISSING_DOMAIN")]),
    ("Joe Q. Public <john.q.public@example.com>",
     [Address("Joe Q. Public", None, "john.q.public", "example.com")]),
])
def test_address_parsing(value, expected):
    assert parse_addresses(value) == expected


def test_binary():
    assert body_of("BINARY[2]", MIXED) == b"%PDF-1.4\n%%EOF\n"
    assert respond("BINARY.SIZE[2]", MIXED) == b"* 12 FETCH (BINARY.SIZE[2] 15)\r\n"
    assert body_of("BINARY.PEEK[1.1]", MIXED) == b"See the report attached."
    assert respond("BINARY[3]<0.4>", MIXED) == b"* 12 FETCH (BINARY[3]<0> {4}\r\n\x89PNG)\r\n"
    nul = crlf("Content-Transfer-Encoding: base64\n\nAAEC\n")
    assert respond("BINARY[1]", nul) == b"* 12 FETCH (BINARY[1] ~{3}\r\n\x00\x01\x02)\r\n"
    assert respond("BINARY[9]", MIXED) == b"* 12 FETCH (BINARY[9] NIL)\r\n"
    assert respond("BINARY[]", PLAIN) == respond("BODY[]", PLAIN).replace(b"BODY", b"BINARY")
    with pytest.raises(UnknownEncoding):
        respond("BINARY[1]", crlf("Content-Transfer-Encoding: x-gzip\n\nxx\n"))


def test_split_section():
    assert fetch.split_section("1.2.HEADER.FIELDS") == ([1, 2], "HEADER.FIELDS")
    assert fetch.split_section("") == ([], "")
    assert fetch.split_section("TEXT") == ([], "TEXT")


EVERY_ITEM = parse_fetch_attributes([
    "FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY", "BODYSTRUCTURE", "RFC822",
    "RFC822.HEADER", "RFC822.TEXT", "UID", "BODY[]", "BODY[HEADER]", "BODY[TEXT]",
    "BODY[1]", "BODY[1.MIME]", "BODY[2.HEADER]", "BODY[1.1.TEXT]", "BODY[HEADER.FIELDS (A B)]",
    "BODY[2.HEADER.FIELDS.NOT (A)]<1.5>", "BINARY.SIZE[1]"])

noise = st.lists(st.sampled_from([
    b"\r\n", b"--a", b"--a--", b"Content-Type: multipart/mixed; boundary=a\r\n",
    b"Content-Type: message/rfc822\r\n", b"To: x:<a@b>;, (c\r\n", b"From: \"q\\\r\n",
    b"Content-Disposition: ;=\r\n", b"Content-Language: ,\r\n", b" ", b"x", b"\xff", b"@", b"<",
]), max_size=50).map(b"".join)


@settings(max_examples=200)
@given(noise | st.binary(max_size=200))
def test_any_message_gives_a_well_framed_response(data):
    response = fetch.fetch_response(1, info(data), EVERY_ITEM, data)
    assert response.startswith(b"* 1 FETCH (") and response.endswith(b")\r\n")


@settings(max_examples=500)
@given(st.text(alphabet=st.sampled_from(list('()<>[]:;@\\,". \t\r\nab') + ["\x00", "\x01", "é"]),
               max_size=60))
def test_any_address_list_parses(value):
    for address in parse_addresses(value):
        assert isinstance(address, Address)
        assert b"\r\n" not in address.format() or b"{" in address.format()
