"""IMAP4rev2 (RFC 9051) over real sockets: offered beside IMAP4rev1, and after ENABLE IMAP4rev2
the forms rev2 requires (no \\Recent or RECENT, ESEARCH for SEARCH, SELECT's LIST and [CLOSED],
\\NonExistent for a level that is no folder, STATUS DELETED, UTF-8 mailbox names), while a
rev1 session on the same folder keeps RFC 3501's."""

from __future__ import annotations

import imaplib

import pytest

from .imap_helpers import ok, fill, login


@pytest.fixture
def rev1(imap_server):
    client = login(imap_server)
    fill(client, 3)
    yield client
    client.logout()


@pytest.fixture
def rev2(imap_server, rev1):
    client = login(imap_server)
    caps = set(ok(client.capability())[0].split())
    assert {b"IMAP4rev1", b"IMAP4rev2"} <= caps
    ok(client.enable("IMAP4rev2"))
    assert client.untagged_responses.pop("ENABLED") == [b"IMAP4rev2"]
    yield client
    client.logout()


def untagged(client: imaplib.IMAP4) -> dict[str, list]:
    responses, client.untagged_responses = client.untagged_responses, {}
    return responses


def test_select_fetch_and_search_in_rev2_forms(rev1, rev2):
    ok(rev1.select("INBOX"))          # the rev1 session takes the messages' \Recent
    ok(rev1.store("2", "+FLAGS", r"(\Deleted)"))
    rev1.untagged_responses.clear()
    ok(rev2.select("INBOX"))
    seen = untagged(rev2)
    assert "RECENT" not in seen and not any(b"UNSEEN" in line for line in seen.get("OK", []))
    assert seen["LIST"] == [b'() "/" INBOX']
    ok(rev2.select("INBOX", readonly=True))
    assert b"[CLOSED] Previous mailbox closed" in untagged(rev2)["OK"]

    # New mail: EXISTS without RECENT; FLAGS without \Recent.
    ok(rev1.append("INBOX", None, None, b"Subject: new\r\n\r\nnew\r\n"))
    ok(rev2.noop())
    seen = untagged(rev2)
    assert seen["EXISTS"] == [b"4"] and "RECENT" not in seen
    assert ok(rev2.fetch("4", "(FLAGS)")) == [b"4 (FLAGS ())"]

    ok(rev2.search(None, "DELETED"))
    assert untagged(rev2)["ESEARCH"][0].endswith(b") ALL 2")
    ok(rev2.uid("SEARCH", "ALL"))
    assert untagged(rev2)["ESEARCH"][0].endswith(b") UID ALL 1:4")

    # The rev1 session on the same folder keeps RFC 3501's forms.
    ok(rev1.noop())
    assert {"EXISTS", "RECENT"} <= set(untagged(rev1))
    assert ok(rev1.search(None, "DELETED")) == [b"2"]
    ok(rev1.select("INBOX"))
    assert "RECENT" in rev1.untagged_responses and "LIST" not in rev1.untagged_responses


def test_list_status_and_names_in_rev2(rev1, rev2):
    ok(rev1.create("parent/child"))
    ok(rev1.delete("parent"))                 # its child stays: "parent" is only implied
    ok(rev1.create("&AMk-t&AOk-"))             # Été, in modified UTF-7
    ok(rev1.select("INBOX"))
    ok(rev1.store("1:2", "+FLAGS", r"(\Deleted)"))
    assert b'(\\HasChildren \\Noselect) "/" parent' in ok(rev1.list('""', "%"))

    listed = ok(rev2.list('""', "%"))
    assert b'(\\HasChildren \\NonExistent) "/" parent' in listed
    assert '(\\HasNoChildren) "/" "Été"'.encode() in listed
    assert ok(rev2.status("INBOX", "(MESSAGES DELETED SIZE)"))[0].startswith(
        b"INBOX (MESSAGES 3 DELETED 2 SIZE ")
    ok(rev2._simple_command("SELECT", '"Été"'.encode()))
    # A rev2 name is UTF-8 as it stands: "&" is no shift into modified UTF-7 there.
    ok(rev2.create('"Ünïcode/&AOk-"'.encode()))
    assert b'(\\HasNoChildren) "/" &ANw-n&AO8-code/&-AOk-' in ok(rev1.list('""', "*"))
    with pytest.raises(imaplib.IMAP4.error, match="BAD"):
        rev2._simple_command("LIST", '""', b'"\xff"')
