"""LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819) and CREATE-SPECIAL-USE (RFC 6154) over a
real socket against the real Maildir store."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from .imap_helpers import RawSession, fill, login


@pytest.fixture
def session(imap_server):
    yield from _logged_in(imap_server)


@pytest.fixture
def shared_session(shared_imap_server):
    """A session on the module's shared server, for the tests that create nothing."""
    yield from _logged_in(shared_imap_server)


def _logged_in(server) -> Iterator[RawSession]:
    raw = RawSession(server.imap_port)
    raw.login()
    yield raw
    raw.close()


def ok(lines: list[bytes]) -> list[bytes]:
    assert b" OK " in lines[-1], lines
    return lines[:-1]


def test_capabilities_are_advertised(shared_imap_server):
    client = login(shared_imap_server)
    for capability in ("LIST-EXTENDED", "LIST-STATUS", "CREATE-SPECIAL-USE"):
        assert capability in client.capabilities
    client.logout()


def test_subscribed_selection_with_nonexistent_and_childinfo(session):
    for name in (b"Work", b"Work/A", b"Work/B", b"Home", b"Gone"):
        ok(session.command(b"C", b"CREATE " + name))
    for name in (b"Work/A", b"Home", b"Gone"):
        ok(session.command(b"S", b"SUBSCRIBE " + name))
    ok(session.command(b"D", b"DELETE Gone"))

    lines = ok(session.command(b"L1", b'LIST (SUBSCRIBED) "" *'))
    assert b'* LIST (\\HasNoChildren \\Subscribed) "/" Work/A\r\n' in lines
    assert b'* LIST (\\HasNoChildren \\Subscribed) "/" Home\r\n' in lines
    assert b'* LIST (\\NonExistent \\Subscribed) "/" Gone\r\n' in lines
    assert not any(line.endswith(b" Work\r\n") or b"Work/B" in line for line in lines)

    lines = ok(session.command(b"L2", b'LIST (SUBSCRIBED RECURSIVEMATCH) "" %'))
    assert b'* LIST (\\HasChildren) "/" Work ("CHILDINFO" ("SUBSCRIBED"))\r\n' in lines
    assert not any(b"Work/A" in line for line in lines)

    # A subscribed child that matches itself gives its parent no CHILDINFO.
    lines = ok(session.command(b"L3", b'LIST (SUBSCRIBED RECURSIVEMATCH) "" (Work Work/A)'))
    assert lines == [b'* LIST (\\HasNoChildren \\Subscribed) "/" Work/A\r\n']


def test_multiple_patterns_and_return_options(session):
    for name in (b"Lists/one", b"Lists/two", b"Other"):
        ok(session.command(b"C", b"CREATE " + name))
    ok(session.command(b"S", b"SUBSCRIBE Lists/two"))
    lines = ok(session.command(b"L", b'LIST "" (Lists/% Other) RETURN (CHILDREN SUBSCRIBED)'))
    assert lines == [b'* LIST (\\HasNoChildren) "/" Lists/one\r\n',
                     b'* LIST (\\HasNoChildren \\Subscribed) "/" Lists/two\r\n',
                     b'* LIST (\\HasNoChildren) "/" Other\r\n']


def test_return_status(imap_server, session):
    client = login(imap_server)
    fill(client, 3)
    client.select("INBOX")
    client.store("1", "+FLAGS", r"(\Seen)")
    client.logout()
    lines = ok(session.command(b"L", b'LIST "" (INBOX Sent) RETURN (STATUS (MESSAGES UNSEEN))'))
    assert lines[0].startswith(b'* LIST (') and lines[0].endswith(b'"/" INBOX\r\n')
    assert lines[1] == b"* STATUS INBOX (MESSAGES 3 UNSEEN 2)\r\n"
    assert lines[2].endswith(b'"/" Sent\r\n')
    assert lines[3] == b"* STATUS Sent (MESSAGES 0 UNSEEN 0)\r\n"


def test_special_use_selection_and_create_with_use(session):
    ok(session.command(b"C1", b"CREATE Outbox (USE (\\Sent))"))
    ok(session.command(b"C2", b"CREATE Old/Mail (USE (\\Archive))"))
    lines = ok(session.command(b"L", b'LIST (SPECIAL-USE) "" * RETURN (SPECIAL-USE)'))
    named = {line.rsplit(b" ", 1)[1].strip(): line for line in lines}
    assert set(named) == {b"Sent", b"Drafts", b"Trash", b"Junk", b"Archive", b"Outbox",
                          b"Old/Mail"}
    assert b"\\Sent" in named[b"Outbox"] and b"\\Archive" in named[b"Old/Mail"]

    # The use follows a rename and goes with a delete.
    ok(session.command(b"R", b"RENAME Old Older"))
    assert b"\\Archive" in ok(session.command(b"L", b'LIST "" Older/Mail'))[0]
    ok(session.command(b"D", b"DELETE Outbox"))
    ok(session.command(b"C3", b"CREATE Outbox"))
    assert b"\\Sent" not in ok(session.command(b"L", b'LIST "" Outbox'))[0]

    for use in (b"(\\All)", b"(\\Flagged)", b"(\\Sent \\Trash)", b"(\\Nonsense)"):
        reply = session.command(b"N", b"CREATE Virtual (USE " + use + b")")[-1]
        assert reply.startswith(b"N NO [USEATTR]"), reply
    assert ok(session.command(b"L", b'LIST "" Virtual')) == []


@pytest.mark.parametrize("command", [
    b'LIST (IMAPTEST) "" ""', b'LIST (RECURSIVEMATCH) "" *', b'LIST (RECURSIVEMATCH REMOTE) "" *',
    b'LIST "" * RETURN (IMAPTEST)', b'LIST "" * RETURN (STATUS)', b'LIST "" * RETURN (STATUS (BOGUS))',
    b"CREATE Virtual (FOO (\\Sent))", b'LSUB "" (a b)'])
def test_bad_options(shared_session, command):
    assert shared_session.command(b"B", command)[-1].startswith(b"B BAD")


def test_remote_is_accepted(shared_session):
    lines = ok(shared_session.command(b"L", b'LIST (REMOTE) "" %'))
    assert any(line.endswith(b'"/" INBOX\r\n') for line in lines)


def test_list_sees_other_sessions_changes_after_it_settled(imap_server, session):
    """A session's LIST answers from what it found while the folder tree has not changed: a
    folder another session creates, deletes or subscribes to, or one a hand made selectable,
    shows in the next LIST all the same (also when it comes within the clock tick of the
    listing before)."""
    other = RawSession(imap_server.imap_port)
    other.login()
    maildir = imap_server.maildir()
    (maildir / ".Hand").mkdir()  # a folder directory without cur/: not selectable
    ok(other.command(b"C0", b"CREATE Early"))
    time.sleep(1.5)  # past the mtime tick: the next LIST's answer is kept
    names = ok(session.command(b"L0", b'LIST "" *'))
    assert b'* LIST (\\HasNoChildren) "/" Early\r\n' in names
    assert b'* LIST (\\HasNoChildren \\Noselect) "/" Hand\r\n' in names
    for sub in ("cur", "new", "tmp"):
        (maildir / ".Hand" / sub).mkdir()
    names = ok(session.command(b"L1", b'LIST "" *'))
    assert b'* LIST (\\HasNoChildren) "/" Hand\r\n' in names
    ok(other.command(b"C1", b"CREATE Late"))
    ok(other.command(b"S1", b"SUBSCRIBE Early"))
    names = ok(session.command(b"L2", b'LIST "" * RETURN (SUBSCRIBED)'))
    assert b'* LIST (\\HasNoChildren) "/" Late\r\n' in names
    assert b'* LIST (\\HasNoChildren \\Subscribed) "/" Early\r\n' in names
    ok(other.command(b"D1", b"DELETE Early"))
    names = ok(session.command(b"L3", b'LIST "" *'))
    assert not any(line.endswith(b" Early\r\n") for line in names)
    other.close()
