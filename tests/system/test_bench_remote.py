"""`bench.load --host` against a mailforge it did not start: STARTTLS and AUTH on submission,
implicit TLS on SMTPS and POP3S, the figures in its table."""

import pytest

from bench import load

from .conftest import PASSWORD, USER


@pytest.fixture
def tls_server(make_server):
    server = make_server(tls_services=True, pop3_services=True)
    server.start()
    return server


def row_of(output: str, host: str) -> list[str]:
    line = next(line for line in output.splitlines() if host in line and "│" in line)
    return [cell.strip() for cell in line.split("│") if cell.strip()]


def run_load(capsys, *argv: str) -> list[str]:
    assert load.main(list(argv)) == 0
    return row_of(capsys.readouterr().out, "│ 127.0.0.1 ")


def test_smtp_and_pop3_load_another_server_over_tls(tls_server, capsys):
    login = ("--host", "127.0.0.1", "--insecure", "--user", USER, "--password", PASSWORD,
             "--clients", "2", "--timeout", "60")
    submission = run_load(capsys, "smtp", *login, "--port", str(tls_server.submission_port),
                          "--starttls", "--auth", "--messages", "6", "--reuse", "2")
    assert submission[1:3] == ["6", "0"]  # accepted, errors
    smtps = run_load(capsys, "smtp", *login, "--port", str(tls_server.smtps_port), "--tls",
                     "--auth", "--messages", "4")
    assert smtps[1:3] == ["4", "0"]
    tls_server.wait_delivered(10)
    # One account for both clients would meet POP3's maildrop lock: one client here.
    pop3s = run_load(capsys, "pop3", *login[:-4], "--clients", "1", "--timeout", "60",
                     "--port", str(tls_server.pop3s_port), "--tls", "--sessions", "3",
                     "--messages", "10")
    assert pop3s[1:3] == ["3", "0"]


def test_a_refused_auth_is_counted_by_kind(tls_server, capsys):
    assert load.main(["smtp", "--host", "127.0.0.1", "--port", str(tls_server.submission_port),
                      "--starttls", "--insecure", "--auth", "--user", USER, "--password", "wrong",
                      "--clients", "1", "--messages", "2", "--timeout", "60"]) == 1
    assert "AUTH 535 ×2" in capsys.readouterr().out
