"""RFC 5321 edge cases of MAIL and RCPT over a real socket, each once a bug."""

import smtplib

from .conftest import USER, cli

HOSTNAME = "mx.example.test"  # the test servers' [server] hostname (conftest's `init`)


def test_rcpt_to_postmaster_without_domain_is_taken(server):
    """RFC 5321 4.1.1.3: RCPT TO:<Postmaster>, with no domain, MUST be supported; it reaches
    postmaster at our hostname (as Postfix appends $myorigin)."""
    cli(server.conf, "domain", "add", HOSTNAME)
    cli(server.conf, "alias", "add", f"postmaster@{HOSTNAME}", USER)
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.ehlo("client.test")
        assert client.mail("bob@remote.test")[0] == 250
        assert client.rcpt("<Postmaster>") == (250, b"2.1.5 Ok")
        assert client.data(b"Subject: hi\r\n\r\nhello\r\n")[0] == 250
    (path,) = server.wait_delivered(1)  # in alice's Maildir, through the alias
    assert f"Delivered-To: postmaster@{HOSTNAME}".encode() in path.read_bytes()


def test_source_route_is_dropped_but_must_lead_to_a_mailbox(server):
    """RFC 5321 4.1.2: Path = "<" [ A-d-l ":" ] Mailbox ">". The route is accepted and
    ignored; a route with no mailbox after it is a syntax error, never the null sender "<>"."""
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.ehlo("client.test")
        assert client.docmd("MAIL FROM:<@a.test:>") == (501, b"5.5.4 bad source route")
        assert client.docmd("MAIL FROM:<@a.test,@b.test:>") == (501, b"5.5.4 bad source route")
        assert client.docmd("MAIL FROM:<@a.test,@b.test:bob@remote.test>") == (250, b"2.1.0 Ok")
        assert client.docmd(f"RCPT TO:<@c.test:{USER}>") == (250, b"2.1.5 Ok")
        assert client.data(b"Subject: routed\r\n\r\nhello\r\n")[0] == 250
    (path,) = server.wait_delivered(1)
    assert path.read_bytes().startswith(b"Return-Path: <bob@remote.test>\n")


def test_duplicate_esmtp_parameters_are_refused(server):
    """RFC 3461 4.3, 4.4: RET and ENVID come once on MAIL, NOTIFY and ORCPT once on RCPT. A
    repeated keyword, whatever its case, is a syntax error (as Sendmail's), not "last one
    wins", and leaves the transaction as it was. Other keywords keep the last value, as
    Postfix: smtplib sends SIZE twice when its caller names SIZE too."""
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.ehlo("client.test")
        for params, name in (("RET=FULL RET=HDRS", "RET"), ("ENVID=a envid=b", "ENVID")):
            assert client.docmd(f"MAIL FROM:<bob@remote.test> {params}") == (
                501, f"5.5.4 Duplicate {name} parameter".encode())
        # No transaction began: this MAIL is not a nested one.
        assert client.docmd("MAIL FROM:<bob@remote.test> RET=HDRS SIZE=10 SIZE=20") == (
            250, b"2.1.0 Ok")
        for params, name in (("NOTIFY=NEVER NOTIFY=SUCCESS", "NOTIFY"),
                             ("ORCPT=rfc822;a@b.test orcpt=rfc822;c@d.test", "ORCPT")):
            assert client.docmd(f"RCPT TO:<{USER}> {params}") == (
                501, f"5.5.4 Duplicate {name} parameter".encode())
        # No recipient was added.
        assert client.docmd("DATA") == (503, b"5.5.1 Error: need RCPT command")
        assert client.docmd(f"RCPT TO:<{USER}> NOTIFY=NEVER") == (250, b"2.1.5 Ok")
        assert client.data(b"Subject: once\r\n\r\nhello\r\n")[0] == 250
    server.wait_delivered(1)
