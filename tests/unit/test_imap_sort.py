"""SORT (RFC 5256) and SORT=DISPLAY (RFC 5957) as pure functions over candidates: criteria
parsing, each key, REVERSE, several keys, and the sequence-number tie-break."""

import pytest

from mailforge.protocols.imap.mime import read_header
from mailforge.protocols.imap.sort import (
    Candidate,
    Criterion,
    SortKey,
    needs_header,
    parse_criteria,
    sent_date,
    sort_messages,
)
from mailforge.protocols.imap.wire import ImapSyntaxError
from mailforge.store.api import MessageInfo


def candidate(sequence: int, header: str = "", arrival: float = 0.0, size: int = 0) -> Candidate:
    data = header.replace("\n", "\r\n").encode("utf-8") + b"\r\n"
    return Candidate(sequence, MessageInfo(sequence * 10, frozenset(), arrival, size),
                     read_header(data, 0, len(data)))


def order(criteria: bytes | list, candidates: list[Candidate]) -> list[int]:
    parsed = parse_criteria(criteria)
    return [c.sequence for c in sort_messages(parsed, candidates)]


def test_criteria_parse():
    assert parse_criteria(["reverse", "Date", "SUBJECT"]) == [
        Criterion(SortKey.DATE, reverse=True), Criterion(SortKey.SUBJECT)]
    for bad in ("DATE", [], ["REVERSE"], ["REVERSE", "REVERSE", "DATE"], ["BOGUS"], [b"DATE"],
                ["DATE", "REVERSE"]):
        with pytest.raises(ImapSyntaxError):
            parse_criteria(bad)
    assert not needs_header(parse_criteria(["ARRIVAL", "REVERSE", "SIZE"]))
    assert needs_header(parse_criteria(["SIZE", "CC"]))


MESSAGES = [
    candidate(1, "Subject: Re: beta\nFrom: Zed <zed@x.test>\nTo: bob@b.test\n"
                 "Date: Mon, 2 Mar 2026 10:00:00 +0100", arrival=300, size=50),
    candidate(2, "Subject: alpha\nFrom: \"Adam\" <yves@x.test>\nCc: amy@c.test, zoe@c.test\n"
                 "Date: Mon, 2 Mar 2026 08:30:00 -0100", arrival=100, size=70),
    candidate(3, "Subject: [list] Beta (fwd)\nFrom: bert@x.test\nTo: Alice <ALICE@a.test>\n"
                 "Date: garbage", arrival=200, size=50),
    candidate(4, "From: =?utf-8?q?=C3=89mile?= <emile@x.test>\nCc: Bob <bob@c.test>\n",
              arrival=200, size=10),
]


@pytest.mark.parametrize("criteria, expected", [
    (["ARRIVAL"], [2, 3, 4, 1]),
    (["REVERSE", "ARRIVAL"], [1, 3, 4, 2]),   # equals stay in sequence order, REVERSE or not
    (["SIZE"], [4, 1, 3, 2]),
    (["SIZE", "REVERSE", "ARRIVAL"], [4, 1, 3, 2]),
    # No Date: (4) or one that cannot be read (3): INTERNALDATE stands in (the epoch's 200 s).
    # 1 is 09:00 UTC, 2 is 09:30 UTC.
    (["DATE"], [3, 4, 1, 2]),
    (["REVERSE", "DATE"], [2, 1, 3, 4]),
    # Base subjects: "" (4), ALPHA, BETA, BETA.
    (["SUBJECT"], [4, 2, 1, 3]),
    (["SUBJECT", "REVERSE", "SIZE"], [4, 2, 1, 3]),
    (["REVERSE", "SUBJECT", "REVERSE", "ARRIVAL"], [1, 3, 2, 4]),
    # The first address's local part: bert, emile, yves, zed.
    (["FROM"], [3, 4, 2, 1]),
    (["TO"], [2, 4, 3, 1]),                    # none, none, ALICE, bob
    (["CC"], [1, 3, 2, 4]),                    # none, none, amy, bob
    # Display names, else mailbox@host: Adam, bert@x.test, Émile, Zed.
    (["DISPLAYFROM"], [2, 3, 4, 1]),
    (["DISPLAYTO"], [2, 4, 3, 1]),             # none, none, Alice, bob@b.test
])
def test_sort_orders(criteria, expected):
    assert order(criteria, MESSAGES) == expected


def test_sent_date_takes_the_zone_and_falls_back_to_internaldate():
    assert sent_date(MESSAGES[0]) == 1_772_442_000.0  # 2026-03-02 09:00 UTC
    assert sent_date(MESSAGES[2]) == 200
    assert sent_date(MESSAGES[3]) == 200


def test_ascii_casemap_orders_underscore_after_letters():
    # i;ascii-casemap compares upper case: "_" (0x5F) comes after "A".."Z".
    underscore, apple = candidate(1, "Subject: _"), candidate(2, "Subject: apple")
    assert order(["SUBJECT"], [underscore, apple]) == [2, 1]
