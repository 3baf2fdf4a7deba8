"""Aliases that forward to remote addresses, end to end: smtplib → a real `mailforge serve` → an
aiosmtpd sink as the remote MX (tests/smtp_sinks.py: ok, bad = 550, flaky = 451 once).

The message is queued once; local targets get their copy, remote ones are relayed with the
original MAIL FROM, retried and bounced like any relayed mail, the bounce naming the alias as
Original-Recipient. A loop through a remote forwarder ends at the hop count limit (5.4.6)."""

from __future__ import annotations

import asyncio
import smtplib

import pytest

from tests.smtp_sinks import Behaviour, ScriptedServer, Sink

from .conftest import DOMAIN, USER, cli
from .test_outbound import queue_listing, report_of, to, wait_until

REMOTE = "remote.test"
SENDER = f"sender@{REMOTE}"
BODY = (f"From: {SENDER}\r\nTo: list@{DOMAIN}\r\nSubject: forwarded\r\n"
        f"Message-ID: <fwd-1@{REMOTE}>\r\n\r\n.dot line\r\nbody\r\n").encode()


def forwarding_server(make_server, sink: Sink, **delivery):
    """A server whose relay policy stays the default (only authenticated clients relay),
    with remote.test's MX at the sink."""
    server = make_server(delivery={"retry_schedule": [0.5, 1.0], "max_queue_time": 60.0,
                                   "mx_override": {REMOTE: sink.address},
                                   "connect_timeout": 2.0, "command_timeout": 2.0, **delivery})
    server.start()
    return server


@pytest.fixture
def sink():
    instance = Sink(Behaviour(flaky=1))
    yield instance
    instance.stop()


def test_alias_to_remote_and_local_targets(make_server, sink):
    server = forwarding_server(make_server, sink)
    added = cli(server.conf, "alias", "add", f"fwd@{DOMAIN}", f"Ok1@{REMOTE}")
    assert added.stdout.strip() == f"added alias fwd@{DOMAIN} -> ok1@{REMOTE}"
    for target in (USER, f"ok2@{REMOTE}", f"bad@{REMOTE}", f"flaky@{REMOTE}"):
        cli(server.conf, "alias", "add", f"list@{DOMAIN}", target)
    refused = cli(server.conf, "alias", "add", f"fwd@{DOMAIN}", "not an address", check=False)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        client.ehlo("client.test")
        # Forwarding is no open relay: a remote address the admin did not alias is refused.
        assert client.mail(SENDER)[0] == 250
        code, text = client.rcpt(f"ok1@{REMOTE}")
        assert (code, text.split()[0]) == (554, b"5.7.1")
        client.rset()
        assert client.sendmail(SENDER, [f"fwd@{DOMAIN}", f"list@{DOMAIN}"], BODY) == {}
    wait_until(lambda: to(sink, f"ok1@{REMOTE}") and to(sink, f"flaky@{REMOTE}")
               and to(sink, SENDER), what="the forwarded copies, the retried one and the bounce")
    forwarded = [m for m in sink.received if m.sender == SENDER]
    assert sorted(r for m in forwarded for r in m.recipients) == [
        f"flaky@{REMOTE}", f"ok1@{REMOTE}", f"ok2@{REMOTE}"]  # each target once
    for copy in forwarded:
        assert copy.data.endswith(BODY) and copy.data.startswith(b"Received: from client.test")
        assert b"Delivered-To:" not in copy.data and b"Return-Path:" not in copy.data
    assert sink.behaviour.rcpt_seen[f"flaky@{REMOTE}"] == 2  # deferred once, then relayed
    (local,) = server.wait_delivered(1)
    assert local.read_bytes().endswith(BODY.replace(b"\r\n", b"\n"))
    (bounce,) = to(sink, SENDER)
    assert bounce.sender == "<>"
    _, (_, per_rcpt) = report_of(bounce.data)
    assert per_rcpt["Final-Recipient"] == f"rfc822; bad@{REMOTE}"
    assert per_rcpt["Original-Recipient"] == f"rfc822; list@{DOMAIN}"
    assert (per_rcpt["Action"], per_rcpt["Status"]) == ("failed", "5.1.1")
    wait_until(lambda: queue_listing(server, "queue is empty"), what="an empty queue")
    assert len(server.delivered()) == 1  # the retry did not deliver alice's copy again


def test_a_non_ascii_alias_goes_on_as_a_utf8_orcpt(make_server, sink):
    """RFC 6533 3: an alias with a non-ASCII name is an address of type utf-8, not rfc822: in
    ORCPT to a next hop without SMTPUTF8 as utf-8-addr-xtext (7-bit, \\x{HEX} for non-ASCII
    characters and for xtext's specials), in the report's message/global-delivery-status as
    utf-8-addr-unitext (UTF-8 as it is, the specials still escaped)."""
    dsn_hop = ScriptedServer()  # announces DSN, not SMTPUTF8
    try:
        server = forwarding_server(make_server, sink, mx_override={
            REMOTE: sink.address, "dsn.test": dsn_hop.address})
        alias = f"jörg=team@{DOMAIN}"
        for target in ("friend@dsn.test", f"bad@{REMOTE}"):
            cli(server.conf, "alias", "add", alias, target)
        with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
            client.ehlo("client.test")
            assert client.sendmail(SENDER, [alias], BODY, ["SMTPUTF8"]) == {}
        (bounce,) = wait_until(lambda: dsn_hop.messages and to(sink, SENDER),
                               what="the relayed copy and the bounce for bad@")
        assert ("RCPT TO:<friend@dsn.test> ORCPT=utf-8;j\\x{F6}rg\\x{3D}team@example.test"
                in dsn_hop.lines)
        report = bounce.data.decode().replace("\r\n", "\n")
        assert "Content-Type: message/global-delivery-status\n" in report
        assert "\nOriginal-Recipient: utf-8; jörg\\x{3D}team@example.test\n" in report
    finally:
        dsn_hop.stop()


class ForwardingBack(Behaviour):
    """A remote MTA whose user back@ forwards to `target` at our server: as a real MTA it adds
    its Received: header, and answers our relay with what our server answered it."""

    def __init__(self, port: int, target: str) -> None:
        super().__init__()
        self.port, self.target = port, target
        self.forwarded = 0

    async def handle_DATA(self, server, session, envelope):
        if not any(r.startswith("back@") for r in envelope.rcpt_tos):
            return await super().handle_DATA(server, session, envelope)
        data = b"Received: from mx.example.test by remote.test; date\r\n" + envelope.original_content
        code, text = await asyncio.to_thread(self._forward, envelope.mail_from, data)
        self.forwarded += 1
        return f"{code} {text}"

    def _forward(self, sender: str, data: bytes) -> tuple[int, str]:
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as client:
            try:
                client.sendmail(sender, [self.target], data)
            except smtplib.SMTPDataError as exc:
                return exc.smtp_code, exc.smtp_error.decode()
        return 250, "2.0.0 forwarded"


def test_a_loop_through_a_remote_forwarder_ends_in_a_5_4_6_bounce(make_server):
    back = ForwardingBack(0, f"loop@{DOMAIN}")
    sink = Sink(back)
    try:
        # Our relay waits while the forwarder's own transaction with us runs.
        server = forwarding_server(make_server, sink, command_timeout=10.0)
        back.port = server.port
        cli(server.conf, "alias", "add", f"loop@{DOMAIN}", f"back@{REMOTE}")
        with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
            assert client.sendmail(SENDER, [f"loop@{DOMAIN}"], BODY) == {}
        (bounce,) = wait_until(lambda: to(sink, SENDER), timeout=120, what="the loop's bounce")
        _, (_, per_rcpt) = report_of(bounce.data)
        assert per_rcpt["Final-Recipient"] == f"rfc822; back@{REMOTE}"
        assert per_rcpt["Original-Recipient"] == f"rfc822; loop@{DOMAIN}"
        assert per_rcpt["Status"] == "5.4.6"
        # Each round adds our Received: and the forwarder's; the 26th finds 51.
        assert back.forwarded == 26
    finally:
        sink.stop()
