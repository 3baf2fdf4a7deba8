"""A full mailbox over SMTP: refused at RCPT (452, or 552 when tempfail is off), and mail that
was queued for it anyway bounces after [delivery] quota_full_bounce_after, not days later."""

from __future__ import annotations

import smtplib

import pytest

from .conftest import DOMAIN, USER, cli

SENDER = f"bob@{DOMAIN}"


@pytest.mark.parametrize("tempfail, expected", [(True, (452, b"4.2.2")), (False, (552, b"5.2.2"))])
def test_rcpt_to_a_full_mailbox_is_refused(make_server, tempfail, expected):
    server = make_server(limits={"quota_full_tempfail": tempfail})
    cli(server.conf, "quota", "set", USER, "1M", "--messages", "1")
    server.start()
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.ehlo("client.test")
        assert client.sendmail("carol@remote.test", [USER], b"Subject: first\r\n\r\nfits\r\n") == {}
        server.wait_delivered(1)
        client.mail("carol@remote.test")
        code, text = client.rcpt(USER)
    assert (code, text[:5]) == expected
    assert text.endswith(f"<{USER}>: Mailbox full".encode())


def test_a_queued_message_for_a_full_mailbox_bounces_after_the_short_wait(make_server):
    # The retry schedule's first step is a minute: only the short wait can bounce it in time.
    server = make_server(delivery={"workers": 1, "quota_full_bounce_after": 2})
    cli(server.conf, "user", "add", SENDER, "--password-stdin", input="pw\n")
    cli(server.conf, "quota", "set", USER, "1K")
    server.start()
    # RCPT sees room for a small message; the one that comes is bigger than the whole quota.
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.ehlo("client.test")
        body = b"Subject: too big\r\n\r\n" + (b"x" * 76 + b"\r\n") * 40
        assert client.sendmail(SENDER, [USER], body) == {}
    (bounce,) = server.wait_delivered(1, SENDER, timeout=30)
    report = bounce.read_text()
    assert f"Final-Recipient: rfc822; {USER}\nAction: failed\nStatus: 5.2.2\n" in report
    assert "mailbox full: still over its quota" in report
    assert server.delivered(USER) == []
