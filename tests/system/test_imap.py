"""IMAP and IMAPS over real sockets with Python's imaplib: every RFC 3501 command and the
extensions (plain, STARTTLS, implicit TLS), against the real Maildir store."""

from __future__ import annotations

import imaplib
import re
import select
import smtplib

import pytest

from .conftest import PASSWORD, USER
from .imap_helpers import RawSession, fill, login, message, tls_context


@pytest.fixture
def plain_server(make_server):
    server = make_server(imap_services=True, server={"allow_plaintext_auth": True})
    server.start()
    return server


@pytest.fixture
def tls_server(make_server):
    server = make_server(imap_services=True)
    server.start()
    return server


def ok(result):
    status, data = result
    assert status == "OK", data
    return data


def test_folder_commands(plain_server):
    client = login(plain_server)
    assert "IDLE" in client.capabilities and "UIDPLUS" in client.capabilities
    ok(client.create("Work/Projects"))
    ok(client.create("&AMk-t&AOk-"))  # "Été" in modified UTF-7
    listing = ok(client.list())
    names = [line.rsplit(b' "/" ', 1)[1] for line in listing]
    assert names[0] == b"INBOX" and b"Work" in names and b"Work/Projects" in names
    assert b"&AMk-t&AOk-" in names and b"Sent" in names
    assert any(b"\\HasChildren" in line and line.endswith(b" Work") for line in listing)
    assert any(b"\\Sent" in line for line in listing)  # SPECIAL-USE
    xlist = ok(client.xatom("XLIST", '""', '"*"')) and client.untagged_responses.pop("XLIST")
    assert any(b"\\Inbox" in line for line in xlist)
    ok(client.subscribe("Work"))
    assert [line.rsplit(b" ", 1)[1] for line in ok(client.lsub())].count(b"Work") == 1
    ok(client.unsubscribe("Work"))
    assert ok(client.lsub()) == [None]
    ok(client.rename("Work/Projects", "Work/Done"))
    assert client.select("Work/Projects")[0] == "NO"
    status, data = client.create("Work/Done")
    assert status == "NO" and b"[ALREADYEXISTS]" in data[0]
    ok(client.delete("Work/Done"))
    status, data = client.delete("Nowhere")
    assert status == "NO" and b"[NONEXISTENT]" in data[0]
    assert ok(client.namespace()) == [b'(("" "/")) (("#shared/" "/")) (("#public/" "/"))']
    root = ok(client.getquotaroot("INBOX"))
    assert root[0][0] == b'INBOX ""' or root[0] == b'INBOX ""'
    ok(client.getquota('""'))
    client.logout()


def test_append_select_fetch_store_search(plain_server):
    client = login(plain_server)
    date = imaplib.Time2Internaldate(1_700_000_000)
    status, data = client.append("INBOX", r"(\Flagged $Work)", date, message(1))
    assert status == "OK" and re.search(rb"\[APPENDUID \d+ 1\]", data[0])
    fill(client, 2)
    assert ok(client.status("INBOX", "(MESSAGES UNSEEN UIDNEXT)")) == [
        b'INBOX (MESSAGES 3 UNSEEN 3 UIDNEXT 4)']
    assert ok(client.select("INBOX")) == [b"3"]
    assert client.untagged_responses.get("RECENT") == [b"3"]
    fetched = ok(client.fetch("1", "(UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)"))[0]
    assert b"UID 1" in fetched and b"\\Flagged" in fetched and b"$Work" in fetched
    assert b"14-Nov-2023" in fetched and b'"message 1"' in fetched
    assert b"RFC822.SIZE %d" % len(message(1)) in fetched
    body = ok(client.fetch("2", "(BODY.PEEK[])"))[0][1]
    assert body == message(0)
    header = ok(client.fetch("2", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))[0][1]
    assert header == b"Subject: message 0\r\n\r\n"
    assert b"BODYSTRUCTURE" in ok(client.fetch("2", "BODYSTRUCTURE"))[0]
    assert b"\\Seen" not in ok(client.fetch("2", "FLAGS"))[0]
    ok(client.fetch("2", "(BODY[TEXT])"))  # not PEEK: sets \Seen
    assert b"\\Seen" in ok(client.fetch("2", "FLAGS"))[0]
    assert ok(client.search(None, "UNSEEN")) == [b"1 3"]
    assert ok(client.search(None, 'SUBJECT "message 0"')) == [b"2"]
    assert ok(client.uid("SEARCH", "FLAGGED")) == [b"1"]
    stored = ok(client.store("1:2", "+FLAGS", r"(\Deleted)"))
    assert len(stored) == 2 and all(b"\\Deleted" in line for line in stored)
    assert ok(client.uid("STORE", "3", "+FLAGS.SILENT", r"(\Answered)")) == [None]
    ok(client.check())
    assert ok(client.expunge()) == [b"2", b"1"]
    assert ok(client.uid("FETCH", "1:*", "(FLAGS)")) == [b"1 (UID 3 FLAGS (\\Answered \\Recent))"]
    ok(client.close())
    assert ok(client.select("INBOX", readonly=True)) == [b"1"]
    assert client.store("1", "+FLAGS", r"(\Seen)")[0] == "NO"
    ok(client.unselect())
    client.logout()


def test_copy_move_uid_expunge_and_trycreate(plain_server):
    client = login(plain_server)
    fill(client, 4)
    ok(client.select("INBOX"))
    status, data = client.copy("1", "Nowhere")
    assert status == "NO" and b"[TRYCREATE]" in data[0]
    ok(client.create("Saved"))
    status, data = client.copy("1:2", "Saved")
    assert status == "OK" and re.search(rb"\[COPYUID \d+ 1:2 1:2\]|\[COPYUID \d+ 1,2 1,2\]", data[0])
    status, data = client.uid("MOVE", "3", "Saved")
    assert status == "OK"
    assert client.untagged_responses.pop("EXPUNGE", None) == [b"3"]
    ok(client.store("1:2", "+FLAGS", r"(\Deleted)"))
    ok(client.uid("EXPUNGE", "2"))  # only UID 2, though 1 is \Deleted too
    assert ok(client.uid("SEARCH", "ALL")) == [b"1 4"]
    assert ok(client.status("Saved", "(MESSAGES)")) == [b"Saved (MESSAGES 3)"]
    client.logout()


def test_id_enable_and_unknown_commands(plain_server):
    client = imaplib.IMAP4("127.0.0.1", plain_server.imap_port, timeout=20)
    status, _ = client.xatom("ID", '("name" "test")')
    assert status == "OK" and b'"mailforge"' in client.untagged_responses.pop("ID")[0]
    client.login(USER, PASSWORD)
    ok(client.enable("CONDSTORE"))
    with pytest.raises(imaplib.IMAP4.error, match="Unknown command"):
        client.xatom("XYZZY")
    client.logout()


def test_starttls_then_login_and_sasl(tls_server):
    client = imaplib.IMAP4("127.0.0.1", tls_server.imap_port, timeout=20)
    assert "STARTTLS" in client.capabilities and "LOGINDISABLED" in client.capabilities
    with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
        client.login(USER, PASSWORD)
    client.starttls(tls_context(tls_server))
    assert "AUTH=PLAIN" in client.capabilities and "STARTTLS" not in client.capabilities
    client.authenticate("PLAIN", lambda _: f"\0{USER}\0{PASSWORD}".encode())
    ok(client.select("INBOX"))
    client.logout()
    client = imaplib.IMAP4("127.0.0.1", tls_server.imap_port, timeout=20)
    client.login_cram_md5(USER, PASSWORD)  # over plain text: no password on the wire
    client.logout()
    client = imaplib.IMAP4("127.0.0.1", tls_server.imap_port, timeout=20)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        client.login_cram_md5(USER, "wrong")
    client.logout()


def test_imaps_implicit_tls(tls_server):
    with smtplib.SMTP("127.0.0.1", tls_server.port, timeout=10) as smtp:
        smtp.sendmail("bob@remote.test", [USER], message(7))
    tls_server.wait_delivered(1)
    client = imaplib.IMAP4_SSL("127.0.0.1", tls_server.imaps_port, timeout=20,
                                ssl_context=tls_context(tls_server))
    assert "STARTTLS" not in client.capabilities and "AUTH=PLAIN" in client.capabilities
    client.login(USER, PASSWORD)
    assert ok(client.select("INBOX")) == [b"1"]
    assert ok(client.fetch("1", "(BODY.PEEK[])"))[0][1].endswith(message(7))
    client.logout()


def test_append_over_quota_and_literal_limits(make_server):
    server = make_server(imap_services=True, server={"allow_plaintext_auth": True},
                         limits={"max_message_size": 4096})
    server.start()
    client = login(server)
    assert "APPENDLIMIT=4096" in client.capabilities
    with pytest.raises(imaplib.IMAP4.error, match="TOOBIG"):
        client.append("INBOX", None, None, b"x" * 5000)
    ok(client.noop())
    client.logout()
    # A non-synchronizing literal comes whatever the server thinks of it: it is read and
    # thrown away, and the next command is a command again.
    session = RawSession(server.imap_port)
    session.login()
    session.send(b"A APPEND INBOX {5000+}\r\n" + b"x" * 5000 + b"\r\n")
    assert session.readline().startswith(b"A BAD [TOOBIG]")
    assert session.command(b"B", b"NOOP") == [b"B OK NOOP completed\r\n"]
    session.close()


def test_idle_timeout_says_autologout(make_server):
    server = make_server(imap_services=True, imap={"idle_timeout": 1})
    server.start()
    client = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=20)
    readable, _, _ = select.select([client.sock], [], [], 10)  # the server's goodbye
    assert readable
    with pytest.raises(imaplib.IMAP4.abort, match="Autologout"):
        client.noop()


def test_header_fields_may_be_quoted(make_server):
    """RFC 3501 9: header-fld-name is an astring, so clients may quote header names."""
    server = make_server(imap_services=True, server={"allow_plaintext_auth": True})
    server.start()
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as smtp:
        smtp.sendmail("a@remote.test", [USER], b"From: a@remote.test\r\nSubject: quoted\r\n\r\nbody\r\n")
    server.wait_delivered(1)
    client = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=10)
    client.login(USER, PASSWORD)
    client.select("INBOX", readonly=True)
    typ, data = client.fetch("1", '(BODY.PEEK[HEADER.FIELDS ("Subject")])')
    assert typ == "OK" and data[0][1] == b"Subject: quoted\r\n\r\n"
    client.logout()
