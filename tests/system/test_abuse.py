"""Harvesting and brute-force defence across workers and services: SMTP, POP3, IMAP (issue 8).

Four workers per service, a new connection per attempt so that one attacker's attempts land on
every worker: the block still comes at exactly `block_after` failures, because the failures
are counted in the one rate-keeper. Another address goes on logging in meanwhile. Loopback,
exempt by default, is made countable here ([abuse] exempt_networks = []).
"""

from __future__ import annotations

import base64
import smtplib
import socket
import statistics
import time

import pytest

from .conftest import PASSWORD, USER

ATTACKER, BYSTANDER = "127.0.0.1", "127.0.0.2"
BLOCK_AFTER = 8
MAX_ATTEMPTS = 200  # bounded, whatever happens
FAST_TARPIT = {"window": 600.0, "tarpit_after": 2, "tarpit_delay": 0.05, "tarpit_max": 0.2,
               "block_after": BLOCK_AFTER, "block_time": 120.0, "exempt_networks": []}


@pytest.fixture
def guarded(make_server):
    server = make_server(pop3_services=True, imap_services=True,
                         server={"allow_plaintext_auth": True}, smtp={"workers": 4},
                         pop3={"workers": 4}, imap={"workers": 4}, abuse=FAST_TARPIT)
    server.start()
    return server


def smtp_auth(server, password: str, user: str = USER, source: str = ATTACKER) -> int:
    """One AUTH PLAIN attempt on a new connection: the reply code, or 421 when refused."""
    try:
        client = smtplib.SMTP("127.0.0.1", server.port, timeout=20, source_address=(source, 0))
    except smtplib.SMTPResponseException as exc:  # the greeting was a refusal
        return exc.smtp_code
    try:
        client.ehlo("attacker.test")
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        return client.docmd("AUTH", f"PLAIN {token}")[0]
    except smtplib.SMTPServerDisconnected:
        return 421
    finally:
        client.close()  # no QUIT: a blocked session is already closed by the server


def pop3_login(server, password: str, user: str = USER, source: str = ATTACKER) -> bytes:
    """USER/PASS on a new connection: the first line of the answer to PASS (or the greeting
    when the connection is refused)."""
    with socket.create_connection(("127.0.0.1", server.pop3_port), timeout=20,
                                  source_address=(source, 0)) as sock:
        lines = sock.makefile("rb")
        greeting = lines.readline()
        if not greeting.startswith(b"+OK"):
            return greeting
        sock.sendall(f"USER {user}\r\nPASS {password}\r\n".encode())
        lines.readline()
        answer = lines.readline()
        sock.sendall(b"QUIT\r\n")
        return answer


def imap_login(server, password: str, user: str = USER, source: str = ATTACKER) -> bytes:
    """LOGIN on a new connection: the tagged answer (or the greeting when refused)."""
    with socket.create_connection(("127.0.0.1", server.imap_port), timeout=20,
                                  source_address=(source, 0)) as sock:
        lines = sock.makefile("rb")
        greeting = lines.readline()
        if not greeting.startswith(b"* OK"):
            return greeting
        sock.sendall(f'a LOGIN "{user}" "{password}"\r\n'.encode())
        while True:
            line = lines.readline()
            if not line or line.startswith(b"a "):
                break
        sock.sendall(b"b LOGOUT\r\n")
        return line


def test_failures_in_every_service_add_up_to_one_block_at_the_threshold(guarded):
    outcomes = []
    for attempt in range(MAX_ATTEMPTS):
        # Rotate services: the count is per address, whatever the service.
        if attempt % 3 == 1:
            answer = pop3_login(guarded, "wrong")
            outcomes.append("fail" if answer.startswith(b"-ERR [AUTH]") else "blocked")
        elif attempt % 3 == 2:
            answer = imap_login(guarded, "wrong")
            outcomes.append("fail" if b"NO [AUTHENTICATIONFAILED]" in answer else "blocked")
        else:
            code = smtp_auth(guarded, "wrong")
            outcomes.append("fail" if code == 535 else "blocked")
        if outcomes[-1] == "blocked":
            break
    # The BLOCK_AFTER-th failure is answered, then the session ends; the next one is refused.
    assert outcomes == ["fail"] * BLOCK_AFTER + ["blocked"]
    assert smtp_auth(guarded, PASSWORD) == 421  # the right password does not help now
    assert pop3_login(guarded, PASSWORD).startswith(b"-ERR [SYS/TEMP]")
    assert imap_login(guarded, PASSWORD).startswith(b"* BYE")
    # Everyone else is served as before.
    assert smtp_auth(guarded, PASSWORD, source=BYSTANDER) == 235
    assert pop3_login(guarded, PASSWORD, source=BYSTANDER).startswith(b"+OK")
    assert imap_login(guarded, PASSWORD, source=BYSTANDER).startswith(b"a OK")
    assert "address blocked" in guarded.log()
    assert guarded.status()["ratekeeper"]["abuse"]["blocks"] == 1


def test_the_blocking_failure_is_answered_then_the_session_ends(guarded):
    with smtplib.SMTP("127.0.0.1", guarded.port, timeout=20) as client:
        client.ehlo("attacker.test")
        for _ in range(BLOCK_AFTER - 1):
            assert client.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0x@example.test\0no").decode())[0] == 535
        code, text = client.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0x@example.test\0no").decode())
        assert code == 535
        assert client.getreply()[0] == 421
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()


def test_harvesting_unknown_recipients_gets_blocked(guarded):
    refused_at = None
    with smtplib.SMTP("127.0.0.1", guarded.port, timeout=20) as client:
        client.ehlo("harvester.test")
        client.mail("probe@elsewhere.test")
        for attempt in range(1, MAX_ATTEMPTS + 1):
            code, _ = client.rcpt(f"guess{attempt}@example.test")
            if code != 550:
                refused_at = (attempt, code)
                break
    assert refused_at == (BLOCK_AFTER + 1, 421)
    with smtplib.SMTP("127.0.0.1", guarded.port, timeout=20, source_address=(BYSTANDER, 0)) as client:
        client.ehlo("friend.test")
        client.mail("friend@elsewhere.test")
        assert client.rcpt(USER)[0] == 250


def test_the_tarpit_delays_failures_past_the_free_ones(make_server):
    server = make_server(server={"allow_plaintext_auth": True},
                         abuse={"tarpit_after": 1, "tarpit_delay": 0.6, "tarpit_max": 0.6,
                                "block_after": 0, "exempt_networks": []})
    server.start()
    smtp_auth(server, "wrong")  # free
    started = time.monotonic()
    assert smtp_auth(server, "wrong") == 535
    assert time.monotonic() - started >= 0.6


def test_unknown_user_and_wrong_password_take_the_same_time(make_server):
    """No account enumeration by timing: both failures run one full password check."""
    server = make_server(server={"allow_plaintext_auth": True})  # loopback exempt: no tarpit
    server.start()
    with smtplib.SMTP("127.0.0.1", server.port, timeout=20) as client:
        client.ehlo("timing.test")

        def attempt(user: str) -> float:
            token = base64.b64encode(f"\0{user}\0wrong".encode()).decode()
            started = time.perf_counter()
            assert client.docmd("AUTH", f"PLAIN {token}")[0] == 535
            return time.perf_counter() - started

        attempt(USER)  # warm up
        known, unknown = [], []
        for _ in range(8):
            known.append(attempt(USER))
            unknown.append(attempt("nobody@example.test"))
    fast, slow = sorted((statistics.median(known), statistics.median(unknown)))
    # An unknown user answered without the password check would take well under a tenth.
    assert slow / fast < 1.5, (known, unknown)


def test_an_exempt_network_is_never_blocked(make_server):
    server = make_server(server={"allow_plaintext_auth": True},
                         abuse={**FAST_TARPIT, "block_after": 2, "exempt_networks": ["127.0.0.1/32"]})
    server.start()
    assert [smtp_auth(server, "wrong") for _ in range(4)] == [535] * 4
    # The second failure is answered, then the session ends; the third connection is refused.
    assert [smtp_auth(server, "wrong", source=BYSTANDER) for _ in range(3)] == [535, 535, 421]
