"""Logs where an operator looks: a server from `init` writes the terminal and log/mailforge.log
both, starts quietly (listeners and `ready`; one line per worker only at debug), and
`mailforge logs [-f] [--service S] [-n N]` reads the file back, following it through logrotate."""

from __future__ import annotations

import poplib
import queue
import smtplib
import subprocess
import threading
import time

import pytest

from .conftest import MAILFORGE, PASSWORD, USER, cli


# POP3 logins in the clear, for sessions that log a user: these tests are about the log.
PLAIN_LOGINS = {"allow_plaintext_auth": True}


def smtp_session(server) -> None:
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        client.ehlo("client.test")


def pop3_session(server) -> None:
    client = poplib.POP3("127.0.0.1", server.pop3_port, timeout=10)
    client.user(USER)
    client.pass_(PASSWORD)
    client.quit()


def wait_for_file_text(path, text: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = path.read_text() if path.exists() else ""
        if text in content:
            return content
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never reached {path}")


def test_a_server_from_init_logs_to_the_terminal_and_the_file_and_starts_quietly(make_server):
    server = make_server(pop3_services=True)  # two workers for SMTP, one each for POP3(S)
    assert server.config.log.target == "stderr+file"
    server.start()
    smtp_session(server)
    log_file = server.config.log_dir / "mailforge.log"
    in_file = wait_for_file_text(log_file, "service=smtp")
    terminal = wait_for_file_text(server.dir / "log" / "serve.log", "service=smtp")
    connect = next(line for line in in_file.splitlines() if "connect" in line and "service=smtp" in line)
    assert connect in terminal  # the same record, in both places
    assert [line.split(" listening on ")[0] for line in server.output[:-1]] == [
        "mailforge: smtp", "mailforge: pop3", "mailforge: pop3s"]
    assert server.output[-1].startswith("mailforge: ready (pid ")
    for line in terminal.splitlines():  # each process's start is a debug line, not the terminal's
        assert "worker sandbox" not in line and " started " not in line, line


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_logs_shows_the_last_records_of_one_service(make_server, log_format):
    server = make_server(pop3_services=True, server=PLAIN_LOGINS, log={"format": log_format})
    server.start()
    pop3_session(server)
    smtp_session(server)
    log_file = server.config.log_dir / "mailforge.log"
    wait_for_file_text(log_file, "disconnect")
    server.stop()  # nothing written while the file is read

    pop3 = cli(server.conf, "logs", "--service", "pop3", "-n", "2").stdout.splitlines()
    assert len(pop3) == 2 and all("pop3" in line and "smtp" not in line for line in pop3)
    assert "login" in pop3[0] and "disconnect" in pop3[1]
    everything = log_file.read_text().splitlines()
    assert cli(server.conf, "logs").stdout.splitlines() == everything[-10:]
    assert cli(server.conf, "logs", "-n", "1000").stdout.splitlines() == everything
    supervisor = cli(server.conf, "logs", "--service", "supervisor", "-n", "1").stdout
    assert "supervisor" in supervisor and "stopped" in supervisor


def test_logs_follow_prints_new_records_through_a_logrotate_move(make_server):
    server = make_server(pop3_services=True, server=PLAIN_LOGINS)
    server.start()
    log_file = server.config.log_dir / "mailforge.log"
    follower = subprocess.Popen(MAILFORGE + ["-c", str(server.conf), "logs", "-f", "-n", "0",
                                             "--service", "smtp"],
                                stdout=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in follower.stdout], daemon=True).start()
    try:
        _wait_for_the_follower(server, lines)
        pop3_session(server)
        smtp_session(server)
        seen = _read_until(lines, "disconnect")
        assert all("service=smtp" in line for line in seen), seen
        log_file.rename(log_file.with_suffix(".log.1"))  # what logrotate does
        smtp_session(server)
        seen = _read_until(lines, "disconnect")
        assert any("connect" in line for line in seen)
        assert log_file.exists()
    finally:
        follower.terminate()
        follower.wait(10)


def _wait_for_the_follower(server, lines: queue.Queue[str], timeout: float = 60) -> None:
    """SMTP sessions until the follower prints one: from then on it is at the file's end (a
    fixed sleep is too short for a loaded machine starting Python)."""
    deadline = time.monotonic() + timeout
    while True:
        smtp_session(server)
        try:
            _read_until(lines, "disconnect", timeout=2)
            return
        except queue.Empty:
            if time.monotonic() > deadline:
                raise


def _read_until(lines: queue.Queue[str], text: str, timeout: float = 15) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while not seen or text not in seen[-1]:
        seen.append(lines.get(timeout=max(0.1, deadline - time.monotonic())))
    return seen


def test_logs_without_a_log_file_says_why(make_server):
    server = make_server(log={"target": "stderr"})
    result = cli(server.conf, "logs", check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and 'target = "stderr" writes no log file' in result.stderr
    bad = cli(server.conf, "logs", "--service", "nntp", check=False)
    assert bad.returncode == 2 and "invalid choice: 'nntp'" in bad.stderr
