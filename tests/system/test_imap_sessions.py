"""Several IMAP sessions on one mailbox, IDLE, malformed input and the session caps, over raw
sockets where the exact bytes matter."""

from __future__ import annotations

import re
import smtplib
import time

import pytest

from .conftest import USER
from .imap_helpers import RawSession, fill, login, message


@pytest.fixture
def plain_server(make_server):
    server = make_server(imap_services=True, server={"allow_plaintext_auth": True})
    server.start()
    return server


def selected(server, count: int = 0) -> RawSession:
    session = RawSession(server.imap_port)
    session.login()
    lines = session.command(b"S", b"SELECT INBOX")
    assert b"* %d EXISTS\r\n" % count in lines and lines[-1].startswith(b"S OK [READ-WRITE]")
    return session


def test_changes_in_one_session_are_reported_to_the_other_at_noop(plain_server):
    client = login(plain_server)
    fill(client, 5)
    watcher = selected(plain_server, 5)
    client.select("INBOX")
    client.store("2", "+FLAGS", r"(\Flagged)")
    client.store("1,4", "+FLAGS", r"(\Deleted)")
    client.expunge()
    client.append("INBOX", None, None, message(99))
    lines = watcher.command(b"N", b"NOOP")
    # 1 and 4 went: "4" first, then "1" (2 and 3 are then 1 and 2), then the new one is 4.
    assert lines[:2] == [b"* 4 EXPUNGE\r\n", b"* 1 EXPUNGE\r\n"]
    assert b"* 4 EXISTS\r\n" in lines
    assert any(re.match(rb"\* 1 FETCH \(.*\\Flagged", line) for line in lines)
    assert lines[-1] == b"N OK NOOP completed\r\n"
    fetched = watcher.command(b"F", b"FETCH 1:* (UID)")
    assert [int(re.search(rb"UID (\d+)", line).group(1)) for line in fetched[:-1]] == [2, 3, 5, 6]
    client.logout()
    watcher.close()


def test_fetch_does_not_report_expunges_but_uid_fetch_does(plain_server):
    client = login(plain_server)
    fill(client, 3)
    watcher = selected(plain_server, 3)
    client.select("INBOX")
    client.store("1", "+FLAGS", r"(\Deleted)")
    client.expunge()
    lines = watcher.command(b"F", b"FETCH 3 (UID)")
    assert not any(b"EXPUNGE" in line for line in lines) and lines[0] == b"* 3 FETCH (UID 3)\r\n"
    # The FETCH answers against the view it found, then the EXPUNGE moves the view on.
    assert watcher.command(b"U", b"UID FETCH 3 (UID)") == [
        b"* 3 FETCH (UID 3)\r\n", b"* 1 EXPUNGE\r\n", b"U OK FETCH completed\r\n"]
    assert watcher.command(b"V", b"FETCH 2 (UID)")[0] == b"* 2 FETCH (UID 3)\r\n"
    client.logout()
    watcher.close()


def test_a_selected_folder_deleted_by_another_session_ends_this_one_with_bye(plain_server):
    """Found by the long fuzz run: the next command crashed the session (a traceback in the
    log). Now it is answered, then BYE, as Dovecot does; at NOOP and while idling alike."""
    client = login(plain_server)
    watchers = []
    for folder in (b"Work", b"Play", b"Read"):
        client.create(folder.decode())
        fill(client, 2, folder.decode())
        watcher = RawSession(plain_server.imap_port)
        watcher.login()
        assert watcher.command(b"S", b"SELECT " + folder)[-1].startswith(b"S OK [READ-WRITE]")
        watchers.append(watcher)
    noop_watcher, idle_watcher, fetch_watcher = watchers
    idle_watcher.send(b"I IDLE\r\n")
    assert idle_watcher.readline() == b"+ idling\r\n"
    for folder in ("Work", "Play", "Read"):
        assert client.delete(folder)[0] == "OK"
    # Reading a message of the deleted folder fails with NO; the next NOOP ends the session.
    lines = fetch_watcher.command(b"F", b"FETCH 1 BODY[]")
    assert lines[-1].startswith(b"F NO [UNAVAILABLE]")
    assert fetch_watcher.command(b"N", b"NOOP")[-1] == b"N OK NOOP completed\r\n"
    assert fetch_watcher.readline().startswith(b"* BYE The selected folder was deleted")
    lines = noop_watcher.command(b"N", b"NOOP")
    assert noop_watcher.readline() == b"* BYE The selected folder was deleted, have to disconnect\r\n"
    assert noop_watcher.readline() == b""  # closed
    started = time.monotonic()
    assert idle_watcher.readline() == b"* BYE The selected folder was deleted, have to disconnect\r\n"
    assert idle_watcher.readline() == b"" and time.monotonic() - started < 5
    assert lines[-1] == b"N OK NOOP completed\r\n"
    for watcher in watchers:
        watcher.close()
    client.logout()
    assert "Traceback" not in plain_server.log()


def test_idle_pushes_a_delivered_message_within_a_second(plain_server):
    watcher = selected(plain_server, 0)
    watcher.send(b"I IDLE\r\n")
    assert watcher.readline() == b"+ idling\r\n"
    with smtplib.SMTP("127.0.0.1", plain_server.port, timeout=10) as smtp:
        smtp.sendmail("bob@remote.test", [USER], message(1))
    plain_server.wait_delivered(1)
    delivered = time.monotonic()
    assert watcher.readline() == b"* 1 EXISTS\r\n"
    assert time.monotonic() - delivered < 1.0
    assert watcher.readline() == b"* 1 RECENT\r\n"
    client = login(plain_server)
    client.select("INBOX")
    client.store("1", "+FLAGS", r"(\Deleted)")
    client.expunge()
    assert watcher.readline() == b"* 1 EXPUNGE\r\n"
    watcher.send(b"DONE\r\n")
    assert watcher.readline() == b"I OK IDLE terminated\r\n"
    assert watcher.command(b"N", b"NOOP") == [b"N OK NOOP completed\r\n"]
    client.logout()
    watcher.close()


MALFORMED = [
    (b"a1 FETCH 1 (FLAGS", b"a1 BAD"),                  # unbalanced parentheses
    (b"a2 FETCH 1 FLAGS)", b"a2 BAD"),
    (b"a3 FETCH 1:zz FLAGS", b"a3 BAD"),                # bad sequence sets
    (b"a4 FETCH 4294967296 FLAGS", b"a4 BAD"),
    (b"a5 FETCH 7 FLAGS", b"a5 BAD"),
    (b"a6 SELECT \xe2\x82\xac", b"a6 BAD"),              # 8-bit in an atom
    (b"a7 APPEND INBOX {999999999999}", b"a7 BAD"),     # huge literal
    (b"a9 LOGIN", b"a9 BAD"),
    (b"a10 " + b"(" * 100, b"a10 BAD"),                 # nesting
    (b"\xff\xfe garbage", b"* BAD"),
    (b"a11 FETCH 1 BODY[1.0]", b"a11 BAD"),
    (b"a12 STORE 1 FLAGS (\\Nope)", b"a12 BAD"),
    (b"a13 SEARCH FROBNICATE", b"a13 BAD"),
    (b"a14 UID FROB 1", b"a14 BAD"),
    (b'a15 LIST "" "\xff"', b"a15 BAD"),
    (b"a16 " + b"x" * 70000, b"* BAD"),                 # over-long line: no tag yet
]


def test_malformed_input_is_bad_and_the_session_survives(plain_server):
    client = login(plain_server)
    fill(client, 1)
    client.logout()
    (pid,) = plain_server.worker_pids("imap")
    session = selected(plain_server, 1)
    for line, reply in MALFORMED:
        session.send(line + b"\r\n")
        answer = session.readline()
        assert answer.startswith(reply), (line[:40], answer)
        assert session.command(b"N", b"NOOP")[-1] == b"N OK NOOP completed\r\n", line[:40]
    # A truncated literal: the connection goes away in the middle of it.
    session.send(b"T APPEND INBOX {100}\r\n")
    assert session.readline() == b"+ Ready for literal data\r\n"
    session.send(b"only part of it")
    session.close()
    session = selected(plain_server, 1)
    assert session.command(b"Z", b"LOGOUT")[-1] == b"Z OK LOGOUT completed\r\n"
    session.close()
    assert plain_server.worker_pids("imap") == [pid]
    assert "Traceback" not in plain_server.log()


def test_literal_plus_and_synchronizing_literals(plain_server):
    session = RawSession(plain_server.imap_port)
    session.login()
    data = message(1)
    session.send(b"A APPEND INBOX (\\Seen) {%d+}\r\n%s\r\n" % (len(data), data))
    assert re.match(rb"A OK \[APPENDUID \d+ 1\]", session.readline())
    session.send(b"B APPEND INBOX {%d}\r\n" % len(data))
    assert session.readline() == b"+ Ready for literal data\r\n"
    session.send(data + b"\r\n")
    assert re.match(rb"B OK \[APPENDUID \d+ 2\]", session.readline())
    session.close()


def test_sessions_per_user_are_capped(make_server):
    server = make_server(imap_services=True, server={"allow_plaintext_auth": True},
                         limits={"max_sessions_per_user": 2})
    server.start()
    first, second = login(server), login(server)
    third = RawSession(server.imap_port)
    lines = third.command(b"L", b'LOGIN alice@example.test "correct horse"')
    assert lines[-1].startswith(b"L NO [LIMIT]")
    first.logout()
    time.sleep(0.5)
    third.login()
    second.logout()
    third.close()


def test_connection_cap_is_bye(make_server):
    server = make_server(imap_services=True, imap={"max_connections_per_ip": 1})
    server.start()
    session = RawSession(server.imap_port)
    second = RawSession(server.imap_port)
    assert second.greeting.startswith(b"* BYE [UNAVAILABLE]")
    session.close()
    second.close()


def test_atoms_with_every_atom_char_are_mailbox_names(plain_server):
    """imaptest's atoms script: "[" and "}" are ATOM-CHARs (RFC 3501 9), so these are valid
    astrings (this one names no folder: "&'" is no modified UTF-7); "[" opens a section only
    in FETCH items."""
    session = RawSession(plain_server.imap_port)
    session.login()
    name = b"!#$&'+,-.0123456789:;<=>?@^_`|[}"
    assert session.command(b"S", b"SELECT " + name)[-1].startswith(b"S NO ")
    assert session.command(b"L", b'LIST "" ' + name + b"%*") == [b"L OK LIST completed\r\n"]
    assert session.command(b"T", b"SELECT ~foo")[-1].startswith(b"T NO ")
    assert session.command(b"U", b'LIST "" ~foo') == [b"U OK LIST completed\r\n"]
    folder = b"!#$+,-.0123456789:;<=>?@^_`|[}~"
    assert session.command(b"C", b"CREATE " + folder)[-1].startswith(b"C OK")
    assert session.command(b"M", b'LIST "" ' + folder[:-2] + b"%*") == [
        b'* LIST (\\HasNoChildren) "/" ' + folder + b"\r\n", b"M OK LIST completed\r\n"]
    assert session.command(b"E", b"SELECT " + folder)[-1].startswith(b"E OK [READ-WRITE]")
    session.close()
