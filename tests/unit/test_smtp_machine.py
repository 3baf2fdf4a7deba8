"""The SMTP state machine by transcript: command in, reply out, no sockets."""

import dataclasses

import pytest

from mailforge.auth.api import Lookup, RecipientStatus
from mailforge.protocols.session import Action
from mailforge.protocols.smtp import MAX_ERRORS, SMTPMachine, SMTPSettings

SETTINGS = SMTPSettings("mx.test", max_message_size=1000, max_recipients=3, max_line_length=2048)


class Directory:
    def lookup_recipient(self, address):
        local, _, domain = address.lower().rpartition("@")
        if domain != "example.test":
            return Lookup(RecipientStatus.NOT_LOCAL)
        return {"alice": Lookup(RecipientStatus.OK, [address]),
                "off": Lookup(RecipientStatus.DISABLED),
                "team": Lookup(RecipientStatus.OK, ["alice@example.test", "bob@example.test"]),
                }.get(local, Lookup(RecipientStatus.UNKNOWN))


DIRECTORY = Directory()


def session(settings=SETTINGS, cluster_peer=False):
    # No AUTH in these transcripts: no logins. `cluster_peer`: another node of our cluster.
    return SMTPMachine(settings, None, "127.0.0.1", cluster_peer=cluster_peer)


def answer(machine, line, full=frozenset()):
    """The reply to `line`, with the lookups that the driver makes in its thread pool answered
    from DIRECTORY; `full`: the mailboxes over quota."""
    result = machine.handle(line)
    if result.action is Action.LOOK_UP_SENDER:
        result = machine.sender_found(DIRECTORY.lookup_recipient(result.address))
    if result.action is Action.LOOK_UP_RECIPIENT:
        lookup = DIRECTORY.lookup_recipient(result.address)
        result = machine.recipient_found(lookup, any(box in full for box in lookup.mailboxes))
    return result


def run(machine, transcript):
    for line, expected in transcript:
        got = answer(machine, line)
        assert got.text.startswith(expected), (line, got.text)
    return got


def test_happy_path_and_ehlo_keywords():
    m = session()
    ehlo = m.handle(b"EHLO client.test").text.decode()
    for keyword in ("PIPELINING", "SIZE 1000", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "CHUNKING"):
        assert keyword in ehlo
    last = run(m, [(b"MAIL FROM:<bob@remote.test> SIZE=10 BODY=8BITMIME", b"250 2.1.0"),
                   (b"RCPT TO:<Alice@Example.test>", b"250 2.1.5"),
                   (b"DATA", b"354")])
    assert last.action is Action.READ_DATA
    assert m.body_done(10, bare_newline=False) is None
    header = m.trace_header("ID1")
    assert header.startswith(b"Received: from client.test ([127.0.0.1])") and b"for <Alice@Example.test>" in header
    assert m.queued("ID1").text == b"250 2.0.0 Ok: queued as ID1\r\n"
    assert not m.in_transaction


@pytest.mark.parametrize("transcript", [
    [(b"MAIL FROM:<a@b.test>", b"503 5.5.1 Error: send HELO/EHLO first")],
    [(b"HELO x", b"250"), (b"RCPT TO:<alice@example.test>", b"503 5.5.1 Error: need MAIL")],
    [(b"HELO x", b"250"), (b"DATA", b"503 5.5.1 Error: need MAIL")],
    [(b"HELO x", b"250"), (b"MAIL FROM:<>", b"250"), (b"DATA", b"503 5.5.1 Error: need RCPT")],
    [(b"HELO x", b"250"), (b"MAIL FROM:<>", b"250"), (b"MAIL FROM:<>", b"503 5.5.1 Error: nested")],
    [(b"HELO", b"501 5.5.4")],
    [(b"EHLO x", b"250"), (b"MAIL FROM:a@b.test", b"501 5.5.4")],
    [(b"EHLO x", b"250"), (b"MAIL FROM:<a@b.test> FOO=1", b"555 5.5.4")],
    [(b"EHLO x", b"250"), (b"MAIL FROM:<a@b.test> SIZE=5000", b"552 5.3.4")],
    [(b"EHLO x", b"250"), (b"MAIL FROM:<not an address>", b"501 5.1.7")],
    [(b"EHLO x", b"250"), (b"MAIL FROM:<j\xc3\xb6rg@b.test>", b"553 5.6.7")],
    [(b"EHLO x", b"250"), (b"MAIL FROM:<>", b"250"), (b"RCPT TO:<x@elsewhere.test>", b"554 5.7.1")],
    [(b"EHLO x", b"250"), (b"MAIL FROM:<>", b"250"), (b"RCPT TO:<nobody@example.test>", b"550 5.1.1")],
    [(b"EHLO x", b"250"), (b"MAIL FROM:<>", b"250"), (b"RCPT TO:<off@example.test>", b"550 5.2.1")],
    [(b"EHLO x", b"250"), (b"MAIL FROM:<>", b"250"), (b"RCPT TO:<alice@example.test>", b"250"),
     (b"DATA now", b"501 5.5.4")],
    [(b"FOO", b"500 5.5.2 Error: command not recognized")],
    [(b"", b"500 5.5.2 Error: bad syntax")],
    [(b"VRFY alice", b"252 2.0.0")],
    [(b"VRFY", b"501 5.5.4")],
    [(b"NOOP", b"250 2.0.0")],
    [(b"HELP", b"214")],
    [(b"RSET", b"250 2.0.0")],
    [(b"QUIT", b"221 2.0.0")],
])
def test_replies(transcript):
    run(session(), transcript)


def test_smtputf8_addresses_need_the_parameter():
    m = session()
    run(m, [(b"EHLO x", b"250"), ("MAIL FROM:<jörg@b.test> SMTPUTF8".encode(), b"250 2.1.0")])
    assert b"UTF8SMTP" in (answer(m, b"RCPT TO:<alice@example.test>") and m.trace_header("X"))


def test_too_many_recipients():
    m = session()
    run(m, [(b"EHLO x", b"250"), (b"MAIL FROM:<>", b"250")] +
        [(b"RCPT TO:<alice@example.test>", b"250")] * 3 + [(b"RCPT TO:<alice@example.test>", b"452 4.5.3")])


def test_bdat_chunks_then_last():
    m = session()
    run(m, [(b"EHLO x", b"250"), (b"MAIL FROM:<>", b"250"), (b"RCPT TO:<alice@example.test>", b"250")])
    first = m.handle(b"BDAT 10")
    assert (first.action, first.size, first.keep) == (Action.READ_CHUNK, 10, True)
    assert m.chunk_done(10, True).text.startswith(b"250 2.0.0 Ok: 10 octets")
    assert m.handle(b"DATA").text.startswith(b"503")
    assert m.handle(b"BDAT 5 LAST").keep
    assert m.chunk_done(5, True) is None


def test_bdat_out_of_order_consumes_then_refuses():
    m = session()
    run(m, [(b"EHLO x", b"250")])
    request = m.handle(b"BDAT 4 LAST")
    assert (request.action, request.size, request.keep) == (Action.READ_CHUNK, 4, False)
    assert m.chunk_done(4, False).text.startswith(b"503 5.5.1 Error: need MAIL")


def test_bdat_over_size_refused_at_last():
    m = session()
    run(m, [(b"EHLO x", b"250"), (b"MAIL FROM:<>", b"250"), (b"RCPT TO:<alice@example.test>", b"250")])
    assert not m.handle(b"BDAT 2000 LAST").keep
    assert m.chunk_done(2000, False).text.startswith(b"552 5.3.4")
    assert not m.in_transaction


def test_bad_bdat_syntax_hangs_up():
    assert session().handle(b"BDAT x").action is Action.CLOSE


def test_bare_newline_and_size_refusals():
    m = session()
    run(m, [(b"EHLO x", b"250"), (b"MAIL FROM:<>", b"250"), (b"RCPT TO:<alice@example.test>", b"250"), (b"DATA", b"354")])
    assert m.body_done(10, bare_newline=True).text.startswith(b"550 5.5.2")
    run(m, [(b"MAIL FROM:<>", b"250"), (b"RCPT TO:<alice@example.test>", b"250"), (b"DATA", b"354")])
    assert m.body_done(1001, bare_newline=False).text.startswith(b"552 5.3.4")


def test_too_many_errors_hangs_up():
    m = session()
    for _ in range(MAX_ERRORS - 1):
        assert m.handle(b"FOO").action is Action.NONE
    last = m.handle(b"FOO")
    assert last.action is Action.CLOSE and last.text.startswith(b"421 4.7.0")


@pytest.mark.parametrize("line, kind", [
    (b"GET / HTTP/1.1", "GET"), (b"post /form HTTP/1.0", "POST"),
    (b"CONNECT mx.test:25 HTTP/1.1", "CONNECT"), (b"Host: mx.test", "a header line"),
    (b"Subject: hello", "a header line"), (b"X-Mailer:x", "a header line"),
])
def test_non_smtp_lines_get_one_goodbye(line, kind):
    """As Postfix's smtpd_forbidden_commands: one 221, then the close."""
    m = session()
    reply = m.handle(line)
    assert (reply.text, reply.action) == (
        b"221 2.7.0 Error: I can break rules, too. Goodbye.\r\n", Action.CLOSE)
    assert m.non_smtp == kind


@pytest.mark.parametrize("line", [b"MAIL FROM:<a@b.test>", b"RCPT TO:<x@y.test>", b"EHLO x:y",
                                  b"GETX", b"NOOP"])
def test_commands_with_colons_or_like_verbs_are_smtp(line):
    m = session()
    run(m, [(b"EHLO x", b"250")])
    assert m.handle(line).action is not Action.CLOSE and m.non_smtp == ""



def test_recipients_are_looked_up_by_the_driver():
    m = session()
    run(m, [(b"EHLO x", b"250"), (b"MAIL FROM:<>", b"250")])
    request = m.handle(b"RCPT TO:<Alice@example.test> NOTIFY=FAILURE")
    assert (request.text, request.action, request.address) == (
        b"", Action.LOOK_UP_RECIPIENT, "Alice@example.test")
    assert not m.transaction.recipients
    done = m.recipient_found(Lookup(RecipientStatus.OK, ["alice@example.test"]), over_quota=False)
    assert done.text.startswith(b"250 2.1.5") and done.action is Action.NONE
    assert m.transaction.recipients == ["Alice@example.test"]
    assert m.transaction.notify == {"Alice@example.test": "FAILURE"}
    assert answer(m, b"RCPT TO:<alice@example.test>", full={"alice@example.test"}).text == (
        b"452 4.2.2 <alice@example.test>: Mailbox full\r\n")
    assert m.transaction.recipients == ["Alice@example.test"]


def test_a_full_mailbox_is_refused_for_good_when_tempfail_is_off():
    m = session(dataclasses.replace(SETTINGS, quota_full_tempfail=False))
    run(m, [(b"EHLO x", b"250"), (b"MAIL FROM:<>", b"250")])
    assert answer(m, b"RCPT TO:<alice@example.test>", full={"alice@example.test"}).text == (
        b"552 5.2.2 <alice@example.test>: Mailbox full\r\n")


def test_submission_senders_must_be_the_users_own():
    m = session(dataclasses.replace(SETTINGS, require_auth=True, sender_login_match=True))
    m.user = "alice@example.test"
    run(m, [(b"EHLO x", b"250")])
    own = m.handle(b"MAIL FROM:<Alice@example.test>")  # no lookup needed
    assert own.text.startswith(b"250 2.1.0") and own.action is Action.CHECK_SENDER
    run(m, [(b"RSET", b"250")])
    request = m.handle(b"MAIL FROM:<team@example.test>")
    assert (request.action, request.address) == (Action.LOOK_UP_SENDER, "team@example.test")
    assert not m.in_transaction
    alias = m.sender_found(DIRECTORY.lookup_recipient("team@example.test"))
    assert alias.text.startswith(b"250 2.1.0") and alias.action is Action.CHECK_SENDER
    run(m, [(b"RSET", b"250"),
            (b"MAIL FROM:<off@example.test>", b"553 5.7.1 <off@example.test>: Sender address "
             b"rejected: not owned by user alice@example.test")])
    assert not m.in_transaction and m.errors == 1


def test_only_password_checks_go_to_the_thread_pool():
    m = session()
    assert m.checks_password(b"AUTH PLAIN AGFAYg==") and m.checks_password(b"auth login")
    assert not m.checks_password(b"EHLO client.test") and not m.checks_password(b"AUTHX")


def test_requiretls_only_inside_tls():
    plain = session()
    assert b"REQUIRETLS" not in plain.handle(b"EHLO client.test").text
    run(plain, [(b"MAIL FROM:<bob@remote.test> REQUIRETLS", b"530 5.7.10")])
    assert plain.transaction is None
    secure = SMTPMachine(SETTINGS, None, "127.0.0.1", tls_active=True)
    assert b"250 REQUIRETLS\r\n" in secure.handle(b"EHLO client.test").text
    run(secure, [(b"MAIL FROM:<bob@remote.test> REQUIRETLS", b"250 2.1.0")])
    assert secure.transaction.requiretls
    run(secure, [(b"RSET", b"250"), (b"MAIL FROM:<bob@remote.test> REQUIRETLS=YES", b"555 5.5.4")])


def test_a_cluster_node_passes_requiretls_on_without_tls():
    """The node relaying a REQUIRETLS message to its mailbox's owner, over the internal link."""
    node = session(cluster_peer=True)
    assert b"250-REQUIRETLS\r\n" in node.handle(b"EHLO node-a.test").text
    run(node, [(b"MAIL FROM:<bob@remote.test> REQUIRETLS", b"250 2.1.0")])
    assert node.transaction.requiretls


def test_the_junk_mark_only_from_a_cluster_node():
    client = session()
    assert b"XJUNK" not in client.handle(b"EHLO client.test").text
    run(client, [(b"MAIL FROM:<bob@remote.test> XJUNK", b"555 5.5.4")])
    assert client.transaction is None
    node = session(cluster_peer=True)
    assert b"XJUNK\r\n" in node.handle(b"EHLO node-a.test").text
    run(node, [(b"MAIL FROM:<bob@remote.test>", b"250 2.1.0")])
    assert not node.transaction.junk
    run(node, [(b"RSET", b"250"), (b"MAIL FROM:<bob@remote.test> XJUNK", b"250 2.1.0")])
    assert node.transaction.junk
    run(node, [(b"RSET", b"250"), (b"MAIL FROM:<bob@remote.test> XJUNK=YES", b"555 5.5.4")])
