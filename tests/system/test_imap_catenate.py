"""CATENATE (RFC 4469) over real sockets: messages built from TEXT literals and URLs to
messages of the same user, with MULTIAPPEND; BADURL, TOOBIG and TRYCREATE as the RFC says."""

from __future__ import annotations

import re

from .imap_helpers import RawSession, message


def text(data: bytes) -> bytes:
    return b"TEXT {%d+}\r\n%s" % (len(data), data)


def body(raw: RawSession, number: int) -> bytes:
    """BODY[] of message `number` of the selected folder."""
    lines = raw.command(b"F", b"FETCH %d BODY.PEEK[]" % number)
    return b"".join(lines[1:-1])[:-len(b")\r\n")]


def test_catenate(make_server):
    server = make_server(imap_services=True, server={"allow_plaintext_auth": True})
    server.start()
    raw = RawSession(server.imap_port)
    raw.login()
    assert b" CATENATE " in raw.command(b"C", b"CAPABILITY")[0]
    source = message(1)
    reply = raw.command(b"A", b"APPEND INBOX {%d+}\r\n%s" % (len(source), source))
    uidvalidity = int(re.search(rb"APPENDUID (\d+)", reply[-1])[1])
    assert raw.command(b"K", b"CREATE Built")[-1].startswith(b"K OK")
    header_url = b'"/INBOX;UIDVALIDITY=%d/;UID=1/;SECTION=HEADER"' % uidvalidity
    reply = raw.command(b"A", b"APPEND Built (\\Seen) CATENATE (URL %s %s) CATENATE (%s URL %s)"
                        % (header_url, text(b"new body\r\n"), text(b"X-New: 1\r\n\r\n"),
                           b'"/INBOX/;UID=1/;SECTION=TEXT/;PARTIAL=0.5"'))
    assert reply[-1].startswith(b"A OK [APPENDUID ")
    raw.command(b"S", b"SELECT Built")
    assert body(raw, 1) == source[:source.index(b"\r\n\r\n") + 4] + b"new body\r\n"
    assert body(raw, 2) == b"X-New: 1\r\n\r\nhello"

    # A wrong UIDVALIDITY, a missing UID or section: nothing is stored, in either message.
    for url in (b'"/INBOX;UIDVALIDITY=%d/;UID=1"' % (uidvalidity + 1), b'"/INBOX/;UID=9"',
                b'"/INBOX/;UID=1/;SECTION=4"', b'"/Nowhere/;UID=1"', b'"imap://x/INBOX/;UID=1"'):
        reply = raw.command(b"B", b"APPEND Built CATENATE (%s) CATENATE (URL %s)"
                            % (text(b"A: b\r\n\r\nc\r\n"), url))
        assert reply[-1].startswith(b"B NO [BADURL " + url.strip(b'"') + b"]"), reply
    assert raw.command(b"N", b"NOOP")[0] != b"* 3 EXISTS\r\n"
    # A folder below another: its separator stands in the URL as it is.
    raw.command(b"K", b"CREATE Work/Old")
    raw.command(b"A", b"APPEND Work/Old {%d+}\r\n%s" % (len(source), source))
    reply = raw.command(b"A", b'APPEND Built CATENATE (URL "/Work/Old/;UID=1")')
    assert reply[-1].startswith(b"A OK [APPENDUID ")
    assert body(raw, 3) == source
    reply = raw.command(b"T", b"APPEND Missing CATENATE (URL \"/INBOX/;UID=9\")")
    assert reply[-1].startswith(b"T NO [TRYCREATE]")
    raw.close()


def test_catenate_too_big(make_server):
    server = make_server(imap_services=True, server={"allow_plaintext_auth": True},
                         limits={"max_message_size": 1000})
    server.start()
    raw = RawSession(server.imap_port)
    raw.login()
    part = b"x" * 600
    reply = raw.command(b"A", b"APPEND INBOX CATENATE (%s %s)" % (text(part), text(part)))
    assert reply[-1].startswith(b"A NO [TOOBIG]")
    raw.close()
