"""Outbound delivery end to end: smtplib → a real `mailforge serve` → aiosmtpd sinks on loopback.

The sinks (tests/smtp_sinks.py) answer by recipient: ok, bad (550), later (451), flaky (451
once), reject (554 at end of data), drop (connection closed), stall (no answer).
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import signal
import smtplib
import time

import pytest

from mailforge.queue.spool import SPILL_SIZE
from tests.smtp_sinks import Behaviour, Sink

from .conftest import Server, cli

REMOTE = "remote.test"
SENDER = f"sender@{REMOTE}"
BODY = (b"From: sender@remote.test\r\nTo: ok@remote.test\r\nSubject: outbound\r\n"
        b"Message-ID: <out-1@remote.test>\r\n\r\n.dot line\r\nbody\r\n")


@pytest.fixture
def sink():
    instance = Sink(Behaviour(flaky=1, stall=60))
    yield instance
    instance.stop()


def relaying_server(make_server, sink: Sink, **delivery) -> Server:
    server = make_server(relay={"mode": "networks", "networks": ["127.0.0.0/8"]},
                         delivery={"workers": 1, "retry_schedule": [0.5, 1.0], "max_queue_time": 60.0,
                                   "delay_notice": 0.0, "mx_override": {REMOTE: sink.address},
                                   "connect_timeout": 2.0, "command_timeout": 1.0, **delivery})
    server.start()
    return server


def send(server: Server, rcpts: list[str], body: bytes = BODY, sender: str = SENDER,
         mail_options=(), rcpt_options=()) -> None:
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        client.ehlo("client.test")
        refused = client.sendmail(sender, rcpts, body, list(mail_options), list(rcpt_options))
        assert refused == {}


def wait_until(condition, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def to(sink: Sink, rcpt: str):
    return [m for m in sink.received if rcpt in m.recipients]


def badmail_listing(server: Server, wanted: str) -> str | None:
    listing = cli(server.conf, "queue", "badmail", "list").stdout
    return listing if wanted in listing else None


def queue_listing(server: Server, pattern: str) -> str | None:
    listing = cli(server.conf, "queue", "list").stdout
    return listing if re.search(pattern, listing) else None


def report_of(raw: bytes) -> tuple[email.message.EmailMessage, list[dict[str, str]]]:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    part = next(p for p in message.walk() if p.get_content_type() == "message/delivery-status")
    blocks = [{k: " ".join(str(v).split()) for k, v in block.items()} for block in part.get_payload()]
    return message, blocks


def test_delivery_mixed_results_retry_and_bounce(make_server, sink):
    server = relaying_server(make_server, sink)
    assert b"DSN" in smtplib.SMTP("127.0.0.1", server.port).ehlo()[1]
    send(server, [f"ok@{REMOTE}", f"bad@{REMOTE}", f"flaky@{REMOTE}"],
         mail_options=["RET=HDRS", "ENVID=run+2D1"],
         rcpt_options=["NOTIFY=FAILURE", "ORCPT=rfc822;bad@remote.test"])
    wait_until(lambda: to(sink, f"ok@{REMOTE}") and to(sink, f"flaky@{REMOTE}") and to(sink, SENDER),
               what="delivery, the retried recipient and the bounce")
    (original,) = to(sink, f"ok@{REMOTE}")
    assert original.sender == SENDER
    assert original.data.endswith(BODY) and original.data.startswith(b"Received: from client.test")
    assert sink.behaviour.rcpt_seen[f"flaky@{REMOTE}"] == 2  # deferred once, then accepted
    (bounce,) = to(sink, SENDER)
    assert bounce.sender == "<>"
    message, (per_message, per_rcpt) = report_of(bounce.data)
    assert message["Subject"] == "Undelivered Mail Returned to Sender"
    assert per_message["Original-Envelope-Id"] == "run-1"
    assert per_message["Reporting-MTA"] == "dns; mx.example.test"
    assert per_rcpt["Final-Recipient"] == f"rfc822; bad@{REMOTE}"
    assert per_rcpt["Original-Recipient"] == f"rfc822; bad@{REMOTE}"
    assert (per_rcpt["Action"], per_rcpt["Status"]) == ("failed", "5.1.1")
    assert per_rcpt["Diagnostic-Code"].startswith("smtp; 550 5.1.1")
    assert [p.get_content_type() for p in message.walk()][-1] == "text/rfc822-headers"  # RET=HDRS
    wait_until(lambda: "queue is empty" in cli(server.conf, "queue", "list").stdout, what="empty queue")


def test_drop_stall_expiry_and_badmail(make_server, sink):
    server = relaying_server(make_server, sink, max_queue_time=4.0)
    send(server, [f"drop@{REMOTE}"])
    send(server, [f"stall@{REMOTE}"])
    send(server, [f"reject@{REMOTE}"], sender="")  # a bounce that cannot be delivered
    # Dropped and stalled deliveries are retried until the message expires, then bounced.
    bounces = wait_until(lambda: len(to(sink, SENDER)) >= 2 and to(sink, SENDER), timeout=40,
                         what="two expiry bounces")
    reasons = sorted(report_of(b.data)[1][1]["X-Mailforge-Reason"] for b in bounces)
    assert all("expired" in r for r in reasons)
    assert "lost connection" in reasons[0] and "timeout" in reasons[1]
    for b in bounces:
        assert report_of(b.data)[1][1]["Status"] == "4.4.7"
    assert sink.behaviour.rcpt_seen[f"drop@{REMOTE}"] >= 2
    items = wait_until(lambda: badmail_listing(server, "1 message in badmail"), what="badmail")
    line = items.splitlines()[0]
    assert f"<>  <reject@{REMOTE}>  127.0.0.1[127.0.0.1]:{sink.port} said: 554 5.7.1" in line
    assert not to(sink, f"reject@{REMOTE}")
    # Requeued, it is refused again and comes back to badmail/ under a new name.
    badmail_id = line.split()[0]
    out = cli(server.conf, "queue", "badmail", "requeue", badmail_id).stdout
    assert "queued again as" in out
    again = wait_until(lambda: badmail_listing(server, "1 message in badmail"), what="badmail again")
    assert badmail_id not in again
    assert sink.behaviour.rcpt_seen[f"reject@{REMOTE}"] == 2


def test_queue_cli_for_each_state(make_server, sink):
    server = relaying_server(make_server, sink, retry_schedule=[600.0], max_queue_time=3600.0)
    assert cli(server.conf, "queue", "list").stdout.strip() == "queue is empty"
    send(server, [f"later@{REMOTE}", f"ok@{REMOTE}"])
    listing = wait_until(lambda: queue_listing(server, r"  in (9|10|11)m  "), what="a deferred entry")
    header, row, total = listing.strip().splitlines()
    assert header.split() == ["ID", "AGE", "SENDER", "RECIPIENTS", "NEXT", "TRY", "LAST", "ERROR"]
    entry_id = row.split()[0]
    assert f"<{SENDER}>" in row and f"later@{REMOTE}" in row and f"ok@{REMOTE}" not in row
    assert "451 4.2.0" in row and total == "1 message queued"
    shown = cli(server.conf, "queue", "show", entry_id).stdout
    assert f"id: {entry_id}\nstate: deferred\nsender: <{SENDER}>" in shown
    assert f"recipient: <later@{REMOTE}>\n  last error: 127.0.0.1[127.0.0.1]" in shown
    assert "attempts: 1" in shown and "Subject: outbound" in shown
    # retry: due now, tried at once, deferred again.
    assert "due now" in cli(server.conf, "queue", "retry", entry_id).stdout
    wait_until(lambda: "attempts: 2" in cli(server.conf, "queue", "show", entry_id).stdout,
               what="a second attempt")
    assert "1 deferred message due now" in cli(server.conf, "queue", "flush").stdout
    wait_until(lambda: "attempts: 3" in cli(server.conf, "queue", "show", entry_id).stdout,
               what="a third attempt")
    assert sink.behaviour.rcpt_seen[f"later@{REMOTE}"] == 3
    assert "deleted" in cli(server.conf, "queue", "delete", entry_id).stdout
    assert cli(server.conf, "queue", "list").stdout.strip() == "queue is empty"
    for args in (("show", entry_id), ("retry", "nope"), ("delete", "../x"),
                 ("badmail", "requeue", "nope")):
        result = cli(server.conf, "queue", *args, check=False)
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr.startswith("mailforge: no ") and "id" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_mail_loop_is_refused(make_server, sink):
    server = relaying_server(make_server, sink)
    looped = b"".join(b"Received: from hop%d by hop%d; date\r\n" % (i, i + 1) for i in range(51)) + BODY
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail(SENDER, [f"ok@{REMOTE}"], looped)
        assert refused.value.smtp_code == 554 and refused.value.smtp_error.startswith(b"5.4.6")
        client.sendmail(SENDER, [f"ok@{REMOTE}"], looped[looped.index(b"Received: from hop1 "):])
    wait_until(lambda: to(sink, f"ok@{REMOTE}"), what="the 50-hop message")


def test_kill_9_of_a_delivery_worker_loses_nothing(make_server, sink):
    server = relaying_server(make_server, sink, workers=2)
    # Enough that two thirds are still to come, to both workers, when one is killed.
    total = 400
    ids = [f"<k{i}@client.test>" for i in range(total)]
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        client.ehlo("client.test")
        for i, msgid in enumerate(ids):
            body = f"Subject: k{i}\r\nMessage-ID: {msgid}\r\n\r\nbody {i}\r\n".encode()
            client.sendmail(SENDER, [f"ok{i % 7}@{REMOTE}"], body)
            if i == total // 3:
                wait_until(lambda: len(sink.received) > 50, what="deliveries under way")
                victim = server.status()["delivery"][0]["pid"]
                os.kill(victim, signal.SIGKILL)
    got = wait_until(lambda: len(sink.received) >= total and sink.received, timeout=90,
                     what=f"{total} messages at the sink")
    seen = {line.split(b": ", 1)[1].strip().decode() for m in got for line in m.data.split(b"\r\n")
            if line.startswith(b"Message-ID: ")}
    assert set(ids) <= seen, f"{len(set(ids) - seen)} messages lost"
    pids = [w["pid"] for w in server.status()["delivery"]]
    assert victim not in pids and len(pids) == 2, "the killed delivery worker was not replaced"
    wait_until(lambda: "queue is empty" in cli(server.conf, "queue", "list").stdout, what="empty queue")


def test_the_limit_per_destination_holds_across_delivery_workers(make_server, sink):
    """Two delivery workers, at most 2 connections to the sink: the rate-keeper counts both
    workers' connections, so the sink never sees 3 or 4 at once (each worker alone would open
    2), and every message still arrives."""
    server = relaying_server(make_server, sink, workers=2, max_per_destination=2,
                             messages_per_connection=1)
    total = 24
    # Past the spool's segment size, each message is a queue entry of its own, and entries
    # are shared out between the delivery workers by id (a segment goes to one worker whole).
    padding = b"x" * 998 + b"\r\n"
    body = b"Subject: slow\r\n\r\n" + padding * (SPILL_SIZE // len(padding) + 1)
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        client.ehlo("client.test")
        for i in range(total):
            client.sendmail(SENDER, [f"slow{i}@{REMOTE}"], body)
    got = sink.wait_for(total, timeout=60)
    assert sorted(m.recipients[0] for m in got) == sorted(f"slow{i}@{REMOTE}" for i in range(total))
    assert sink.behaviour.peak_in_data == 2

