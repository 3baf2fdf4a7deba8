"""The supervisor's life: graceful stop, reload, heartbeat, status, and config mistakes."""

import os
import signal
import smtplib
import subprocess
import threading
import time

from .conftest import MAILFORGE, USER, cli
from .test_limits import Client


def test_sigterm_lets_a_transaction_finish_and_closes_idle_sessions(make_server):
    server = make_server(server={"grace_period": 5})
    server.start()
    idle = Client(server.port)
    busy = Client(server.port)
    busy.command(b"EHLO busy.test")
    busy.command(b"MAIL FROM:<b@remote.test>")
    busy.command(b"RCPT TO:<alice@example.test>")
    assert busy.command(b"DATA").startswith(b"354")
    busy.send(b"Subject: in flight\r\n\r\npart one\r\n")
    os.kill(server.pid, signal.SIGTERM)
    reply = idle.reply()
    assert reply.startswith(b"421 4.3.2") and b"shutting down" in reply
    time.sleep(0.5)
    busy.send(b"part two\r\n.\r\n")
    assert busy.reply().startswith(b"250 2.0.0 Ok: queued as")
    # After its transaction, the busy session is told too.
    assert busy.reply().startswith(b"421 4.3.2")
    assert server.proc.wait(timeout=15) == 0
    server.proc = None
    server.start()
    (path,) = server.wait_delivered(1)
    assert b"part two" in path.read_bytes()


def test_sigterm_after_grace_period_closes_busy_sessions(make_server):
    server = make_server(server={"grace_period": 1})
    server.start()
    busy = Client(server.port)
    busy.command(b"EHLO busy.test")
    busy.command(b"MAIL FROM:<b@remote.test>")
    started = time.monotonic()
    os.kill(server.pid, signal.SIGTERM)
    assert busy.reply().startswith(b"421 4.3.2")
    assert 0.8 < time.monotonic() - started < 5
    assert server.proc.wait(timeout=15) == 0
    server.proc = None


# Process starts are debug lines: the tests that look for a rate-keeper restart log them.
LOG_PROCESS_STARTS = {"level": "debug"}


def test_a_second_sigterm_kills_every_child_at_once(make_server):
    server = make_server(server={"grace_period": 30}, log=LOG_PROCESS_STARTS)
    server.start()
    busy = Client(server.port)
    busy.command(b"EHLO busy.test")
    busy.command(b"MAIL FROM:<b@remote.test>")
    os.kill(server.pid, signal.SIGTERM)
    wait_for_log(server, "stopping: listeners closed")
    os.kill(server.pid, signal.SIGTERM)
    assert server.proc.wait(timeout=10) == 0  # not the 30 s grace
    server.proc = None
    stop = server.log().split("asked again to stop", 1)[1]
    assert "started rate-keeper" not in stop  # nothing left for it to serve


def test_ctrl_c_to_the_process_group_stops_once_without_a_rate_keeper_restart(make_server):
    server = make_server(log=LOG_PROCESS_STARTS)
    server.start()
    os.killpg(server.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    assert server.proc.wait(timeout=15) == 0
    server.proc = None
    stop = server.log().split("stopping: listeners closed", 1)[1]
    assert "started rate-keeper" not in stop and "rate-keeper: stopped" in stop


def test_sighup_replaces_workers_without_refusing_connections(make_server):
    server = make_server(smtp={"workers": 2})
    server.start()
    before = set(server.worker_pids())
    failures = []
    stop = threading.Event()

    def keep_connecting():
        while not stop.is_set():
            try:
                with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
                    client.noop()
            except (OSError, smtplib.SMTPException) as exc:
                failures.append(repr(exc))

    thread = threading.Thread(target=keep_connecting)
    thread.start()
    try:
        time.sleep(0.3)
        server.reconfigure({"smtp": {"workers": 3}})
        os.kill(server.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            after = set(server.worker_pids())
            if len(after) == 3 and not after & before:
                break
            time.sleep(0.1)
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join(15)
    assert len(after) == 3 and not after & before
    assert failures == []


def test_stuck_worker_is_killed_and_replaced(make_server):
    server = make_server(server={"worker_timeout": 1.5})
    server.start()
    victim = server.worker_pids()[0]
    os.kill(victim, signal.SIGSTOP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and victim in server.worker_pids():
        time.sleep(0.2)
    assert victim not in server.worker_pids()
    assert len(server.worker_pids()) == 2
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        assert client.sendmail("b@remote.test", [USER], b"Subject: after\r\n\r\nok\r\n") == {}


def test_status_reports_workers_connections_and_queue(server):
    held = Client(server.port)
    try:
        time.sleep(0.2)
        status = server.status()
        assert len(status["services"]["smtp"]["workers"]) == 2
        assert status["services"]["smtp"]["connections"] == 1
        assert status["queue"]["length"] == 0
        assert status["implementation"] in ("python", "cython")
        text = cli(server.conf, "status").stdout
        assert "smtp" in text and str(server.worker_pids()[0]) in text
    finally:
        held.close()


def test_status_when_not_running(make_server):
    server = make_server()
    result = cli(server.conf, "status", check=False)
    assert result.returncode == 1 and "not running" in result.stderr + result.stdout


def test_config_mistakes_name_file_and_key(make_server):
    server = make_server()
    text = server.conf.read_text()
    cases = [
        (text.replace("workers = 2", 'workers = "two"', 1), "[smtp] workers"),
        (text + "\n[bogus]\nx = 1\n", "[bogus]"),
        (text.replace('listen = ["127.0.0.1', 'listen = ["127.0.0.1:99999", "127.0.0.1', 1), "[smtp] listen"),
        (text.replace("grace_period", "grace_periodx"), "[server] grace_periodx"),
        (text.replace('mode = "authenticated"', 'mode = "sometimes"'), "[relay] mode"),
        ("not toml [", "not valid TOML"),
    ]
    for content, key in cases:
        server.conf.write_text(content)
        for command in ("check-config", "serve"):
            result = subprocess.run(MAILFORGE + ["-c", str(server.conf), command],
                                    capture_output=True, text=True, timeout=30)
            assert result.returncode == 2, (command, key, result.stderr)
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and str(server.conf) in lines[0] and key in lines[0], lines


def test_port_in_use_is_one_clear_line(make_server):
    first = make_server()
    first.start()
    second = make_server()
    second.reconfigure({"smtp": {"listen": [f"127.0.0.1:{first.port}"]}})
    result = subprocess.run(MAILFORGE + ["-c", str(second.conf), "serve"], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2
    assert f"127.0.0.1:{first.port}" in result.stderr and "Traceback" not in result.stderr


def test_reload_with_a_broken_certificate_keeps_the_running_workers(make_server):
    server = make_server(tls_services=True)
    server.start()
    before = set(server.worker_pids("submission"))
    (server.config.data_dir / server.config.tls.key).write_text("not a key\n")
    os.kill(server.pid, signal.SIGHUP)
    wait_for_log(server, "reload failed")
    assert set(server.worker_pids("submission")) == before
    assert "reload failed" in server.log() and "[tls] key" in server.log()
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        assert client.noop()[0] == 250


def test_a_session_open_across_a_reload_goes_on(make_server):
    server = make_server(server={"grace_period": 5})
    server.start()
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        client.ehlo("client.test")
        os.kill(server.pid, signal.SIGHUP)
        wait_for_log(server, "generation 2 started")
        # Its worker is retiring: the session is not told the service is shutting down.
        assert client.noop()[0] == 250
        assert client.sendmail("b@remote.test", [USER], b"Subject: across\r\n\r\nok\r\n") == {}
    server.wait_delivered(1)


def wait_for_log(server, text: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in server.log():
        assert time.monotonic() < deadline, f"{text!r} not logged; log ends:\n{server.log()[-2000:]}"
        time.sleep(0.05)
