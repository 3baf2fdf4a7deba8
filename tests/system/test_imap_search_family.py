"""The search family of issue #15 over real sockets with imaplib, against the real Maildir
store: ESEARCH, SEARCHRES and WITHIN; SORT, SORT=DISPLAY and ESORT; THREAD, whose header fields
a second session reads from the summary cache without opening a message file."""

from __future__ import annotations

import imaplib
import time

import pytest

from .file_opens import FileOpens
from .imap_helpers import login, message


@pytest.fixture
def client(imap_server):
    client = login(imap_server)
    yield client
    client.logout()


def ok(result):
    status, data = result
    assert status == "OK", data
    return data


def esearch(client: imaplib.IMAP4, *args: str, uid: bool = False, command: str = "SEARCH"
            ) -> bytes:
    """The ESEARCH line of a SEARCH or SORT RETURN (...), without its `(TAG "x")`."""
    if uid:
        ok(client.uid(command, *args))
    else:
        ok(client._simple_command(command, *args))
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


def mail(subject: str, sender: str, date: str, message_id: str, refs: str = "") -> bytes:
    references = f"References: {refs}\r\n" if refs else ""
    return (f"From: {sender}\r\nTo: alice@example.test\r\nSubject: {subject}\r\n"
            f"Date: {date}\r\nMessage-ID: {message_id}\r\n{references}\r\nbody\r\n").encode()


THREADED = [
    mail("Lunch?", "Carol <carol@x.test>", "Tue, 3 Mar 2026 12:00:00 +0000", "<1@x>"),
    mail("[team] Report", "bob@x.test", "Mon, 2 Mar 2026 09:00:00 +0000", "<2@x>"),
    mail("Re: Lunch?", "Anna <zz@x.test>", "Tue, 3 Mar 2026 12:30:00 +0000", "<3@x>", "<1@x>"),
    mail("Re: [team] Report", "Dan <dan@x.test>", "Wed, 4 Mar 2026 08:00:00 +0100", "<4@x>"),
    mail("Re: Re: Lunch?", "Carol <carol@x.test>", "Tue, 3 Mar 2026 12:40:00 +0000", "<5@x>",
         "<1@x> <3@x>"),
]


def test_sort_esort_and_thread(imap_server, client):
    for data in THREADED:
        ok(client.append("INBOX", None, None, data))
    ok(client.select("INBOX"))
    caps = set(ok(client.capability())[0].split())
    assert {b"SORT", b"SORT=DISPLAY", b"ESORT", b"THREAD=ORDEREDSUBJECT",
            b"THREAD=REFERENCES"} <= caps

    assert ok(client.sort("(DATE)", "UTF-8", "ALL")) == [b"2 1 3 5 4"]
    assert ok(client.sort("(SUBJECT REVERSE DATE)", "US-ASCII", "ALL")) == [b"5 3 1 4 2"]
    assert ok(client.sort("(FROM)", "UTF-8", "ALL")) == [b"2 1 5 4 3"]   # bob carol carol dan zz
    assert ok(client.sort("(DISPLAYFROM)", "UTF-8", "ALL")) == [b"3 2 1 5 4"]  # Anna bob@ Carol
    assert ok(client.uid("SORT", "(REVERSE SUBJECT)", "UTF-8", "NOT", "2")) == [b"4 1 3 5"]
    assert client.sort("(SIZE)", "KOI8-R", "ALL")[0] == "NO"
    with pytest.raises(imaplib.IMAP4.error, match="BAD"):
        client.sort("(BOGUS)", "UTF-8", "ALL")
    assert esearch(client, "RETURN", "(MIN MAX ALL COUNT)", "(REVERSE DATE)", "UTF-8", "ALL",
                   command="SORT") == b"MIN 4 MAX 2 ALL 4:5,3,1:2 COUNT 5"

    assert ok(client.thread("REFERENCES", "UTF-8", "ALL")) == [b"(2 4)(1 3 5)"]
    assert ok(client.thread("ORDEREDSUBJECT", "UTF-8", "ALL")) == [b"(2 4)(1 (3)(5))"]
    assert ok(client.uid("THREAD", "REFERENCES", "UTF-8", "SUBJECT", "lunch")) == [b"(1 3 5)"]
    with pytest.raises(imaplib.IMAP4.error, match="BAD"):
        client.thread("BOGUS", "UTF-8", "ALL")

    # A second session sorts and threads by the cached header blocks alone.
    cur = imap_server.maildir() / "cur"
    opens = FileOpens(cur)
    try:
        second = login(imap_server)
        ok(second.select("INBOX"))
        assert ok(second.sort("(SUBJECT REVERSE DATE)", "US-ASCII", "ALL")) == [b"5 3 1 4 2"]
        assert ok(second.thread("REFERENCES", "UTF-8", "ALL")) == [b"(2 4)(1 3 5)"]
        assert opens.names() == []
        second.logout()
    finally:
        opens.close()
