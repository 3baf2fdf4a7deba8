"""The IMAP state machine by transcript: raw client lines through the real command parser,
the machine's exact replies, over an in-memory store (the system tests use the real one)."""

from __future__ import annotations

import base64

import pytest

from mailforge.protocols.imap import messages
from mailforge.protocols.imap.state import IMAPMachine, IMAPSettings, State
from mailforge.protocols.session import Action
from mailforge.speedups import CommandParser, ParseError

from .imap_memory_store import MemoryMailbox

USER, PASSWORD = "alice@example.test", "secret"
MESSAGE = b"From: bob@example.test\r\nSubject: hi\r\n\r\nhello\r\n"


class Accounts:
    def check_password(self, address: str, password: str) -> bool:
        return address.lower() == USER and password == PASSWORD


class Session:
    """A machine and the parser in front of it, driven the way protocols/imapd.py does."""

    def __init__(self, mailbox: MemoryMailbox, tls: bool = True, plaintext: bool = False) -> None:
        settings = IMAPSettings("mx.example.test", tls_available=True,
                                allow_plaintext_auth=plaintext, max_append=1000)
        self.machine = IMAPMachine(settings, Accounts(), lambda user: mailbox, tls_active=tls)
        self.parser = CommandParser(max_literal=1000)

    def send(self, data: bytes) -> bytes:
        out = []
        while data:
            try:
                command, used = self.parser.feed(data)
            except ParseError as exc:
                out.append(self.machine.parse_error(exc).text)
                data = data[exc.consumed:]
                continue
            data = data[used:]
            if command is None:
                if self.parser.wants_continuation:
                    out.append(b"+ Ready for literal data\r\n")
                continue
            reply = self.machine.handle(command)
            if reply.action is Action.OPEN_MAILDROP:
                reply = self.machine.mailbox_opened()
            out.append(reply.text)
        return b"".join(out)


@pytest.fixture
def mailbox() -> MemoryMailbox:
    box = MemoryMailbox()
    for n in range(3):
        box.append("INBOX", MESSAGE.replace(b"hi", b"hi %d" % n))
    return box


def logged_in(mailbox: MemoryMailbox) -> Session:
    session = Session(mailbox)
    assert session.send(b'a LOGIN alice@example.test "secret"\r\n').startswith(b"a OK [CAPABILITY")
    return session


def test_greeting_and_capabilities_follow_tls(mailbox):
    plain = Session(mailbox, tls=False)
    greeting = plain.machine.greeting()
    assert greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 ") and b"STARTTLS" in greeting
    assert b"LOGINDISABLED" in greeting and b"AUTH=PLAIN" not in greeting
    reply = plain.send(b"a LOGIN alice@example.test secret\r\n")
    assert reply == (b"a NO [PRIVACYREQUIRED] Plaintext authentication disallowed on "
                     b"non-secure connections; use STARTTLS first\r\n")
    assert plain.send(b"b STARTTLS\r\n") == b"b OK Begin TLS negotiation now\r\n"
    plain.machine.tls_started()
    caps = plain.send(b"c CAPABILITY\r\n")
    assert b"AUTH=PLAIN" in caps and b"STARTTLS" not in caps and b"LOGINDISABLED" not in caps


def test_login_select_and_states(mailbox):
    session = Session(mailbox)
    assert session.send(b"a SELECT INBOX\r\n") == b"a BAD SELECT is not valid in this state\r\n"
    assert session.send(b"b LOGIN alice@example.test wrong\r\n") == \
        b"b NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
    session.send(b"c LOGIN ALICE@example.test secret\r\n")
    assert session.machine.state is State.AUTHENTICATED and session.machine.user == USER
    reply = session.send(b"d SELECT inbox\r\n")
    assert reply.splitlines() == [
        b"* FLAGS (\\Answered \\Deleted \\Draft \\Flagged \\Seen)",
        b"* OK [PERMANENTFLAGS (\\* \\Answered \\Deleted \\Draft \\Flagged \\Seen)] Flags permitted",
        b"* 3 EXISTS", b"* 0 RECENT", b"* OK [UNSEEN 1] First unseen message",
        b"* OK [UIDVALIDITY 1700000000] UIDs valid", b"* OK [UIDNEXT 4] Predicted next UID",
        b"* OK [HIGHESTMODSEQ 4] Highest", b"d OK [READ-WRITE] SELECT completed"]
    assert session.send(b"e LOGOUT\r\n") == b"* BYE Logging out\r\ne OK LOGOUT completed\r\n"
    assert session.machine.state is State.LOGOUT


def test_authenticate_plain_with_and_without_initial_response(mailbox):
    token = base64.b64encode(b"\0alice@example.test\0secret")
    session = Session(mailbox)
    assert session.send(b"a AUTHENTICATE PLAIN " + token + b"\r\n").startswith(b"a OK [CAPABILITY")
    session = Session(mailbox)
    assert session.send(b"a AUTHENTICATE PLAIN\r\n") == b"+ \r\n"
    assert session.machine.in_sasl
    assert session.machine.sasl_line(b"*").text == b"a BAD Authentication cancelled\r\n"
    assert session.send(b"b AUTHENTICATE NTLM\r\n") == \
        b"b NO [CANNOT] Unsupported authentication mechanism\r\n"


def test_fetch_store_expunge_with_sequence_numbers(mailbox):
    session = logged_in(mailbox)
    session.send(b"s SELECT INBOX\r\n")
    assert session.send(b"f FETCH 2 (UID RFC822.SIZE)\r\n") == \
        b"* 2 FETCH (UID 2 RFC822.SIZE %d)\r\nf OK FETCH completed\r\n" % len(MESSAGE.replace(b"hi", b"hi 1"))
    reply = session.send(b"g FETCH 1 BODY[]\r\n")
    assert b"BODY[] {" in reply and b"FLAGS (\\Seen)" in reply
    assert session.send(b"h STORE 1:2 +FLAGS.SILENT (\\Deleted)\r\n") == b"h OK STORE completed\r\n"
    assert session.send(b"i EXPUNGE\r\n") == \
        b"* 2 EXPUNGE\r\n* 1 EXPUNGE\r\ni OK EXPUNGE completed\r\n"
    assert session.send(b"j UID FETCH 1:* FLAGS\r\n") == \
        b"* 1 FETCH (UID 3 FLAGS ())\r\nj OK FETCH completed\r\n"
    assert session.send(b"k FETCH 2 FLAGS\r\n") == b"k BAD Invalid sequence number\r\n"


def test_changes_by_another_session_are_reported_at_noop(mailbox):
    first, second = logged_in(mailbox), logged_in(mailbox)
    first.send(b"a SELECT INBOX\r\n")
    second.send(b"a SELECT INBOX\r\n")
    second.send(b"b STORE 1,3 +FLAGS (\\Deleted)\r\n")
    second.send(b"c EXPUNGE\r\n")
    mailbox.append("INBOX", MESSAGE)
    second.send(b"d STORE 1 +FLAGS (\\Flagged)\r\n")
    # FETCH must not see EXPUNGEs (RFC 3501 7.4.1); NOOP does, highest number first.
    assert b"EXPUNGE" not in first.send(b"e FETCH 1 FLAGS\r\n")
    assert first.send(b"f NOOP\r\n").splitlines() == [
        b"* 3 EXPUNGE", b"* 1 EXPUNGE", b"* 2 EXISTS", b"* 0 RECENT",
        b"* 1 FETCH (FLAGS (\\Flagged))", b"f OK NOOP completed"]


def test_append_copy_move_and_uidplus(mailbox):
    session = logged_in(mailbox)
    assert session.send(b"a APPEND Nope {5}\r\n") == b"+ Ready for literal data\r\n"
    assert session.send(b"hello\r\n") == b"a NO [TRYCREATE] No such mailbox\r\n"
    assert session.send(b"b CREATE Archive\r\n") == b"b OK CREATE completed\r\n"
    assert session.send(b"c CREATE Archive\r\n") == b"c NO [ALREADYEXISTS] Mailbox already exists\r\n"
    assert session.send(b'd APPEND Archive (\\Seen) "05-Nov-2026 16:29:44 +0100" {5+}\r\nhello\r\n') \
        == b"d OK [APPENDUID 1700000000 1] APPEND completed\r\n"
    session.send(b"e SELECT INBOX\r\n")
    assert session.send(b"f COPY 1:2 Archive\r\n") == \
        b"f OK [COPYUID 1700000000 1,2 2,3] COPY completed\r\n"
    assert session.send(b"g UID MOVE 2 Archive\r\n") == \
        b"* OK [COPYUID 1700000000 2 4] Moved\r\n* 2 EXPUNGE\r\ng OK MOVE completed\r\n"
    assert session.send(b'h STATUS Archive (MESSAGES UIDNEXT)\r\n') == \
        b"* STATUS Archive (MESSAGES 4 UIDNEXT 5)\r\nh OK STATUS completed\r\n"


def test_list_lsub_xlist_namespace_quota(mailbox):
    session = logged_in(mailbox)
    session.send(b"a CREATE Work/Projects\r\n")
    assert session.send(b'b LIST "" ""\r\n') == b'* LIST (\\Noselect) "/" ""\r\nb OK LIST completed\r\n'
    assert session.send(b'c LIST "" %\r\n').splitlines() == [
        b'* LIST (\\HasNoChildren) "/" INBOX',
        b'* LIST (\\HasChildren \\Noselect) "/" Work', b"c OK LIST completed"]
    assert session.send(b'd XLIST "" inbox\r\n') == \
        b'* XLIST (\\HasNoChildren \\Inbox) "/" INBOX\r\nd OK XLIST completed\r\n'
    assert session.send(b'e LSUB "" *\r\n') == b'* LSUB () "/" INBOX\r\ne OK LSUB completed\r\n'
    assert session.send(b"f NAMESPACE\r\n") == \
        b'* NAMESPACE (("" "/")) (("#shared/" "/")) (("#public/" "/"))\r\nf OK NAMESPACE completed\r\n'
    assert session.send(b"g GETQUOTAROOT INBOX\r\n") == \
        b'* QUOTAROOT INBOX ""\r\n* QUOTA "" (STORAGE 100 1024)\r\ng OK GETQUOTAROOT completed\r\n'


@pytest.mark.parametrize("line, reply", [
    (b"a FETCH 1 (FLAGS\r\n", b"a BAD Syntax error: missing )\r\n"),
    (b"a FETCH 1 FLAGS)\r\n", b"a BAD Syntax error: unexpected )\r\n"),
    (b"a FETCH 1:x FLAGS\r\n", b"a BAD Invalid sequence set\r\n"),
    (b"a FETCH 0 FLAGS\r\n", b"a BAD Invalid sequence set\r\n"),
    (b"a FETCH 1 BOGUS\r\n", b"a BAD Invalid FETCH items: unknown fetch attribute\r\n"),
    (b"a APPEND INBOX {99999}\r\n", b"a BAD [TOOBIG] Literal too big (the limit is 1000 octets)\r\n"),
    (b"a SELECT \xc3\xa9t\xc3\xa9\r\n", b"a BAD Syntax error: unexpected character\r\n"),
    (b"a STORE 1 FLAGS (\\Bogus)\r\n", b"a BAD Unknown system flag\r\n"),
    (b"a XYZZY\r\n", b"a BAD Unknown command XYZZY\r\n"),
])
def test_malformed_input_is_bad_and_the_session_goes_on(mailbox, line, reply):
    session = logged_in(mailbox)
    session.send(b"s SELECT INBOX\r\n")
    assert session.send(line) == reply
    assert session.send(b"n NOOP\r\n") == b"n OK NOOP completed\r\n"


def test_too_many_errors_hang_up(mailbox):
    session = Session(mailbox)
    replies = [session.machine.handle(session.parser.feed(b"a XYZZY\r\n")[0]) for _ in range(30)]
    assert replies[-1].action is Action.CLOSE and b"* BYE Too many errors" in replies[-1].text


@pytest.mark.parametrize("line, in_thread", [
    (b"a FETCH 1:* (FLAGS UID RFC822.SIZE)", False),
    (b"a FETCH 1:* FAST", False),
    (b"a FETCH 1 (BODY.PEEK[])", False),     # reads a small message
    (b"a FETCH 1:4 (ENVELOPE)", False),      # reads: past LOOP_READ_LIMIT, the store refuses
    (b"a FETCH 1 (BODY[TEXT])", True),       # sets \Seen
    (b"a FETCH 1", True),                    # malformed: the handler answers BAD
    (b"a SEARCH UNSEEN", False),
    (b"a SEARCH TEXT hello", True),          # reads the messages
    (b"a SEARCH CHARSET KOI8-R ALL", True),  # the handler answers NO [BADCHARSET]
    (b"a UID FETCH 1:* (FLAGS)", False),
    (b"a STORE 1 +FLAGS (\\Flagged)", False),  # renames, writes the log: no sync
    (b"a EXPUNGE", False),
    (b"a NOOP", False),
    (b"a CAPABILITY", False),
    (b"a STATUS INBOX (MESSAGES)", False),
    (b"a APPEND INBOX {1+}\r\nx", False),  # written on the loop; its syncs go to the pool
    (b"a APPEND INBOX CATENATE (TEXT {1+}\r\nx)", True),  # may read other messages
    (b"a COPY 1 INBOX", True),               # syncs
    (b"a SELECT INBOX", True),
])
def test_commands_that_sync_or_set_seen_run_in_the_thread_pool(mailbox, line, in_thread):
    mailbox.append("INBOX", MESSAGE + b"x" * messages.LOOP_READ_LIMIT)
    session = logged_in(mailbox)
    session.send(b"s SELECT INBOX\r\n")
    command, _ = session.parser.feed(line + b"\r\n")
    assert session.machine.runs_in_thread(command) is in_thread


def test_commands_without_the_store_stay_on_the_event_loop_until_a_folder_is_selected(mailbox):
    session = logged_in(mailbox)
    command, _ = session.parser.feed(b"a CAPABILITY\r\n")
    assert not session.machine.runs_in_thread(command)


def test_an_append_of_many_octets_runs_in_the_thread_pool(mailbox, monkeypatch):
    monkeypatch.setattr(messages, "LOOP_READ_LIMIT", 10)
    session = logged_in(mailbox)
    session.send(b"s SELECT INBOX\r\n")
    for line, in_thread in ((b"a APPEND INBOX {5+}\r\nhello", False),
                            (b"a APPEND INBOX {5+}\r\nhello {6+}\r\nhello!", True)):
        command, _ = session.parser.feed(line + b"\r\n")
        assert session.machine.runs_in_thread(command) is in_thread, line


def test_a_big_folder_is_never_answered_on_the_event_loop(mailbox, monkeypatch):
    monkeypatch.setattr(messages, "INLINE_VIEW_LIMIT", 2)
    session = logged_in(mailbox)
    session.send(b"s SELECT INBOX\r\n")
    command, _ = session.parser.feed(b"a FETCH 1:* (FLAGS)\r\n")
    assert session.machine.runs_in_thread(command)


@pytest.mark.parametrize("command, ending", [
    (b"n NOOP\r\n", b"n OK NOOP completed\r\n"),
    (b"i IDLE\r\n", b""),  # the IDLE never starts: no "+", no completion
])
def test_a_folder_that_cannot_be_followed_ends_the_session_with_bye(mailbox, command, ending):
    from mailforge.store.api import FolderNotFound

    session = logged_in(mailbox)
    session.send(b"s SELECT INBOX\r\n")

    def gone():
        raise FolderNotFound("the selected folder was deleted")

    session.machine.selected.folder.refresh = gone
    reply = session.machine.handle(session.parser.feed(command)[0])
    assert reply.action is Action.CLOSE and session.machine.state is State.AUTHENTICATED
    assert reply.text == ending + b"* BYE The selected folder was deleted, have to disconnect\r\n"


def test_rights_of_the_selected_folder_limit_store_expunge_and_move(mailbox):
    """RFC 4314 4: STORE leaves the flags it has no right to, EXPUNGE and MOVE need "e"/"t"."""
    session = logged_in(mailbox)
    session.send(b"a APPEND INBOX {11+}\r\nSubject: x\r\n")
    mailbox.held["INBOX"] = frozenset("lrs")
    session.send(b"b SELECT INBOX\r\n")
    reply = session.send(b"c STORE 1 +FLAGS (\\Seen \\Deleted)\r\n")
    assert b"\\Seen" in reply and b"\\Deleted" not in reply and b"c OK" in reply
    assert b"d NO [NOPERM]" in session.send(b"d EXPUNGE\r\n")
    assert b"e NO [NOPERM]" in session.send(b"e MOVE 1 INBOX\r\n")


def test_in_a_big_folder_only_a_single_message_fetch_stays_on_the_event_loop(mailbox,
                                                                            monkeypatch):
    monkeypatch.setattr(messages, "INLINE_VIEW_LIMIT", 2)  # the fixture's folder holds 3
    session = logged_in(mailbox)
    session.send(b"s SELECT INBOX\r\n")
    for line, in_thread in ((b"a FETCH 1:2 (FLAGS)", True), (b"a FETCH 2 (FLAGS)", False),
                            (b"a UID FETCH 1:* (FLAGS)", True)):
        command, _ = session.parser.feed(line + b"\r\n")
        assert session.machine.runs_in_thread(command) is in_thread, line
