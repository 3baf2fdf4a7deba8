"""MULTIAPPEND (RFC 3502) over real sockets against the real Maildir store: several messages
in one APPEND, one APPENDUID for all, and all or none. imaplib sends one message an APPEND:
a raw session sends several."""

from __future__ import annotations

from .conftest import USER, cli
from .imap_helpers import RawSession, login, message


def literal(data: bytes) -> bytes:
    return b"{%d+}\r\n%s" % (len(data), data)


def test_multiappend(make_server):
    server = make_server(imap_services=True, server={"allow_plaintext_auth": True})
    server.start()
    client = login(server)
    assert "MULTIAPPEND" in client.capabilities
    client.logout()
    session = RawSession(server.imap_port)
    session.login()
    reply = session.command(b"A", b"APPEND INBOX (\\Seen) " + literal(message(1)) + b" "
                            + b'"05-Nov-2026 16:29:44 +0100" ' + literal(message(2)) + b" "
                            + literal(message(3)))
    assert reply == [b"A OK [APPENDUID %s 1,2,3] APPEND completed\r\n"
                     % reply[0].split()[3]]
    # A bad date-time after two good messages: none of the three is stored.
    reply = session.command(b"B", b"APPEND INBOX " + literal(message(4)) + b" "
                            + literal(message(5)) + b' "yesterday" ' + literal(message(6)))
    assert reply[-1].startswith(b"B BAD")
    assert session.command(b"S", b"STATUS INBOX (MESSAGES)")[0] == \
        b"* STATUS INBOX (MESSAGES 3)\r\n"
    session.close()

    client = login(server)
    client.select("INBOX")
    status, data = client.fetch("1:3", "(FLAGS INTERNALDATE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    lines = [item for item in data if isinstance(item, tuple)]
    assert [item[1].strip() for item in lines] == [b"Subject: message %d" % n for n in (1, 2, 3)]
    assert b"\\Seen" in lines[0][0] and b" 5-Nov-2026 15:29:44 +0000" in lines[1][0]
    client.logout()


def test_multiappend_over_quota_stores_none(make_server):
    server = make_server(imap_services=True, server={"allow_plaintext_auth": True})
    server.start()
    cli(server.conf, "quota", "set", USER, "1M", "--messages", "2")
    session = RawSession(server.imap_port)
    session.login()
    reply = session.command(b"A", b"APPEND INBOX " + b" ".join(literal(message(n))
                                                               for n in range(3)))
    assert reply[-1].startswith(b"A NO [OVERQUOTA]")
    assert session.command(b"S", b"STATUS INBOX (MESSAGES)")[0] == \
        b"* STATUS INBOX (MESSAGES 0)\r\n"
    session.close()
