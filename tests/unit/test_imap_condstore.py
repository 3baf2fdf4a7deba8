"""CONDSTORE and QRESYNC (RFC 7162) responses of the IMAP machine, over the in-memory store."""

import pytest

from mailforge.store.api import FlagMode

from .imap_memory_store import MemoryMailbox
from .test_imap_machine import MESSAGE, Session


@pytest.fixture
def session() -> Session:
    box = MemoryMailbox()
    for n in range(4):
        box.append("INBOX", MESSAGE)  # MODSEQs 2..5: a new folder is at 1
    s = Session(box)
    s.send(b"a LOGIN alice@example.test secret\r\n")
    return s


def lines(reply: bytes) -> list[bytes]:
    return reply.splitlines()


def test_capabilities_and_enable(session):
    assert b"CONDSTORE QRESYNC" in session.send(b"c CAPABILITY\r\n")
    assert lines(session.send(b"e ENABLE QRESYNC X-UNKNOWN\r\n")) == [
        b"* ENABLED CONDSTORE QRESYNC", b"e OK ENABLE completed"]
    assert lines(session.send(b"f ENABLE CONDSTORE\r\n"))[0] == b"* ENABLED"


def test_select_reports_highestmodseq_and_status_asks_for_it(session):
    assert b"* OK [HIGHESTMODSEQ 5] Highest" in lines(session.send(b"s SELECT INBOX\r\n"))
    assert b"* STATUS INBOX (HIGHESTMODSEQ 5 MESSAGES 4)" in lines(
        session.send(b"t STATUS INBOX (HIGHESTMODSEQ MESSAGES)\r\n"))


def test_fetch_modseq_turns_condstore_on_and_store_reports_modseqs(session):
    session.send(b"s SELECT INBOX\r\n")
    assert lines(session.send(b"f FETCH 2 (FLAGS MODSEQ)\r\n")) == [
        b"* OK [HIGHESTMODSEQ 5] Highest", b"* 2 FETCH (FLAGS () MODSEQ (3))",
        b"f OK FETCH completed"]
    assert lines(session.send(b"g STORE 1 +FLAGS (\\Seen)\r\n"))[0] == \
        b"* 1 FETCH (FLAGS (\\Seen) MODSEQ (6))"
    assert lines(session.send(b"h STORE 3 +FLAGS.SILENT (\\Seen)\r\n"))[0] == \
        b"* 3 FETCH (MODSEQ (7))"
    assert lines(session.send(b"i FETCH 1:* (UID) (CHANGEDSINCE 5)\r\n")) == [
        b"* 1 FETCH (UID 1 MODSEQ (6))", b"* 3 FETCH (UID 3 MODSEQ (7))",
        b"i OK FETCH completed"]


def test_store_unchangedsince_names_the_modified_messages(session):
    session.send(b"s SELECT INBOX\r\n")
    session.send(b"a STORE 2 +FLAGS.SILENT (\\Flagged)\r\n")  # 2 now has MODSEQ 6
    reply = lines(session.send(b"b STORE 1:3 (UNCHANGEDSINCE 5) +FLAGS (\\Seen)\r\n"))
    assert reply[-1] == b"b OK [MODIFIED 2] Conditional STORE failed"
    assert reply[0] == b"* OK [HIGHESTMODSEQ 6] Highest"  # with the session's own STORE
    assert b"* 1 FETCH (FLAGS (\\Seen) MODSEQ (7))" in reply
    assert not any(line.startswith(b"* 2 FETCH") for line in reply)
    uid_reply = lines(session.send(b"c UID STORE 2 (UNCHANGEDSINCE 1) FLAGS ()\r\n"))
    assert uid_reply[-1] == b"c OK [MODIFIED 2] Conditional STORE failed"


def test_search_modseq_reports_the_highest_found(session):
    session.send(b"s SELECT INBOX\r\n")
    session.send(b"a STORE 2 +FLAGS (\\Seen)\r\n")
    assert lines(session.send(b"b SEARCH MODSEQ 4\r\n"))[-2:] == [
        b"* SEARCH 2 3 4 (MODSEQ 6)", b"b OK SEARCH completed"]
    assert lines(session.send(b'c SEARCH RETURN (MIN) MODSEQ "/flags/\\\\seen" all 4\r\n'))[0] \
        == b'* ESEARCH (TAG "c") MIN 2 MODSEQ 6'
    assert lines(session.send(b"d SEARCH MODSEQ 7\r\n"))[0] == b"* SEARCH"


def test_qresync_select_reports_vanished_and_changed_then_vanished_replaces_expunge(session):
    session.send(b"e ENABLE QRESYNC\r\n")
    session.send(b"s SELECT INBOX\r\n")
    other = session.machine.mailbox.select("INBOX")
    other.set_flags([3], ["\\Flagged"], FlagMode.ADD)
    other.expunge_by_other(2)
    session.send(b"u UNSELECT\r\n")
    reply = lines(session.send(b"q SELECT INBOX (QRESYNC (1700000000 5 1:4))\r\n"))
    assert b"* VANISHED (EARLIER) 2" in reply
    assert b"* 2 FETCH (UID 3 FLAGS (\\Flagged) MODSEQ (6))" in reply
    assert reply.index(b"* VANISHED (EARLIER) 2") < reply.index(
        b"* 2 FETCH (UID 3 FLAGS (\\Flagged) MODSEQ (6))")
    session.send(b"d STORE 1 +FLAGS.SILENT (\\Deleted)\r\n")
    assert lines(session.send(b"x EXPUNGE\r\n"))[0] == b"* VANISHED 1"
    assert lines(session.send(b"v UID FETCH 1:* (FLAGS) (CHANGEDSINCE 5 VANISHED)\r\n"))[0] == \
        b"* VANISHED (EARLIER) 1:2"


def test_qresync_needs_enabling_and_a_wrong_uidvalidity_gets_no_resync(session):
    assert b"BAD" in session.send(b"q SELECT INBOX (QRESYNC (1700000000 1))\r\n")
    session.send(b"e ENABLE QRESYNC\r\n")
    reply = session.send(b"q SELECT INBOX (QRESYNC (42 1))\r\n")
    assert b"VANISHED" not in reply and b"FETCH" not in reply and b"q OK" in reply


@pytest.mark.parametrize("params", [b"CONDSTORE condstore", b"CONDSTORE X-UNKNOWN"])
def test_a_bad_select_parameter_list_turns_condstore_on_nowhere(session, params):
    """A parameter given twice is BAD like an unknown one, and a BAD SELECT enables nothing:
    the STORE after it reports no MODSEQ."""
    assert lines(session.send(b"s SELECT INBOX (%s)\r\n" % params))[-1].startswith(b"s BAD ")
    session.send(b"t SELECT INBOX\r\n")
    assert b"MODSEQ" not in session.send(b"f STORE 1 +FLAGS (\\Seen)\r\n")
