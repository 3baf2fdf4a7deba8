"""ESEARCH (RFC 4731), SEARCHRES (RFC 5182) and WITHIN (RFC 5032): the RETURN options and their
response forms, `$` in every command that takes a set, and OLDER/YOUNGER against a fixed now."""

import time

import pytest

from mailforge.protocols.imap.results import Return, ReturnOptions, sequence_set, split_return
from mailforge.protocols.imap.search import parse_search
from mailforge.protocols.imap.wire import ImapSyntaxError
from mailforge.store.api import MessageInfo

from .imap_memory_store import MemoryMailbox
from .test_imap_machine import Session, logged_in


@pytest.mark.parametrize("numbers, expected", [
    ([], b""), ([7], b"7"), ([1, 2, 3], b"1:3"), ([1, 2, 3, 5, 7, 8], b"1:3,5,7:8"),
    # SORT's order is kept: only ascending runs are joined.
    ([5, 3, 4, 2, 1], b"5,3:4,2,1"),
])
def test_sequence_set_joins_ascending_runs(numbers, expected):
    assert sequence_set(numbers) == expected


def options(*names: str) -> ReturnOptions:
    return split_return(["RETURN", list(names), "ALL"])[0]


@pytest.mark.parametrize("names, numbers, by_uid, expected", [
    ((), [1, 2, 3, 6], False, b'* ESEARCH (TAG "t") ALL 1:3,6'),
    (("ALL",), [1, 2, 3, 6], True, b'* ESEARCH (TAG "t") UID ALL 1:3,6'),
    (("COUNT", "MAX", "MIN"), [4, 9], False, b'* ESEARCH (TAG "t") MIN 4 MAX 9 COUNT 2'),
    (("MIN", "MAX", "ALL", "COUNT"), [5], True,
     b'* ESEARCH (TAG "t") UID MIN 5 MAX 5 ALL 5 COUNT 1'),
    # Nothing found: only COUNT has something to say (RFC 4731 3.1).
    (("MIN", "MAX", "ALL"), [], False, b'* ESEARCH (TAG "t")'),
    (("MIN", "COUNT"), [], True, b'* ESEARCH (TAG "t") UID COUNT 0'),
    (("save", "count"), [1], False, b'* ESEARCH (TAG "t") COUNT 1'),
    # RFC 5267: PARTIAL's window in the result's order, NIL past its end; UPDATE alone: the tag.
    (("PARTIAL", "4:2"), [9, 7, 8, 3, 1], False, b'* ESEARCH (TAG "t") PARTIAL (2:4 7:8,3)'),
    (("COUNT", "PARTIAL", "3:9"), [1, 2], True,
     b'* ESEARCH (TAG "t") UID COUNT 2 PARTIAL (3:9 NIL)'),
    (("UPDATE",), [1, 2], False, b'* ESEARCH (TAG "t")'),
])
def test_esearch_forms(names, numbers, by_uid, expected):
    assert options(*names).esearch("t", numbers, by_uid) == expected + b"\r\n"


def test_return_options_split_off_and_checked():
    assert split_return(["ALL"]) == (ReturnOptions(), ["ALL"])
    assert split_return(["return", [], "CHARSET", "UTF-8", "ALL"]) == (
        ReturnOptions(frozenset({Return.ALL}), extended=True), ["CHARSET", "UTF-8", "ALL"])
    for bad in (["RETURN"], ["RETURN", "MIN", "ALL"], ["RETURN", ["PARTIAL"], "ALL"],
                ["RETURN", [b"MIN"], "ALL"], ["RETURN", ["PARTIAL", "1:*"], "ALL"],
                ["RETURN", ["PARTIAL", "0:1"], "ALL"], ["RETURN", ["PARTIAL", "7"], "ALL"]):
        with pytest.raises(ImapSyntaxError):
            split_return(bad)


@pytest.mark.parametrize("names, kept", [
    (("SAVE",), [3, 5, 8]), (("SAVE", "MIN"), [3]), (("SAVE", "MAX"), [8]),
    (("SAVE", "MIN", "MAX"), [3, 8]), (("SAVE", "MIN", "COUNT"), [3, 5, 8]),
    (("SAVE", "MAX", "ALL"), [3, 5, 8]),
])
def test_save_keeps_min_and_max_alone_when_only_they_are_asked(names, kept):
    returned = options(*names)
    assert returned.saved([3, 5, 8]) == kept
    assert returned.saved([]) == []
    assert returned.reports is (names != ("SAVE",))


NOW = 1_800_000_000.0
AGES = [10_000, 3_600, 600, 59, 0]
INFOS = [MessageInfo(uid, frozenset(), NOW - age, 100) for uid, age in enumerate(AGES, 1)]


@pytest.mark.parametrize("criteria, expected", [
    (["OLDER", "3600"], [1, 2]), (["YOUNGER", "3600"], [3, 4, 5]),
    (["YOUNGER", "60"], [4, 5]), (["OLDER", "60", "YOUNGER", "5000"], [2, 3]),
    (["NOT", "OLDER", "1"], [5]),
])
def test_within_counts_back_from_now(criteria, expected):
    assert parse_search(criteria, now=NOW).run(INFOS) == expected


@pytest.mark.parametrize("criteria", [["OLDER"], ["YOUNGER", "0"], ["OLDER", "-5"],
                                      ["YOUNGER", ["1"]]])
def test_within_needs_a_positive_interval(criteria):
    with pytest.raises(ImapSyntaxError):
        parse_search(criteria, now=NOW)


def test_saved_result_is_a_set_of_uids_in_search_criteria():
    assert parse_search(["$"], saved=[2, 4]).run(INFOS) == [2, 4]
    assert parse_search(["UID", "$"], saved=[5]).run(INFOS) == [5]
    assert parse_search(["NOT", "$"], saved=[1, 2, 3]).run(INFOS) == [4, 5]
    assert parse_search(["$"]).run(INFOS) == []


# --- through the state machine ------------------------------------------------------------------

def folder_of(count: int) -> MemoryMailbox:
    box = MemoryMailbox()
    for n in range(count):
        box.append("INBOX", b"Subject: m%d\r\n\r\nbody\r\n" % n,
                   flags=["\\Seen"] if n % 2 else [], internal_date=time.time() - 1000 * n)
    return box


@pytest.fixture
def session() -> Session:
    session = logged_in(folder_of(6))
    assert b"b OK" in session.send(b"b SELECT INBOX\r\n")
    return session


def test_search_return_forms(session):
    assert session.send(b"c SEARCH RETURN (MIN MAX COUNT ALL) UNSEEN\r\n") == (
        b'* ESEARCH (TAG "c") MIN 1 MAX 5 ALL 1,3,5 COUNT 3\r\nc OK SEARCH completed\r\n')
    assert session.send(b"d UID SEARCH RETURN () CHARSET UTF-8 ALL\r\n") == (
        b'* ESEARCH (TAG "d") UID ALL 1:6\r\nd OK SEARCH completed\r\n')
    # A number past the folder matches nothing, as imaptest's esearch script expects.
    assert session.send(b"e SEARCH RETURN (COUNT) 99\r\n") == (
        b'* ESEARCH (TAG "e") COUNT 0\r\ne OK SEARCH completed\r\n')
    assert session.send(b"f SEARCH RETURN (COUNT) YOUNGER 2500\r\n") == (
        b'* ESEARCH (TAG "f") COUNT 3\r\nf OK SEARCH completed\r\n')
    assert session.send(b"g SEARCH RETURN (BOGUS) ALL\r\n").startswith(b"g BAD")
    # Without RETURN, SEARCH answers as RFC 3501 has it.
    assert session.send(b"h SEARCH SEEN\r\n") == b"* SEARCH 2 4 6\r\nh OK SEARCH completed\r\n"


def test_saved_result_in_later_commands(session):
    assert session.send(b"c SEARCH RETURN (SAVE) SEEN\r\n") == b"c OK SEARCH completed\r\n"
    assert session.send(b"d FETCH $ (UID)\r\n") == (
        b"* 2 FETCH (UID 2)\r\n* 4 FETCH (UID 4)\r\n* 6 FETCH (UID 6)\r\nd OK FETCH completed\r\n")
    assert session.send(b"e UID SEARCH $\r\n") == b"* SEARCH 2 4 6\r\ne OK SEARCH completed\r\n"
    # `$` in the search that saves is the previous result; MIN and MAX alone save just them.
    assert session.send(b"f SEARCH RETURN (SAVE MIN MAX) $ NOT 6\r\n") == (
        b'* ESEARCH (TAG "f") MIN 2 MAX 4\r\nf OK SEARCH completed\r\n')
    assert session.send(b"g UID STORE $ +FLAGS.SILENT (\\Deleted)\r\n") == (
        b"g OK STORE completed\r\n")
    assert session.send(b"h SEARCH DELETED\r\n") == b"* SEARCH 2 4\r\nh OK SEARCH completed\r\n"
    # Expunged messages leave the saved result.
    assert session.send(b"i EXPUNGE\r\n").startswith(b"* 4 EXPUNGE\r\n* 2 EXPUNGE\r\n")
    assert session.send(b"j FETCH $ (UID)\r\n") == b"j OK FETCH completed\r\n"


def test_saved_result_is_emptied_by_a_failed_save_and_by_select(session):
    session.send(b"c SEARCH RETURN (SAVE) ALL\r\n")
    assert session.send(b"d SEARCH RETURN (SAVE) CHARSET KOI8-R ALL\r\n").startswith(
        b"d NO [BADCHARSET")
    assert session.send(b"e SEARCH $\r\n") == b"* SEARCH\r\ne OK SEARCH completed\r\n"
    session.send(b"f SEARCH RETURN (SAVE) ALL\r\n")
    session.send(b"g SELECT INBOX\r\n")
    assert session.send(b"h UID COPY $ INBOX\r\n") == b"h OK COPY completed\r\n"
    assert session.send(b"i SEARCH $\r\n") == b"* SEARCH\r\ni OK SEARCH completed\r\n"


def test_capabilities_name_the_search_family(session):
    caps = session.send(b"c CAPABILITY\r\n").split(b"\r\n")[0].split()
    assert {b"ESEARCH", b"SEARCHRES", b"WITHIN"} <= set(caps)
