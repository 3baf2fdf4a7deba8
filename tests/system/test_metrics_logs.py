"""The /metrics endpoint after a known workload, and logs that never hold a secret."""

from __future__ import annotations

import base64
import imaplib
import json
import os
import poplib
import signal
import smtplib
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.unit.test_sasl import ScramClient

from .conftest import PASSWORD, USER, free_port

MESSAGE = b"Subject: counted\r\n\r\nhello\r\n"
OTHER = "bob@example.test"
# Messages per connection in the known workload: 7 over 3 connections.
WORKLOAD = (3, 2, 2)


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """Every sample as {(name, sorted labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)


@pytest.fixture
def metrics_server(make_server):
    port = free_port()
    server = make_server(metrics={"listen": f"127.0.0.1:{port}"},
                         smtp={"max_connections_per_ip": 3})
    server.metrics_port = port
    server.start()
    return server


def test_exact_counts_after_a_known_workload(metrics_server):
    server = metrics_server
    # The start-up probe (Server.wait_for_port) made one session already: counted from here,
    # once its worker has published it (connection figures go out once a second).
    wait_for(lambda: value(scrape(server.metrics_port), "mailforge_connections_total", service="smtp") == 1)
    before = scrape(server.metrics_port)
    for count in WORKLOAD:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
            for _ in range(count):
                client.sendmail("sender@remote.test", [USER], MESSAGE)
            assert client.docmd("BOGUS")[0] == 500
    # Three sessions held open fill the per-IP cap of 3; a fourth is refused with 421. First
    # the server must have let go of the sessions above: a session's slot is released before
    # the worker stops counting it as current, so a published 0 says they all were.
    wait_for(lambda: value(scrape(server.metrics_port), "mailforge_connections_current",
                           service="smtp") == 0)
    held = [smtplib.SMTP("127.0.0.1", server.port, timeout=10) for _ in range(3)]
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        smtplib.SMTP("127.0.0.1", server.port, timeout=10)
    assert refused.value.smtp_code == 421
    for client in held:
        client.quit()

    def settled() -> bool:
        """Delivered, and the workers' once-a-second connection figures published."""
        now = scrape(server.metrics_port)
        accepted = value(now, "mailforge_connections_total", service="smtp") - \
            value(before, "mailforge_connections_total", service="smtp")
        return (value(now, "mailforge_messages_delivered_total", via="local") == 7 and accepted == 7
                and value(now, "mailforge_connections_current", service="smtp") == 0)

    wait_for(settled)
    after = scrape(server.metrics_port)
    samples = {key: after[key] - before.get(key, 0.0) for key in after}
    smtp = {"service": "smtp"}
    assert value(samples, "mailforge_connections_total", **smtp) == 7
    assert value(samples, "mailforge_sessions_total", **smtp) == 6
    assert value(samples, "mailforge_connections_refused_total", reason="ip_full", **smtp) == 1
    assert value(samples, "mailforge_messages_received_total", **smtp) == 7
    assert value(samples, "mailforge_delivery_latency_seconds_count", via="local") == 7
    # EHLO, then MAIL/RCPT/DATA per message, BOGUS and QUIT; QUIT alone for the held three.
    ok = sum(1 + 3 * count + 1 for count in WORKLOAD) + 3
    assert value(samples, "mailforge_commands_total", outcome="ok", **smtp) == ok
    assert value(samples, "mailforge_commands_total", outcome="error", **smtp) == len(WORKLOAD)
    assert value(after, "mailforge_connections_current", **smtp) == 0
    assert value(after, "mailforge_queue_length") == 0
    assert value(after, "mailforge_processes", kind="worker", service="smtp") == 2
    assert value(after, "mailforge_worker_restarts_total", kind="worker", service="smtp") == 0
    # Gauges sum over the live workers: the service's whole IO capacity.
    settings = server.config.smtp
    assert value(after, "mailforge_threadpool_max_threads", **smtp) == settings.workers * settings.max_threads


def test_counts_survive_a_worker_restart(metrics_server):
    server = metrics_server
    for _ in range(2):
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
            client.sendmail("sender@remote.test", [USER], MESSAGE)
    victim = server.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in server.worker_pids() and len(server.worker_pids()) == 2)
    samples = scrape(server.metrics_port)
    assert value(samples, "mailforge_worker_restarts_total", kind="worker", service="smtp") == 1
    # The dead worker's counters still count; its live gauge share is gone.
    assert value(samples, "mailforge_messages_received_total", service="smtp") == 2
    assert value(samples, "mailforge_connections_current", service="smtp") == 0


def test_imap_logins_and_failed_commands_are_counted(make_server):
    port = free_port()
    server = make_server(imap_services=True, server={"allow_plaintext_auth": True},
                         metrics={"listen": f"127.0.0.1:{port}"})
    server.start()
    for password in ("wrong", PASSWORD, PASSWORD):
        client = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=10)
        try:
            client.login(USER, password)
            assert client.select("No/Such")[0] == "NO"
            client.logout()
        except imaplib.IMAP4.error:
            client.shutdown()
    imap = {"service": "imap"}
    wait_for(lambda: value(scrape(port), "mailforge_sessions_total", **imap) == 3)
    samples = scrape(port)
    assert value(samples, "mailforge_auth_total", result="success", **imap) == 2
    assert value(samples, "mailforge_auth_total", result="failure", **imap) == 1
    log = server.log()
    assert "NO [AUTHENTICATIONFAILED]" in log and "NO [NONEXISTENT]" in log


def test_metrics_off_binds_nothing(make_server):
    server = make_server()  # the conftest default: [metrics] listen = ""
    server.start()
    assert server.status()["metrics"] is None
    assert not (server.config.run_dir / "metrics").exists()


def _secrets(user: str, password: str) -> list[bytes]:
    """The password and every encoding of it a client sends."""
    raw = password.encode()
    plain = b"\0" + user.encode() + b"\0" + raw
    forms = [raw, base64.b64encode(raw), base64.b64encode(plain), base64.b64encode(plain)[:-2],
             base64.b64encode(b"\0" + user.encode() + b"\0" + b"wrong " + raw)]
    return forms


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_auth_sessions_leave_no_secret_in_any_log(make_server, log_format):
    server = make_server(pop3_services=True, server={"allow_plaintext_auth": True},
                         log={"format": log_format, "target": "file", "level": "debug"})
    server.start()
    wrong = "wrong " + PASSWORD
    for mechanism in ("PLAIN", "LOGIN", "CRAM-MD5"):
        for password in (PASSWORD, wrong):
            with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
                client.ehlo("client.test")
                client.user, client.password = USER, password
                auth = {"PLAIN": client.auth_plain, "LOGIN": client.auth_login,
                        "CRAM-MD5": client.auth_cram_md5}[mechanism]
                try:
                    code, _ = client.auth(mechanism, auth, initial_response_ok=mechanism != "CRAM-MD5")
                except smtplib.SMTPAuthenticationError as exc:
                    code = exc.smtp_code
                assert code == (235 if password == PASSWORD else 535)
    _scram_login(server)
    for password in (PASSWORD, wrong):
        pop = poplib.POP3("127.0.0.1", server.pop3_port, timeout=10)
        pop.user(USER)
        try:
            pop.pass_(password)
        except poplib.error_proto:
            assert password == wrong
        pop.quit()
    server.stop()
    logs = b"".join(path.read_bytes() for path in server.config.log_dir.rglob("*") if path.is_file())
    assert b"login" in logs and USER.encode() in logs  # the events were logged...
    for secret in _secrets(USER, PASSWORD):  # ...and none of what proves them
        assert secret not in logs, secret
    if log_format == "json":
        events = [json.loads(line) for line in
                  (server.config.log_dir / "mailforge.log").read_text().splitlines()]
        logins = [e for e in events if e.get("event") == "login"]
        assert {e["service"] for e in logins} == {"smtp", "pop3"}
        assert all(e["user"] == USER and e["session"] and e["client"] == "127.0.0.1" for e in logins)
        assert sum(e.get("event") == "login failed" for e in events) == 4


def _scram_login(server) -> None:
    scram = ScramClient(USER, PASSWORD)
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        client.ehlo("client.test")
        first = base64.b64encode(scram.first().encode()).decode()
        code, challenge = client.docmd("AUTH", "SCRAM-SHA-256 " + first)
        assert code == 334
        final = scram.final(base64.b64decode(challenge).decode())
        assert client.docmd(base64.b64encode(final.encode()).decode())[0] == 334
        assert client.docmd("")[0] == 235
