"""FETCH of cached fields opens no message file (#14): once one session has read a message,
another session's FETCH of ENVELOPE, BODYSTRUCTURE and header fields is answered from the
folder's summary cache, byte for byte as before, with the message files unreadable and
changed, and inotify seeing no open of them."""

from __future__ import annotations

import os

from .file_opens import FileOpens
from .imap_helpers import RawSession, message

FORWARDED = (b"From: Carol <carol@example.com>\r\nTo: alice@example.test\r\n"
             b"Subject: Fwd: r\xc3\xa9sum\xc3\xa9\r\nMIME-Version: 1.0\r\n"
             b"Content-Type: multipart/mixed; boundary=b1\r\n\r\n"
             b"--b1\r\nContent-Type: text/plain\r\n\r\nForwarding this.\r\n"
             b"--b1\r\nContent-Type: message/rfc822\r\n\r\n"
             b"From: Anna <anna@example.com>\r\nSubject: inner\r\n\r\nInner text.\r\n"
             b"--b1--\r\n")
CACHED_FETCH = (b"FETCH 1:* (ENVELOPE BODYSTRUCTURE INTERNALDATE RFC822.SIZE "
                b"BODY.PEEK[HEADER.FIELDS (From Subject Message-ID)] BODY RFC822.HEADER)")


def session(imap_server) -> RawSession:
    client = RawSession(imap_server.imap_port)
    client.login()
    return client


def append(client: RawSession, data: bytes) -> None:
    client.send(b"A APPEND INBOX {%d}\r\n" % len(data))
    assert client.readline().startswith(b"+")
    client.send(data + b"\r\n")
    assert client.until_tagged(b"A")[-1].startswith(b"A OK")


def spoil(cur) -> None:
    """Every message file unreadable (for all but root) and holding other bytes, its date
    kept: a FETCH that read one would fail or tell."""
    for name in os.listdir(cur):
        path = cur / name
        stat = path.stat()
        path.write_bytes(b"Subject: not the message\r\n\r\nnot the body\r\n")
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        path.chmod(0)


def test_a_second_session_fetches_cached_fields_without_opening_a_message(imap_server):
    first = session(imap_server)
    for data in (message(1), FORWARDED, message(2).replace(b"Subject", b"X-Long: " + b"y" * 900
                                                           + b"\r\nSubject")):
        append(first, data)
    assert first.command(b"S", b"SELECT INBOX")[-1].startswith(b"S OK")
    answer = first.command(b"F", CACHED_FETCH)
    assert answer[-1].startswith(b"F OK") and len(answer) > 3
    first.command(b"Z", b"LOGOUT")
    first.close()

    cur = imap_server.maildir() / "cur"
    spoil(cur)
    opens = FileOpens(cur)
    try:
        second = session(imap_server)
        assert second.command(b"S", b"SELECT INBOX")[-1].startswith(b"S OK")
        assert second.command(b"F", CACHED_FETCH) == answer
        # Not PEEK: \Seen is set all the same, and the answer says so.
        seen = second.command(b"G", b"FETCH 2 BODY[HEADER.FIELDS (Subject)]")
        assert seen[0].startswith(b"* 2 FETCH (BODY[HEADER.FIELDS (Subject)] {")
        assert seen[1] == b"Subject: Fwd: r\xc3\xa9sum\xc3\xa9\r\n" and b"\\Seen" in seen[3]
        assert second.command(b"H", b'SEARCH SUBJECT "fwd" FROM carol')[0] == b"* SEARCH 2\r\n"
        assert opens.names() == []
        # The watch does see the imap_server open a file: a body is not cached.
        for name in os.listdir(cur):
            (cur / name).chmod(0o600)
        body = second.command(b"T", b"FETCH 1 BODY.PEEK[TEXT]")
        assert body[1] == b"not the body\r\n"
        assert len(opens.names()) == 1
        second.command(b"Z", b"LOGOUT")
        second.close()
    finally:
        opens.close()


def test_a_lost_or_damaged_cache_only_costs_reading_again(imap_server):
    first = session(imap_server)
    append(first, message(1))
    assert first.command(b"S", b"SELECT INBOX")[-1].startswith(b"S OK")
    answer = first.command(b"F", CACHED_FETCH)
    cache = imap_server.maildir() / "mailforge-cache"
    assert cache.stat().st_size > 0
    cache.write_bytes(b"\0" * 100)
    second = session(imap_server)
    assert second.command(b"S", b"SELECT INBOX")[-1].startswith(b"S OK")
    assert second.command(b"F", CACHED_FETCH) == answer
    cache.unlink()
    assert second.command(b"F", CACHED_FETCH) == answer
    assert first.command(b"F", CACHED_FETCH) == answer
    for client in (first, second):
        client.command(b"Z", b"LOGOUT")
        client.close()
