"""CONTEXT=SEARCH and CONTEXT=SORT (RFC 5267) over real sockets: PARTIAL results, and results
kept up to date (UPDATE) as this session and others change the folder, until CANCELUPDATE."""

from __future__ import annotations

import imaplib

import pytest

from .imap_helpers import ok, RawSession, fill, login


@pytest.fixture
def client(imap_server):
    client = login(imap_server)
    fill(client, 5)
    ok(client.select("INBOX"))
    yield client
    client.logout()


def esearch_lines(client: imaplib.IMAP4) -> list[bytes]:
    """The ESEARCH responses since last asked, each without its `(TAG "x") `."""
    return [line.partition(b") ")[2] for line in client.untagged_responses.pop("ESEARCH", [])]


def command(client: imaplib.IMAP4, name: str, *args: str, uid: bool = False) -> str:
    """Run a command; its tag (which its ESEARCH responses carry)."""
    if uid:
        name, args = "UID", (name, *args)
    tag = client._command(name, *args)
    ok(client._command_complete(name, tag))
    return tag.decode()


def test_partial_search_and_sort(client):
    caps = set(ok(client.capability())[0].split())
    assert {b"CONTEXT=SEARCH", b"CONTEXT=SORT"} <= caps

    command(client, "SEARCH", "RETURN", "(PARTIAL 2:4)", "ALL")
    command(client, "SEARCH", "RETURN", "(PARTIAL 4:2)", "ALL")
    command(client, "SEARCH", "RETURN", "(PARTIAL 2:10)", "1:2,4:5")
    command(client, "SEARCH", "RETURN", "(PARTIAL 6:9 COUNT)", "ALL")
    command(client, "SEARCH", "RETURN", "(PARTIAL 2:2)", "ALL", uid=True)
    assert esearch_lines(client) == [b"PARTIAL (2:4 2:4)", b"PARTIAL (2:4 2:4)",
                                     b"PARTIAL (2:10 2,4:5)", b"COUNT 5 PARTIAL (6:9 NIL)",
                                     b"UID PARTIAL (2:2 2)"]
    command(client, "SORT", "RETURN", "(PARTIAL 1:3)", "(REVERSE ARRIVAL)", "UTF-8", "ALL")
    assert esearch_lines(client) == [b"PARTIAL (1:3 5,4,3)"]
    for bad in ("(PARTIAL 1)", "(PARTIAL 1:*)", "(PARTIAL 0:3)", "(PARTIAL)"):
        with pytest.raises(imaplib.IMAP4.error, match="PARTIAL"):
            client._simple_command("SEARCH", "RETURN", bad, "ALL")


def test_update_follows_this_and_other_sessions(imap_server, client):
    tag = command(client, "SEARCH", "RETURN", "(UPDATE ALL)", "UNSEEN", uid=True)
    assert esearch_lines(client) == [b"UID ALL 1:5"]

    # This session's own STORE and EXPUNGE.
    ok(client.store("1,2", "+FLAGS", r"(\Seen)"))
    assert esearch_lines(client) == [b"UID REMOVEFROM (0 1:2)"]
    ok(client.store("2", "-FLAGS", r"(\Seen)"))
    assert esearch_lines(client) == [b"UID ADDTO (0 2)"]
    ok(client.store("5", "+FLAGS", r"(\Deleted)"))
    ok(client.expunge())
    assert esearch_lines(client) == [b"UID REMOVEFROM (0 5)"]

    # Another session's changes, noticed at this one's next command.
    other = login(imap_server)
    ok(other.select("INBOX"))
    ok(other.store("3", "+FLAGS", r"(\Seen)"))
    ok(other.append("INBOX", None, None, b"Subject: new\r\n\r\nnew\r\n"))
    other.logout()
    ok(client.noop())
    assert esearch_lines(client) == [b"UID REMOVEFROM (0 3) ADDTO (0 6)"]

    ok(client.xatom("CANCELUPDATE", f'"{tag}"'))
    ok(client.store("1", "-FLAGS", r"(\Seen)"))
    assert esearch_lines(client) == []
    with pytest.raises(imaplib.IMAP4.error, match="BAD"):
        client.xatom("CANCELUPDATE", f'"{tag}"')


def test_sort_update_gives_positions(client):
    ok(client.store("1:5", "+FLAGS", r"(\Seen)"))
    command(client, "SORT", "RETURN", "(UPDATE)", "(REVERSE ARRIVAL)", "UTF-8", "SEEN")
    assert esearch_lines(client) == [b""]   # UPDATE alone: the tag, no result yet
    ok(client.append("INBOX", r"(\Seen)", None, b"Subject: newest\r\n\r\nnew\r\n"))
    ok(client.store("2", "-FLAGS", r"(\Seen)"))
    ok(client.store("2", "+FLAGS", r"(\Seen)"))
    assert esearch_lines(client) == [b"ADDTO (1 6)", b"REMOVEFROM (0 2)", b"ADDTO (5 2)"]


def test_expunged_messages_leave_before_their_expunge(imap_server, client):
    """Sequence numbers in REMOVEFROM are those the client holds: it comes before EXPUNGE."""
    ok(client.store("2,4", "+FLAGS", r"(\Deleted)"))
    session = RawSession(imap_server.imap_port)
    session.login()
    session.command(b"S", b"SELECT INBOX")
    assert session.command(b"U", b"SEARCH RETURN (UPDATE ALL) DELETED")[:-1] == [
        b'* ESEARCH (TAG "U") ALL 2,4\r\n']
    ok(client.expunge())
    assert session.command(b"N", b"NOOP")[:-1] == [
        b'* ESEARCH (TAG "U") REMOVEFROM (0 2,4)\r\n', b"* 4 EXPUNGE\r\n", b"* 2 EXPUNGE\r\n"]
    session.command(b"L", b"LOGOUT")
    session.close()
