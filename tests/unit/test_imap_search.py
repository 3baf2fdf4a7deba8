"""SEARCH criteria: every RFC 3501 key, parsed from what the command parser gives, evaluated
against MessageInfo and, only when a key needs it, the message's bytes."""

import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailforge.protocols.imap import search
from mailforge.protocols.imap.envelope import address_text
from mailforge.protocols.imap.search import BadCharset, parse_search
from mailforge.protocols.imap.wire import ImapSyntaxError
from mailforge.speedups import CommandParser
from mailforge.store.api import MessageInfo, StoreError

from .imap_messages import ALTERNATIVE, MALFORMED, MIXED, NESTED, PLAIN, crlf

QP_HTML = crlf("""\
From: shop@example.org
To: anna@example.com
Bcc: audit@example.org
Subject: =?ISO-8859-1?Q?Ihre_Bestellung_=FCber?= =?ISO-8859-1?Q?_Stra=DFe?=
Date: Sat, 28 Feb 2026 23:30:00 -0800
Content-Type: text/html; charset=iso-8859-1
Content-Transfer-Encoding: base64

PHA+QmVzdGVsbG51bW1lciA0Mi1TdHJh32U8L3A+
""")

MESSAGES = [PLAIN, ALTERNATIVE, MIXED, NESTED, QP_HTML, MALFORMED]
DAY = 86400
MARCH_1 = datetime.datetime(2026, 3, 1, tzinfo=datetime.UTC).timestamp()
INFOS = [
    MessageInfo(uid=10, flags=frozenset({"\\Seen", "\\Answered"}), internal_date=MARCH_1 - 1,
                size=len(PLAIN)),
    MessageInfo(uid=20, flags=frozenset({"\\Flagged", "$Work"}), internal_date=MARCH_1,
                size=len(ALTERNATIVE), recent=True),
    MessageInfo(uid=30, flags=frozenset({"\\Seen", "\\Deleted"}), internal_date=MARCH_1 + DAY,
                size=len(MIXED), recent=True),
    MessageInfo(uid=40, flags=frozenset({"\\Draft"}), internal_date=MARCH_1 + 2 * DAY - 1,
                size=len(NESTED)),
    MessageInfo(uid=55, flags=frozenset(), internal_date=MARCH_1 + 3 * DAY, size=len(QP_HTML)),
    MessageInfo(uid=99, flags=frozenset({"\\Seen"}), internal_date=MARCH_1 + 4 * DAY,
                size=len(MALFORMED)),
]
BY_UID = {info.uid: data for info, data in zip(INFOS, MESSAGES, strict=True)}


def args(criteria: bytes) -> list:
    """The SEARCH arguments as the real command parser gives them."""
    command, _ = CommandParser().feed(b"t SEARCH " + criteria + b"\r\n")
    assert command is not None
    return command.args


def run(criteria: bytes, reads: list | None = None) -> list[int]:
    def load(uid):
        if reads is not None:
            reads.append(uid)
        return BY_UID[uid]
    return parse_search(args(criteria)).run(INFOS, load)


@pytest.mark.parametrize("criteria, expected", [
    (b"ALL", [1, 2, 3, 4, 5, 6]),
    (b"ANSWERED", [1]), (b"UNANSWERED", [2, 3, 4, 5, 6]),
    (b"DELETED", [3]), (b"UNDELETED", [1, 2, 4, 5, 6]),
    (b"DRAFT", [4]), (b"UNDRAFT", [1, 2, 3, 5, 6]),
    (b"FLAGGED", [2]), (b"UNFLAGGED", [1, 3, 4, 5, 6]),
    (b"SEEN", [1, 3, 6]), (b"UNSEEN", [2, 4, 5]),
    (b"KEYWORD $work", [2]), (b"UNKEYWORD $Work", [1, 3, 4, 5, 6]),
    (b"RECENT", [2, 3]), (b"OLD", [1, 4, 5, 6]), (b"NEW", [2]),
    (b"BEFORE 1-Mar-2026", [1]), (b"ON 1-Mar-2026", [2]), (b"SINCE 2-Mar-2026", [3, 4, 5, 6]),
    (b'ON "02-MAR-2026"', [3, 4]),
    (b"LARGER %d" % len(NESTED), [2, 3]), (b"SMALLER %d" % len(QP_HTML), [6]),
    (b"2,4:5", [2, 4, 5]), (b"5:*", [5, 6]), (b"*", [6]), (b"7:*", [6]), (b"9", []),
    (b"UID 20:40", [2, 3, 4]), (b"UID 100:*", [6]), (b"UID 11:19", []),
    (b"NOT SEEN", [2, 4, 5]), (b"OR DRAFT FLAGGED", [2, 4]), (b"(SEEN DELETED)", [3]),
    (b"NOT (SEEN OR UID 10 1:2)", [2, 3, 4, 5, 6]),
    (b"OR (SEEN DELETED) (NOT 1:5)", [3, 6]),
    (b"SEEN UNDELETED 1:3", [1]),
])
def test_keys_that_read_no_message(criteria, expected):
    reads = []
    assert run(criteria, reads) == expected
    assert reads == []
    assert not parse_search(args(criteria)).needs_message


@pytest.mark.parametrize("criteria, expected", [
    (b"FROM gray", [1]), (b"FROM \"M\xc3\xbcller\"", [2]), (b"FROM EXAMPLE.COM", [3, 4]),
    (b"TO imap@cac", [1]), (b"TO bob", [2]), (b"TO dave", [3]),
    (b"CC klensin", [1]), (b"BCC audit", [5]),
    (b"SUBJECT minutes", [1]), (b"SUBJECT \"gr\xc3\xbc\xc3\x9fe\"", [2]),
    (b"SUBJECT \"\xc3\xbcber stra\xc3\x9fe\"", [5]), (b"SUBJECT quarterly", [3, 4]),
    (b"HEADER Message-ID mixed", [3]), (b"HEADER MESSAGE-ID \"\"", [1, 2, 3]),
    (b"HEADER X-Missing \"\"", []),
    (b"BODY \"k\xc3\xb6ln\"", [2]),       # quoted-printable UTF-8 decoded
    (b"BODY \"stra\xc3\x9fe\"", [5]),        # base64 ISO-8859-1 decoded
    (b"BODY \"plain inner\"", [4]),      # inside the forwarded message
    (b"BODY minutes", [1]), (b"BODY Quarterly", []),
    (b"TEXT Quarterly", [3, 4]), (b"TEXT \"final line\"", [6]),
    (b"BODY \"JVBERi0\"", []),            # attachments are not text
    (b"SENTBEFORE 1-Mar-2026", [1, 5]),  # the sender's own date: 28 Feb, not 1 Mar UTC
    (b"SENTON 2-Mar-2026", [2]), (b"SENTSINCE 4-Mar-2026", [4]),
    (b"CHARSET UTF-8 SUBJECT {5+}\r\nk\xc3\xb6ln", [2]),
    (b"charset us-ascii FROM anna", [3]),
])
def test_keys_that_read_the_message(criteria, expected):
    assert run(criteria) == expected
    assert parse_search(args(criteria)).needs_message


@pytest.mark.parametrize("value, text", [
    ("<user-from (comment)@ (comment) domain.org>", "user-from@domain.org"),
    ("user@domain.org (Real Name)", "Real Name <user@domain.org>"),
    ('"Doe, John" <john@example.org>, jane@example.org', "Doe, John <john@example.org>, "
                                                          "jane@example.org"),
    ("team: a@example.org, b@example.org;", "team:, a@example.org, b@example.org, ;"),
    ("undisclosed", "undisclosed"),
    ("<>", ""),
])
def test_address_text_drops_comments_and_keeps_names_and_groups(value, text):
    assert address_text(value) == text


@pytest.mark.parametrize("criteria, expected", [
    (b'FROM "user-from@domain.org"', [1, 2]), (b"FROM comment", []), (b"FROM realname", [2]),
    (b'FROM "m\xc3\xbcller"', [3]), (b'HEADER From "comment"', [1]),
])
def test_address_keys_match_without_comments(criteria, expected):
    messages = [b"From: <user-from (comment)@ (comment) domain.org>\r\n\r\nbody\r\n",
                b"From: user-from@domain.org (RealName)\r\n\r\nbody\r\n",
                b"From: =?utf-8?q?M=C3=BCller?= <m@example.org>\r\n\r\nbody\r\n"]
    infos = [MessageInfo(uid=n, flags=frozenset(), internal_date=0.0, size=len(data))
             for n, data in enumerate(messages, 1)]
    found = parse_search(args(criteria)).run(infos, lambda uid: messages[uid - 1])
    assert found == expected


def test_cheap_keys_rule_messages_out_before_any_read():
    reads = []
    assert run(b"BODY minutes SEEN ANSWERED", reads) == [1]
    assert reads == [10]
    reads.clear()
    assert run(b"OR SUBJECT nothing-like-this UID 30", reads) == [3]
    assert 30 not in reads
    reads.clear()
    assert run(b"NOT FROM gray 1", reads) == []
    assert reads == [10]


def test_each_message_is_read_and_parsed_once():
    reads = []
    run(b"FROM a SUBJECT b BODY c TEXT d HEADER To e SENTON 1-Mar-2026", reads)
    assert sorted(reads) == [10, 20, 30, 40, 55, 99]


def test_a_message_expunged_during_the_search_is_left_out():
    def load(uid):
        if uid == 20:
            raise StoreError("gone")
        return BY_UID[uid]
    assert parse_search(args(b"NOT BODY nothing-like-this")).run(INFOS, load) == [1, 3, 4, 5, 6]


def test_an_empty_mailbox():
    assert parse_search(args(b"*")).run([]) == []


@pytest.mark.parametrize("criteria", [
    b"CHARSET ISO-8859-1 FROM x", b'CHARSET "KOI8-R" ALL', b"CHARSET x-unknown ALL",
])
def test_bad_charset(criteria):
    with pytest.raises(BadCharset):
        parse_search(args(criteria))


@pytest.mark.parametrize("criteria", [
    b"", b"FROB", b"FROM", b"OR SEEN", b"NOT", b"LARGER x", b"LARGER -1", b"SMALLER (1)",
    b"BEFORE 31-Feb-2026", b"SINCE yesterday", b"ON (1-Mar-2026)", b"UID x", b"UID \"1\"",
    b"0", b"1:0", b"1,,2", b"\"quoted\"", b"()", b"KEYWORD \"$x\"", b"CHARSET",
    b"CHARSET UTF-8 BODY {1+}\r\n\xff", b"HEADER (a) b", b"SEEN ()",
])
def test_bad_criteria(criteria):
    with pytest.raises(ImapSyntaxError):
        parse_search(args(criteria))


def test_nesting_and_key_count_are_bounded():
    parse_search(["NOT"] * (search.MAX_DEPTH - 1) + ["SEEN"])
    with pytest.raises(ImapSyntaxError):
        parse_search(["NOT"] * (search.MAX_DEPTH + 1) + ["SEEN"])
    nested: list = ["SEEN"]
    for _ in range(search.MAX_DEPTH + 1):
        nested = [nested]
    with pytest.raises(ImapSyntaxError):
        parse_search(nested)
    parse_search(["SEEN"] * search.MAX_KEYS)
    with pytest.raises(ImapSyntaxError):
        parse_search(["SEEN"] * (search.MAX_KEYS + 1))


tokens = st.recursive(
    st.sampled_from(["ALL", "SEEN", "NOT", "OR", "FROM", "UID", "1:*", "*", "BEFORE", "LARGER",
                     "1-Feb-1994", "10", "HEADER", "CHARSET", "UTF-8", "x", "0", "1:0"])
    | st.binary(max_size=5),
    lambda children: st.lists(children, max_size=4), max_leaves=30)


@settings(max_examples=300)
@given(st.lists(tokens, max_size=12))
def test_any_arguments_parse_or_raise_our_errors(arguments):
    try:
        query = parse_search(arguments)
    except (ImapSyntaxError, BadCharset):
        return
    hits = query.run(INFOS, BY_UID.__getitem__)
    assert set(hits) <= set(range(1, len(INFOS) + 1))


@pytest.mark.parametrize("criteria, by_modseq", [
    (["MODSEQ", "5"], True),
    (["OR", "SEEN", ["MODSEQ", b"/flags/\\draft", "all", "7"]], True),
    (["SUBJECT", "modseq"], False),  # the word as a value, not the key
    (["HEADER", "MODSEQ", "x"], False),
    (["ALL"], False),
])
def test_a_search_by_modseq_is_known_by_its_key(criteria, by_modseq):
    assert parse_search(criteria).by_modseq is by_modseq
