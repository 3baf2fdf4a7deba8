"""Delivery status notifications over the wire: RFC 3461 parameters a real `mailforge serve`
takes or refuses, and the reports it relays to aiosmtpd sinks (tests/smtp_sinks.py)."""

from __future__ import annotations

import smtplib
from datetime import timedelta
from email.utils import parsedate_to_datetime

import pytest

from .conftest import DOMAIN, USER, cli
from .test_outbound import (BODY, REMOTE, SENDER, queue_listing, relaying_server, report_of,
                            send, to, wait_until)
from .test_outbound import sink  # noqa: F401  (a fixture for the tests)


def test_envid_and_orcpt_decoding_to_control_characters_are_refused(server):
    """RFC 3461 4.2, 4.4: a decoded line end would write fields into the report."""
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        client.ehlo("client.test")
        code, text = client.docmd("MAIL FROM:<a@remote.test> ENVID=x+0D+0AReporting-MTA:+20dns;+20evil")
        assert (code, text[:11]) == (501, b"5.5.4 Bad E")
        assert client.docmd("MAIL FROM:<a@remote.test> ENVID=run+2D1+20a")[0] == 250
        code, text = client.docmd(f"RCPT TO:<{USER}> ORCPT=rfc822;a+0AAction:+20delivered")
        assert (code, text[:11]) == (501, b"5.5.4 Bad O")
        assert client.docmd(f"RCPT TO:<{USER}> ORCPT=rfc822;a+2Bb@remote.test")[0] == 250


UTF8_BODY = ("From: sender@remote.test\r\nTo: bad@remote.test\r\nSubject: Grüße\r\n"
             "Message-ID: <utf8-1@remote.test>\r\n\r\nbody\r\n").encode()


@pytest.mark.parametrize("ret, returned_type", [("FULL", "message/global"),
                                                ("HDRS", "message/global-headers")])
def test_an_original_with_utf8_headers_comes_back_as_message_global(make_server, sink, ret,
                                                                    returned_type):
    """RFC 6533 4, RFC 6532 3.7: message/rfc822 and text/rfc822-headers are ASCII header
    sections; UTF-8 header fields come back in message/global or message/global-headers."""
    server = relaying_server(make_server, sink)
    send(server, [f"bad@{REMOTE}"], body=UTF8_BODY, mail_options=["SMTPUTF8", f"RET={ret}"])
    (bounce,) = wait_until(lambda: to(sink, SENDER), what="the bounce")
    message, _ = report_of(bounce.data)
    returned = message.get_payload()[-1]  # notification, report, returned message
    assert returned.get_content_type() == returned_type
    assert "Subject: Grüße" in bounce.data.decode()


def test_a_delay_notice_announces_the_short_wait_of_a_full_mailbox(make_server, sink):
    """RFC 3464 2.3.9: Will-Retry-Until is when attempts stop for that recipient. A message
    held for a full mailbox bounces after quota_full_bounce_after, and its delay notice says
    so; a recipient delayed for another reason keeps max_queue_time (60 s here). Its Status
    is RFC 3463's 4.2.2 (mailbox full), the other's the code the remote server gave."""
    server = relaying_server(make_server, sink, delay_notice=0.5, quota_full_bounce_after=30.0)
    cli(server.conf, "quota", "set", USER, "1K")
    # RCPT sees room; the message that comes is bigger than the whole quota.
    send(server, [USER, f"later@{REMOTE}"], body=BODY + b"x" * 2000 + b"\r\n")
    (notice,) = wait_until(lambda: to(sink, SENDER), what="the delay notice")
    message, (per_message, *per_rcpt) = report_of(notice.data)
    assert message["Subject"] == "Delayed Mail (still being retried)"
    arrival = parsedate_to_datetime(per_message["Arrival-Date"])
    waits = {block["Final-Recipient"]: parsedate_to_datetime(block["Will-Retry-Until"]) - arrival
             for block in per_rcpt}
    assert waits == {f"rfc822; {USER}": timedelta(seconds=30),
                     f"rfc822; later@{REMOTE}": timedelta(seconds=60)}
    statuses = {block["Final-Recipient"]: block["Status"] for block in per_rcpt}
    assert statuses == {f"rfc822; {USER}": "4.2.2", f"rfc822; later@{REMOTE}": "4.2.0"}


def test_an_alias_of_several_targets_is_reported_on_once_as_expanded(make_server, sink):
    """RFC 3461 6.2.7.3, RFC 3464 2.3.3: NOTIFY=SUCCESS on an alias of several targets earns
    one "expanded" notice for the alias, not a "delivered" or "relayed" one per target."""
    server = relaying_server(make_server, sink)
    for target in (USER, f"ok1@{REMOTE}", f"ok2@{REMOTE}"):
        cli(server.conf, "alias", "add", f"list@{DOMAIN}", target)
    send(server, [f"list@{DOMAIN}"], rcpt_options=["NOTIFY=SUCCESS"])
    wait_until(lambda: queue_listing(server, "queue is empty"), what="an empty queue")
    server.wait_delivered(1)
    forwarded = [m for m in sink.received if m.sender == SENDER]
    assert sorted(r for m in forwarded for r in m.recipients) == [f"ok1@{REMOTE}", f"ok2@{REMOTE}"]
    (notice,) = to(sink, SENDER)
    _, (_, block) = report_of(notice.data)
    assert block["Final-Recipient"] == f"rfc822; list@{DOMAIN}"
    assert (block["Action"], block["Status"]) == ("expanded", "2.0.0")


def test_a_utf8_orcpt_in_its_raw_unitext_form_is_taken_under_smtputf8(make_server, sink):
    """RFC 6533 3: with SMTPUTF8 a client may give a utf-8 ORCPT as utf-8-addr-unitext, UTF-8
    as it is; without SMTPUTF8 only the 7-bit utf-8-addr-xtext is allowed. Either way the
    report names the address the client gave."""
    server = relaying_server(make_server, sink)
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        client.ehlo("client.test")
        assert client.mail(SENDER)[0] == 250
        client.command_encoding = "utf-8"  # smtplib's own switch, as MAIL ... SMTPUTF8 makes it
        code, text = client.docmd(f"RCPT TO:<bad@{REMOTE}> ORCPT=utf-8;jörg@{DOMAIN}")
        assert (code, text[:11]) == (501, b"5.5.4 Bad O")
        assert client.docmd(f"RCPT TO:<bad@{REMOTE}> ORCPT=utf-8;j\\x{{F6}}rg@{DOMAIN}")[0] == 250
    send(server, [f"bad@{REMOTE}"], mail_options=["SMTPUTF8"],
         rcpt_options=[f"ORCPT=utf-8;jörg\\x{{2B}}1@{DOMAIN}"])
    (bounce,) = wait_until(lambda: to(sink, SENDER), what="the bounce")
    report = bounce.data.decode().replace("\r\n", "\n")
    assert "Content-Type: message/global-delivery-status\n" in report
    assert f"\nOriginal-Recipient: utf-8; jörg\\x{{2B}}1@{DOMAIN}\n" in report
