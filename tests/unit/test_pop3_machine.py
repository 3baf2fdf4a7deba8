"""The POP3 state machine by transcript, and the multi-line message framing."""

import base64

import hashlib

import pytest

from mailforge.protocols.pop3 import MAX_ERRORS, POP3Machine, POP3Settings, State
from mailforge.protocols.pop3d import MessageLines
from mailforge.protocols.session import Action

USER, PASSWORD = "alice@example.test", "pass word"
LISTING = [("1.Qa.host", 100), ("2.Qb.host", 20), ("3.Qc.host", 3)]


class Accounts:
    def check_password(self, address, password):
        return address.lower() == USER and password == PASSWORD

    def verify_apop(self, address, timestamp, digest):
        expected = hashlib.md5((timestamp + APOP_SECRET).encode()).hexdigest()
        return address.lower() == USER and digest == expected


def machine(tls=False, plaintext=False, tls_available=True):
    return POP3Machine(POP3Settings("mx.test", tls_available, plaintext), Accounts(), tls)


def run(m, transcript):
    for line, expected in transcript:
        got = m.handle(line)
        assert got.text.startswith(expected), (line, got.text)
    return got


def logged_in(listing=LISTING):
    m = machine(tls=True)
    run(m, [(b"USER alice@example.test", b"+OK")])
    assert m.handle(b"PASS " + PASSWORD.encode()).action is Action.OPEN_MAILDROP
    assert m.maildrop_opened(list(listing)).text == b"+OK Logged in, 3 messages (123 octets)\r\n"
    return m


APOP_SECRET = "tanstaaf"


def test_apop_with_the_greeting_timestamp():
    """RFC 1939 7's example digest, with its timestamp put in our greeting."""
    m = machine()
    m.timestamp = "<1896.697170952@dbc.mtview.ca.us>"
    assert m.timestamp.encode() in m.greeting()
    reply = m.handle(b"APOP alice@example.test c4c9334bac560ecc979e58001b3e22fb")
    assert reply.action is Action.OPEN_MAILDROP and m.user == USER


def test_apop_wrong_digest_unknown_user_and_syntax():
    m = machine()
    assert m.handle(b"APOP alice@example.test c4c9334bac560ecc979e58001b3e22fb").text == (
        b"-ERR [AUTH] Authentication failed\r\n")  # another session's timestamp
    assert m.handle(b"APOP alice@example.test").text.startswith(b"-ERR Syntax")


def test_greeting_timestamps_differ_per_session():
    first, second = machine().timestamp, machine().timestamp
    assert first != second and first.startswith("<") and first.endswith("@mx.test>")


def test_capa_before_tls_offers_stls_and_no_plaintext():
    text = machine().handle(b"CAPA").text.decode()
    lines = text.split("\r\n")
    assert lines[0].startswith("+OK") and text.endswith("\r\n.\r\n")
    for cap in ("TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "STLS",
                "SASL SCRAM-SHA-256 CRAM-MD5", "IMPLEMENTATION mailforge"):
        assert any(line.startswith(cap) for line in lines), cap
    assert "USER" not in lines and "PLAIN" not in text


def test_capa_in_tls_offers_user_and_plain_but_not_stls():
    lines = machine(tls=True).handle(b"CAPA").text.decode().split("\r\n")
    assert "USER" in lines and "STLS" not in lines
    assert "SASL SCRAM-SHA-256 CRAM-MD5 PLAIN LOGIN" in lines


def test_plaintext_login_refused_before_tls():
    m = machine()
    run(m, [(b"USER alice@example.test", b"-ERR [AUTH] Plaintext"),
            (b"AUTH PLAIN", b"-ERR [AUTH] Plaintext")])
    reply = m.handle(b"STLS")
    assert reply.text == b"+OK Begin TLS negotiation\r\n" and reply.action is Action.STARTTLS
    m.tls_started()
    run(m, [(b"STLS", b"-ERR TLS already active"), (b"USER alice@example.test", b"+OK")])


def test_stls_without_certificate():
    assert machine(tls_available=False).handle(b"STLS").text.startswith(b"-ERR TLS not available")


def test_wrong_password_then_right():
    m = machine(plaintext=True)
    run(m, [(b"PASS x", b"-ERR Send USER first"), (b"USER alice@example.test", b"+OK"),
            (b"PASS wrong", b"-ERR [AUTH] Authentication failed"),
            # The failed PASS forgot the USER (RFC 1939 7).
            (b"PASS " + PASSWORD.encode(), b"-ERR Send USER first"),
            (b"USER Alice@Example.TEST", b"+OK")])
    assert m.handle(b"PASS pass word").action is Action.OPEN_MAILDROP
    assert m.user == USER  # canonical: the maildrop and its lock are found by it


def test_auth_plain_with_initial_response_and_cancel():
    m = machine(tls=True)
    assert m.handle(b"AUTH").text.decode().split("\r\n")[1:-1] == [
        "SCRAM-SHA-256", "CRAM-MD5", "PLAIN", "LOGIN", "."]
    run(m, [(b"AUTH PLAIN", b"+ "), (b"*", b"-ERR Authentication cancelled"),
            (b"AUTH LOGIN", b"+ " + base64.b64encode(b"Username:")),
            (base64.b64encode(USER.encode()), b"+ "),
            (base64.b64encode(b"bad"), b"-ERR [AUTH] Authentication failed")])
    run(m, [(b"AUTH PLAIN", b"+ ")])
    assert m.line_too_long().text == b"-ERR Line too long\r\n"
    assert m.handle(b"NOOP").text.startswith(b"-ERR NOOP is only valid after login")  # not SASL
    token = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode())
    assert m.handle(b"AUTH PLAIN " + token).action is Action.OPEN_MAILDROP


def test_maildrop_in_use_keeps_authorization_state():
    m = machine(tls=True)
    run(m, [(b"USER alice@example.test", b"+OK")])
    m.handle(b"PASS " + PASSWORD.encode())
    assert m.maildrop_busy().text.startswith(b"-ERR [IN-USE]")
    assert m.state is State.AUTHORIZATION and not m.user
    assert m.maildrop_failed().text.startswith(b"-ERR [SYS/TEMP]")


@pytest.mark.parametrize("line", [b"STAT", b"LIST", b"RETR 1", b"DELE 1", b"NOOP", b"RSET",
                                  b"TOP 1 1", b"UIDL"])
def test_transaction_commands_before_login(line):
    assert machine().handle(line).text.startswith(b"-ERR ") and b"after login" in machine().handle(line).text


@pytest.mark.parametrize("line", [b"USER bob", b"PASS x", b"AUTH PLAIN", b"STLS", b"APOP a b"])
def test_authorization_commands_after_login(line):
    assert logged_in().handle(line).text.startswith(b"-ERR " + line.split()[0] + b" is only valid before")


@pytest.mark.parametrize("line, expected", [
    (b"", b"-ERR Bad command"), (b"RETRIEVE 1", b"-ERR Bad command"), (b"RE\x00R 1", b"-ERR Bad"),
    (b"XYZZ", b"-ERR Unknown command"), (b"RETR", b"-ERR Syntax: RETR"),
    (b"RETR 0", b"-ERR There is no message 0"), (b"RETR 4", b"-ERR There is no message 4"),
    (b"RETR -1", b"-ERR Invalid message number"), (b"RETR 1x", b"-ERR Invalid message number"),
    (b"RETR " + b"9" * 5000, b"-ERR Invalid message number"), (b"RETR 1 2", b"-ERR Syntax"),
    (b"TOP 1", b"-ERR Syntax: TOP"), (b"TOP 1 x", b"-ERR Syntax: TOP"), (b"LIST 1 2", b"-ERR Syntax"),
    (b"STAT 1", b"-ERR Syntax: STAT"), (b"NOOP x", b"-ERR Syntax: NOOP"), (b"DELE", b"-ERR Syntax"),
])
def test_malformed_commands_in_transaction(line, expected):
    assert logged_in().handle(line).text.startswith(expected)


def test_transaction_transcript():
    m = logged_in()
    assert m.handle(b"stat").text == b"+OK 3 123\r\n"
    assert m.handle(b"LIST").text == b"+OK 3 messages (123 octets)\r\n1 100\r\n2 20\r\n3 3\r\n.\r\n"
    assert m.handle(b"UIDL 2").text == b"+OK 2 2.Qb.host\r\n"
    retr = m.handle(b"RETR 1")
    assert (retr.text, retr.action, retr.message, retr.lines) == (
        b"+OK 100 octets\r\n", Action.SEND_MESSAGE, 0, None)
    top = m.handle(b"TOP 3 0")
    assert (top.action, top.message, top.lines) == (Action.SEND_MESSAGE, 2, 0)
    run(m, [(b"DELE 2", b"+OK Message 2 deleted"), (b"DELE 2", b"-ERR Message 2 is deleted"),
            (b"RETR 2", b"-ERR Message 2 is deleted"), (b"LIST 2", b"-ERR Message 2 is deleted"),
            (b"STAT", b"+OK 2 103"), (b"NOOP", b"+OK")])
    assert m.handle(b"UIDL").text == b"+OK 2 messages (103 octets)\r\n1 1.Qa.host\r\n3 3.Qc.host\r\n.\r\n"
    run(m, [(b"RSET", b"+OK 3 messages (123 octets)"), (b"STAT", b"+OK 3 123"),
            (b"DELE 1", b"+OK"), (b"DELE 3", b"+OK")])
    quit = m.handle(b"QUIT")
    assert quit.action is Action.UPDATE and m.deleted == {0, 2}
    done = m.updated(0)
    assert done.text == b"+OK Logging out, 2 messages deleted\r\n" and done.action is Action.CLOSE
    assert m.updated(1).text.startswith(b"-ERR [SYS/TEMP] 1 deleted")


def test_one_message_and_one_octet_are_singular():
    m = machine(tls=True)
    run(m, [(b"USER alice@example.test", b"+OK"), (b"PASS " + PASSWORD.encode(), b"")])
    assert m.maildrop_opened([("1.Qa.host", 1)]).text == b"+OK Logged in, 1 message (1 octet)\r\n"
    assert m.handle(b"LIST").text == b"+OK 1 message (1 octet)\r\n1 1\r\n.\r\n"
    assert m.handle(b"RETR 1").text == b"+OK 1 octet\r\n"
    run(m, [(b"DELE 1", b"+OK Message 1 deleted"), (b"RSET", b"+OK 1 message (1 octet)\r\n"),
            (b"DELE 1", b"+OK")])
    assert m.handle(b"QUIT").action is Action.UPDATE
    assert m.updated(0).text == b"+OK Logging out, 1 message deleted\r\n"
    assert m.updated(1).text.startswith(b"-ERR [SYS/TEMP] 1 deleted message not removed")


def test_last_is_refused_quietly_so_that_fetchmail_falls_back_to_uidl():
    """RFC 1460's LAST: -ERR, which fetchmail answers with UIDL; not an error that counts
    toward hanging up, nor one the session record logs."""
    m = logged_in()
    for _ in range(MAX_ERRORS + 5):
        reply = m.handle(b"LAST")
        assert reply.text.startswith(b"-ERR LAST was removed") and reply.action is Action.NONE
        assert reply.quiet
    assert m.errors == 0
    assert machine().handle(b"LAST").text.startswith(b"-ERR LAST is only valid after login")


def test_quit_without_deletes_and_before_login_just_closes():
    for m in (machine(), logged_in()):
        reply = m.handle(b"QUIT")
        assert reply.text.startswith(b"+OK") and reply.action is Action.CLOSE


def test_too_many_errors_close_the_session():
    m = machine()
    for _ in range(MAX_ERRORS - 1):
        assert m.handle(b"BOGUS").action is Action.NONE
    assert m.handle(b"BOGUS").action is Action.CLOSE


@pytest.mark.parametrize("message, lines, expected", [
    (b"A: b\r\n\r\nbody\r\n", None, b"A: b\r\n\r\nbody\r\n.\r\n"),
    (b".start\r\n\r\n.\r\n..x\r\n", None, b"..start\r\n\r\n..\r\n...x\r\n.\r\n"),
    (b"A: b\r\n\r\nno end", None, b"A: b\r\n\r\nno end\r\n.\r\n"),
    (b"", None, b".\r\n"),
    (b"A: b\r\nC: d\r\n\r\n1\r\n2\r\n3\r\n", 0, b"A: b\r\nC: d\r\n\r\n.\r\n"),
    (b"A: b\r\n\r\n1\r\n.2\r\n3\r\n", 2, b"A: b\r\n\r\n1\r\n..2\r\n.\r\n"),
    (b"A: b\r\n\r\n1\r\n", 99, b"A: b\r\n\r\n1\r\n.\r\n"),
    (b"A: b\r\n", 5, b"A: b\r\n.\r\n"),
    (b"\r\nbody\r\nmore\r\n", 1, b"\r\nbody\r\n.\r\n"),
])
def test_message_lines(message, lines, expected):
    stream = MessageLines(lines)
    assert stream.feed(message) + stream.finish() == expected


def test_only_password_checks_go_to_the_thread_pool():
    m = machine()
    assert all(m.checks_password(line) for line in (b"PASS x", b"apop a b", b"AUTH PLAIN"))
    assert not any(m.checks_password(line) for line in (b"USER a", b"STAT", b"CAPA"))
