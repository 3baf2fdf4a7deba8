"""What Dovecot's imaptest found us doing differently from Dovecot (issue 14), each shown with
real clients over real sockets: keywords announced, \\Recent under EXAMINE, SEARCH on
addresses written with comments."""

from __future__ import annotations

import re

import pytest

from .imap_helpers import RawSession, fill, login

SYSTEM_FLAGS = {"\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"}
FLAGS = re.compile(rb"\* FLAGS \(([^)]*)\)\r\n")
PERMANENTFLAGS = re.compile(rb"\* OK \[PERMANENTFLAGS \(([^)]*)\)\] Flags permitted\r\n")


def selected(server) -> RawSession:
    session = RawSession(server.imap_port)
    session.login()
    assert session.command(b"S", b"SELECT INBOX")[-1].startswith(b"S OK [READ-WRITE]")
    return session


def announced(lines: list[bytes], *keywords: str) -> int:
    """Where `* FLAGS` naming the system flags and these keywords stands in the lines,
    checking that PERMANENTFLAGS with them follows at once."""
    at = next(i for i, line in enumerate(lines) if FLAGS.fullmatch(line))
    assert set(FLAGS.fullmatch(lines[at]).group(1).decode().split()) == SYSTEM_FLAGS | {*keywords}
    permanent = PERMANENTFLAGS.fullmatch(lines[at + 1])
    assert set(permanent.group(1).decode().split()) == SYSTEM_FLAGS | {*keywords, "\\*"}
    return at


def test_a_new_keyword_is_announced_to_every_session_before_the_fetch_that_uses_it(imap_server):
    """RFC 3501 7.2.6; imaptest's "Keyword used without being in FLAGS"."""
    client = login(imap_server)
    fill(client, 2)
    storer, watcher = selected(imap_server), selected(imap_server)
    lines = storer.command(b"T", b"STORE 1 +FLAGS ($Work)")
    assert announced(lines, "$Work") == 0
    assert re.fullmatch(rb"\* 1 FETCH \(FLAGS \(\$Work.*\)\)\r\n", lines[2])
    # Once announced, the same keyword is not announced again.
    lines = storer.command(b"U", b"STORE 2 +FLAGS ($Work)")
    assert len(lines) == 2 and lines[0].startswith(b"* 2 FETCH (FLAGS ($Work")
    # .SILENT leaves out the FETCH, not the news that the folder has a new keyword.
    lines = storer.command(b"V", b"STORE 2 +FLAGS.SILENT (Later)")
    assert announced(lines, "$Work", "Later") == 0 and len(lines) == 3

    lines = watcher.command(b"N", b"NOOP")
    first_fetch = next(i for i, line in enumerate(lines) if b"FETCH" in line)
    assert announced(lines, "$Work", "Later") < first_fetch
    assert lines[-1] == b"N OK NOOP completed\r\n"
    assert not any(b"FLAGS (" in line and b"FETCH" not in line
                   for line in watcher.command(b"M", b"NOOP"))
    storer.close()
    watcher.close()
    client.logout()


def test_a_keyword_stored_meanwhile_is_announced_while_idling(imap_server):
    client = login(imap_server)
    fill(client, 1)
    watcher = selected(imap_server)
    watcher.start_idle()
    client.select("INBOX")
    client.store("1", "+FLAGS", "(Urgent)")
    lines = [watcher.readline() for _ in range(3)]
    assert announced(lines, "Urgent") == 0
    assert re.match(rb"\* 1 FETCH \(FLAGS \(Urgent[ )]", lines[2])
    watcher.end_idle()
    watcher.close()
    client.logout()


def test_examine_reports_the_recent_messages_and_leaves_them_recent(imap_server):
    """imaptest select 3/9: EXAMINE said `* 0 RECENT` after two APPENDs."""
    client = login(imap_server)
    fill(client, 2)
    assert client.status("INBOX", "(RECENT)")[1] == [b"INBOX (RECENT 2)"]
    examiner = RawSession(imap_server.imap_port)
    examiner.login()
    lines = examiner.command(b"E", b"EXAMINE INBOX")
    assert b"* 2 RECENT\r\n" in lines and lines[-1].startswith(b"E OK [READ-ONLY]")
    assert examiner.command(b"F", b"FETCH 1:* FLAGS")[:2] == [
        b"* 1 FETCH (FLAGS (\\Recent))\r\n", b"* 2 FETCH (FLAGS (\\Recent))\r\n"]
    # Read-only: \Recent is still there for the session that selects the folder next.
    assert b"* 2 RECENT\r\n" in examiner.command(b"S", b"SELECT INBOX")
    assert b"* 0 RECENT\r\n" in examiner.command(b"X", b"EXAMINE INBOX")
    examiner.close()
    client.logout()


# imaptest's search-addresses.mbox, as CRLF messages.
ADDRESSED = [
    b"From: user-from@domain.org\r\nTo: user-to@domain.org\r\n\r\nbody\r\n",
    b"From: RealFrom <user-from@domain.org>\r\nTo: RealTo <user-to@domain.org>\r\n\r\nbody2\r\n",
    b"From: <user-from (comment)@ (comment) domain.org>\r\nTo: <user-to@domain.org>\r\n\r\n"
    b"body3\r\n",
    b"From: user-from@domain.org (RealFrom)\r\nTo: user-to@domain.org (RealTo)\r\n\r\nbody4\r\n",
    b"From: user-from1@domain.org, user-from2@domain.org\r\n\r\nbody5\r\n",
    b"To: groupname: groupuser1@domain.org, groupuser2@domain.org;,\r\n"
    b"  groupname2: groupuser3@domain.org;\r\n\r\nbody6\r\n",
]


@pytest.fixture(scope="module")
def addressed(shared_imap_server):
    """The shared server, ADDRESSED appended to alice's INBOX once for all the searches."""
    client = login(shared_imap_server)
    for data in ADDRESSED:
        assert client.append("INBOX", None, None, data)[0] == "OK"
    client.logout()
    return shared_imap_server


@pytest.mark.parametrize("criteria, found", [
    ('FROM "user-from@domain.org"', b"1 2 3 4"),
    ("FROM ser-fro", b"1 2 3 4 5"),
    ("FROM realfrom", b"2 4"),
    ("TO user-to@domain.org", b"1 2 3 4"),
    ("TO realto", b"2 4"),
    ("FROM user-from2", b"5"),
    ("TO groupname", b"6"),
    ("TO groupuser3", b"6"),
    ("TO groupuser4", b""),
    ("FROM comment", b""),
])
def test_search_matches_addresses_as_written_without_comments(addressed, criteria, found):
    """imaptest search-addresses 1/29: `<user-from (comment)@ (comment) domain.org>`."""
    client = login(addressed)
    client.select("INBOX")
    assert client.search(None, criteria) == ("OK", [found])
    client.logout()
