"""Backpressure (issue 21) against a real server: with delivery stopped (its worker SIGSTOPped),
acceptance first slows (in_flow_delay), then refuses with 451 4.3.1 past [queue] max_messages;
nothing answered 250 is lost, and once delivery resumes the queue drains and mail is accepted
again by itself. `status` and /metrics show the state and count the delayed and refused MAILs.

A stopped delivery worker is killed after [server] worker_timeout (10 s here) without
heartbeats: every test resumes it well before that.
"""

from __future__ import annotations

import contextlib
import os
import signal
import smtplib
import time
from collections.abc import Iterator

from .conftest import USER, Server, free_port
from .test_metrics_logs import scrape, value, wait_for

# Enough to pass the limit even with the overshoot of one sample of the queue (0.25 s).
MAX_SENT = 400


@contextlib.contextmanager
def delivery_stopped(server: Server) -> Iterator[None]:
    pid = server.status()["delivery"][0]["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def send(client: smtplib.SMTP, token: str) -> tuple[int, bytes, float]:
    """One message; the first refusal's code and text, and how long MAIL took to answer."""
    client.ehlo_or_helo_if_needed()
    started = time.monotonic()
    code, text = client.mail("sender@elsewhere.test")
    took = time.monotonic() - started
    if code != 250:
        return code, text, took
    client.rcpt(USER)
    code, text = client.data(f"Subject: {token}\r\n\r\n{token}\r\n".encode())
    return code, text, took


def tokens_delivered(server: Server) -> list[str]:
    found = []
    for path in server.delivered():
        for line in path.read_text().splitlines():
            if line.startswith("Subject: "):
                found.append(line.removeprefix("Subject: "))
    return found


def flow(server: Server) -> dict:
    return server.status()["queue"]["flow"]


def test_past_max_messages_mail_is_451_nothing_is_lost_and_acceptance_resumes(make_server):
    port = free_port()
    server = make_server(queue={"max_messages": 20, "in_flow_delay": 0.0},
                         metrics={"listen": f"127.0.0.1:{port}"})
    server.start()
    assert flow(server)["state"] == "flowing" and flow(server)["max_messages"] == 20
    accepted, refusals = [], []
    with delivery_stopped(server), smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        for n in range(MAX_SENT):
            code, text, _ = send(client, f"token-{n}")
            if code == 250:
                accepted.append(f"token-{n}")
            else:
                refusals.append((code, text))
                if len(refusals) == 3:
                    break
        assert refusals and all(code == 451 and text.startswith(b"4.3.1 Insufficient system "
                                                               b"storage") for code, text in refusals)
        assert 20 <= len(accepted) < MAX_SENT
        status = flow(server)
        assert status["state"] == "refusing" and status["messages"] >= 20
        samples = scrape(port)
        assert value(samples, "mailforge_queue_flow_state", state="refusing") == 1
        assert value(samples, "mailforge_inflow_refused_total", service="smtp") == 3
    delivered = server.wait_delivered(len(accepted), timeout=30)
    assert sorted(tokens_delivered(server)) == sorted(accepted) and len(delivered) == len(accepted)
    wait_for(lambda: flow(server)["state"] == "flowing", timeout=10)
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        assert send(client, "after")[0] == 250
    server.wait_delivered(len(accepted) + 1)
    log = server.log()
    assert log.count("queue flow: refusing new mail") == 1
    assert log.count("queue flow: accepting without delay again") == 1


def test_in_flow_delay_slows_mail_while_the_queue_grows(make_server):
    port = free_port()
    server = make_server(queue={"in_flow_delay": 0.5, "in_flow_backlog": 5},
                         metrics={"listen": f"127.0.0.1:{port}"})
    server.start()
    delayed = []
    with delivery_stopped(server), smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        for n in range(MAX_SENT):
            code, _, took = send(client, f"token-{n}")
            assert code == 250
            if took >= 0.5:
                delayed.append(n)
                if len(delayed) == 2:
                    break
        assert len(delayed) == 2 and delayed[0] >= 5
        assert flow(server)["state"] == "delaying"
        assert value(scrape(port), "mailforge_inflow_delayed_total", service="smtp") >= 2
    server.wait_delivered(delayed[-1] + 1, timeout=30)
    wait_for(lambda: flow(server)["state"] == "flowing", timeout=10)
    assert "queue flow: delaying each MAIL 0.5 s" in server.log()
