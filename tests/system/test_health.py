"""/health on the metrics listener, over real HTTP (for HAProxy's `option httpchk`): 503 while
the node starts (before a worker serves) and from the moment it is told to stop, 200 "ok" in
between; a PostgreSQL accounts database that is down turns it into 200 "degraded: …" (every
node shares it: a 503 would take them all out of the balancer), "ok" again once it is back."""

from __future__ import annotations

import signal
import smtplib
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.pg_cluster import start_cluster
from .conftest import USER, free_port
from .test_accounts_postgresql import postgresql_settings
from .test_cluster_counters import wait_for

WATCH_INTERVAL = 0.01  # the start's "starting" lasts a few hundred milliseconds at least
STARTING = (503, "starting: no smtp worker serving yet\n")
OK = (200, "ok\n")


def health(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.fixture(scope="module")
def cluster():
    instance = start_cluster()
    yield instance
    instance.remove()


def test_health_is_ok_while_serving_and_degraded_while_the_accounts_database_is_down(
        make_server, cluster):
    port = free_port()
    server = make_server(accounts=False, metrics={"listen": f"127.0.0.1:{port}"})
    server.reconfigure({"accounts": postgresql_settings(server, cluster)})
    server.start()
    wait_for(lambda: health(port) == (200, "ok\n"), "/health to say ok")
    assert "mailforge_processes" in urllib.request.urlopen(
        f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()  # still served

    cluster.stop()
    try:
        wait_for(lambda: health(port)[1] != "ok\n", "/health to see the database down")
        status, reason = health(port)
        assert status == 200  # the node stays in the balancer and answers temporary errors
        assert reason.startswith("degraded: accounts database ") and "unavailable" in reason
        assert reason.count("\n") == 1 and "pg-test-password" not in reason
    finally:
        cluster.start()
    wait_for(lambda: health(port) == (200, "ok\n"), "/health to say ok again")

class HealthWatcher:
    """Asks /health every few milliseconds from a thread: the answers in order, each change
    once (None: nothing listens yet)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.answers: list[tuple[int, str] | None] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._done.is_set():
            try:
                answer = health(self.port)
            except OSError:
                answer = None
            if not self.answers or self.answers[-1] != answer:
                self.answers.append(answer)
            time.sleep(WATCH_INTERVAL)

    def stop(self) -> list[tuple[int, str] | None]:
        self._done.set()
        self._thread.join(timeout=10)
        return self.answers


def smtp_refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_health_is_503_while_the_node_starts_and_while_it_drains(make_server):
    port = free_port()
    server = make_server(metrics={"listen": f"127.0.0.1:{port}"})
    watcher = HealthWatcher(port)
    try:
        server.start()
        wait_for(lambda: health(port) == OK, "/health to say ok")
    finally:
        answers = watcher.stop()
    # Nothing listening, then "starting" until a worker serves, then ok.
    assert STARTING in answers and set(answers) <= {None, STARTING, OK}, answers
    assert OK not in answers[:answers.index(STARTING)], answers

    # A session in the middle of DATA holds the drain open for the grace period.
    session = smtplib.SMTP("127.0.0.1", server.port, timeout=30)
    session.ehlo()
    session.mail("carol@remote.test")
    session.rcpt(USER)
    session.putcmd("DATA")
    assert session.getreply()[0] == 354
    session.send(b"Subject: drained\r\n\r\nhalf")
    assert health(port) == OK
    server.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: smtp_refused(server.port), "the listeners to close")
    assert health(port) == (503, "stopping\n")  # at once: the balancer must not wait
    session.send(b" and the rest\r\n.\r\n")
    assert session.getreply()[0] == 250  # the drain lets it finish
    session.quit()
    assert server.proc.wait(timeout=30) == 0
    with pytest.raises(OSError):
        health(port)
