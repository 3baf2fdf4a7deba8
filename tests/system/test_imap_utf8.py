"""UTF8=ACCEPT (RFC 6855) over real sockets: after ENABLE, UTF-8 mailbox names in quoted
strings both ways and APPEND's UTF8 (literal8) of a message with a UTF-8 header; before it,
modified UTF-7 names and a BAD for the UTF8 item. (imaplib's own append() in UTF-8 mode puts
"UTF8 (" inside the literal, so the APPENDs go as exact bytes.)"""

from __future__ import annotations

from .imap_helpers import ok, RawSession, login

SUBJECT = "Grüße aus Köln".encode()
MESSAGE = b"From: a@example.test\r\nSubject: " + SUBJECT + b"\r\n\r\nHallo\r\n"


def append_utf8(session: RawSession, tag: bytes, folder: bytes) -> bytes:
    command = b"APPEND %s UTF8 (~{%d+}\r\n%s)" % (folder, len(MESSAGE), MESSAGE)
    return session.command(tag, command)[-1]


def test_utf8_accept_names_and_append(imap_server):
    session = RawSession(imap_server.imap_port)
    session.login()
    assert b"UTF8=ACCEPT" in session.command(b"C", b"CAPABILITY")[0]
    # Not enabled: modified UTF-7 names, and no UTF8 item.
    assert session.command(b"A", b"CREATE K&APY-ln")[-1].startswith(b"A OK")
    assert append_utf8(session, b"B", b"INBOX").startswith(b"B BAD")

    assert session.command(b"E", b"ENABLE UTF8=ACCEPT")[0] == b"* ENABLED UTF8=ACCEPT\r\n"
    assert '* LIST (\\HasNoChildren) "/" "Köln"\r\n'.encode() in session.command(
        b"L", b'LIST "" K*')
    assert append_utf8(session, b"P", '"Köln"'.encode()).startswith(b"P OK [APPENDUID ")
    assert '* STATUS "Köln" (MESSAGES 1)\r\n'.encode() in session.command(
        b"S", 'STATUS "Köln" (MESSAGES)'.encode())
    session.command(b"L", b"LOGOUT")
    session.close()

    # An IMAP4rev1 client without UTF8=ACCEPT sees the folder in modified UTF-7, the message
    # as it was appended.
    client = login(imap_server)
    ok(client.select("K&APY-ln"))
    assert ok(client.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))[0][1].strip() == (
        b"Subject: " + SUBJECT)
    client.logout()


def test_utf8_names_refused_when_not_utf8(imap_server):
    client = login(imap_server)
    ok(client.enable("UTF8=ACCEPT"))
    status, data = client._simple_command("CREATE", b'"\xff\xfe"')
    assert status == "NO" and b"UTF-8" in data[0]
    client.logout()
