"""The search family of issue #15 over real sockets with imaplib, against the real Maildir
store: ESEARCH, SEARCHRES and WITHIN."""

from __future__ import annotations

import imaplib
import time

import pytest

from .imap_helpers import login, message


@pytest.fixture
def client(make_server):
    server = make_server(imap_services=True, server={"allow_plaintext_auth": True})
    server.start()
    client = login(server)
    yield client
    client.logout()


def ok(result):
    status, data = result
    assert status == "OK", data
    return data


def esearch(client: imaplib.IMAP4, *args: str, uid: bool = False) -> bytes:
    """The ESEARCH line of a SEARCH RETURN (...), without its `(TAG "x")`."""
    if uid:
        ok(client.uid("SEARCH", *args))
    else:
        ok(client._simple_command("SEARCH", *args))
    [line] = client.untagged_responses.pop("ESEARCH")
    tag, _, rest = line.partition(b") ")
    assert tag.startswith(b'(TAG "')
    return rest if rest else b""


def test_esearch_searchres_within(client):
    now = time.time()
    for n in range(6):
        date = imaplib.Time2Internaldate(now - 4000 + 1000 * n if n else now - 90_000)
        flags = r"(\Seen)" if n % 2 else None
        ok(client.append("INBOX", flags, date, message(n)))
    ok(client.select("INBOX"))
    caps = ok(client.capability())[0].split()
    assert {b"ESEARCH", b"SEARCHRES", b"WITHIN"} <= set(caps)

    assert esearch(client, "RETURN", "(MIN MAX COUNT ALL)", "UNSEEN") == (
        b"MIN 1 MAX 5 ALL 1,3,5 COUNT 3")
    assert esearch(client, "RETURN", "()", "1:*", uid=True) == b"UID ALL 1:6"
    assert esearch(client, "RETURN", "(COUNT)", "SUBJECT", '"message 9"') == b"COUNT 0"
    assert esearch(client, "RETURN", "(ALL)", "YOUNGER", "3500") == b"ALL 2:6"
    assert ok(client.search(None, "OLDER", "80000")) == [b"1"]

    # SAVE, then `$` in FETCH, UID STORE, SEARCH and UID COPY; expunged messages leave it.
    ok(client._simple_command("SEARCH", "RETURN", "(SAVE)", "SEEN"))
    assert not {"ESEARCH", "SEARCH"} & set(client.untagged_responses)
    fetched = ok(client.fetch("$", "(UID)"))
    assert fetched == [b"2 (UID 2)", b"4 (UID 4)", b"6 (UID 6)"]
    ok(client.uid("STORE", "$", "+FLAGS.SILENT", r"(\Flagged)"))
    assert ok(client.search(None, "FLAGGED")) == [b"2 4 6"]
    assert esearch(client, "RETURN", "(SAVE MIN)", "$", "NOT", "2") == b"MIN 4"
    assert ok(client.uid("COPY", "$", "INBOX")) == [None]
    ok(client.store("4", "+FLAGS.SILENT", r"(\Deleted)"))
    ok(client.expunge())
    assert ok(client.uid("SEARCH", "$")) == [b""]
    assert ok(client.fetch("$", "(UID)")) == [None]

    # A new SELECT forgets the saved result.
    ok(client._simple_command("SEARCH", "RETURN", "(SAVE)", "ALL"))
    ok(client.select("INBOX"))
    assert ok(client.search(None, "$")) == [b""]
