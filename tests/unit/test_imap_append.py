"""APPEND with MULTIAPPEND (RFC 3502) by transcript, over the in-memory store."""

from __future__ import annotations

import pytest

from .imap_memory_store import MemoryMailbox
from .test_imap_machine import MESSAGE, logged_in

DATE = b'"05-Nov-2026 16:29:44 +0100"'


@pytest.fixture
def session():
    return logged_in(MemoryMailbox())


def literal(data: bytes) -> bytes:
    return b"{%d+}\r\n%s" % (len(data), data)


def test_several_messages_with_and_without_flags_and_dates(session):
    command = (b"a APPEND INBOX " + literal(MESSAGE) + b" (\\Seen) " + DATE + b" "
               + literal(MESSAGE) + b" " + DATE + b" " + literal(MESSAGE) + b" (\\Flagged) "
               + literal(MESSAGE) + b"\r\n")
    assert session.send(command) == b"a OK [APPENDUID 1700000000 1,2,3,4] APPEND completed\r\n"
    infos = {uid: info for uid, (info, _) in session.machine.mailbox.data["INBOX"].items()}
    assert infos[2].flags == {"\\Seen"} and infos[4].flags == {"\\Flagged"}
    assert infos[2].internal_date == infos[3].internal_date == 1793892584.0


def test_synchronizing_literals_each_get_a_continuation(session):
    assert session.send(b"a APPEND INBOX {%d}\r\n" % len(MESSAGE)) == b"+ Ready for literal data\r\n"
    assert session.send(MESSAGE + b" {%d}\r\n" % len(MESSAGE)) == b"+ Ready for literal data\r\n"
    assert session.send(MESSAGE + b"\r\n") == \
        b"a OK [APPENDUID 1700000000 1,2] APPEND completed\r\n"


@pytest.mark.parametrize("tail", [
    b" " + literal(MESSAGE) + b" (\\Seen)",            # flags without their message
    b" " + literal(MESSAGE) + b' "not a date" ' + literal(MESSAGE),
    b" " + literal(MESSAGE) + b" NIL " + literal(MESSAGE),
])
def test_a_bad_message_anywhere_stores_none(session, tail):
    assert session.send(b"a APPEND INBOX" + tail + b"\r\n").startswith(b"a BAD ")
    assert session.machine.mailbox.data["INBOX"] == {}


def test_an_empty_message_stores_none(session):
    reply = session.send(b"a APPEND INBOX " + literal(MESSAGE) + b" {0+}\r\n\r\n")
    assert reply == b"a NO [CANNOT] Cannot append an empty message\r\n"
    assert session.machine.mailbox.data["INBOX"] == {}
