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


def test_what_a_session_stores_into_its_selected_folder_is_recent_to_it_alone(make_server):
    """APPEND and COPY into the folder a session has selected read-write claim \\Recent in
    the store's own change set (one lock, one log write): the session gets the messages as
    \\Recent, as its next refresh would have given them, and no other session does; stored
    into a folder it has only EXAMINEd, they are left for the next read-write session."""
    server = make_server(imap_services=True, server={"allow_plaintext_auth": True})
    server.start()
    writer = RawSession(server.imap_port)
    writer.login()
    writer.command(b"S", b"SELECT INBOX")
    reply = writer.command(b"A", b"APPEND INBOX " + literal(message(1)) + b" "
                           + literal(message(2)))
    assert reply[:2] == [b"* 2 EXISTS\r\n", b"* 2 RECENT\r\n"]
    reply = writer.command(b"C", b"COPY 1 INBOX")
    assert reply[:2] == [b"* 3 EXISTS\r\n", b"* 3 RECENT\r\n"]
    assert writer.command(b"F", b"FETCH 1:3 (FLAGS)")[:3] == [
        b"* %d FETCH (FLAGS (\\Recent))\r\n" % n for n in (1, 2, 3)]
    reader = RawSession(server.imap_port)
    reader.login()
    assert b"* 0 RECENT\r\n" in reader.command(b"S", b"SELECT INBOX")
    assert reader.command(b"ST", b"STATUS INBOX (RECENT)")[0] == \
        b"* STATUS INBOX (RECENT 0)\r\n"
    # Read-only: an APPEND into an EXAMINEd folder claims nothing (the message shows as
    # \Recent to nobody's session yet); the writer's next refresh claims it.
    reader.command(b"E", b"EXAMINE INBOX")
    assert reader.command(b"A", b"APPEND INBOX " + literal(message(3)))[:2] == [
        b"* 4 EXISTS\r\n", b"* 1 RECENT\r\n"]
    assert reader.command(b"ST", b"STATUS INBOX (RECENT)")[0] == \
        b"* STATUS INBOX (RECENT 1)\r\n"
    assert writer.command(b"N", b"NOOP")[:2] == [b"* 4 EXISTS\r\n", b"* 4 RECENT\r\n"]
    assert reader.command(b"ST", b"STATUS INBOX (RECENT)")[0] == \
        b"* STATUS INBOX (RECENT 0)\r\n"
    reader.close()
    writer.close()
