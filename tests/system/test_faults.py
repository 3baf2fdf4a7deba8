"""Faults the server must survive (issue 22): a full data disk, workers killed by signals,
reloads under load, a rate-keeper restarting. Each test reproduces a defect a fault-injection
run found, and failed before its fix."""

from __future__ import annotations

import os
import signal
import smtplib
import ssl
import threading
import time
import urllib.request

from mailforge.process import control

from .conftest import DOMAIN, USER, cli, free_port

OTHER = f"bob@{DOMAIN}"
BIG_MESSAGE = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 300  # 300 KB: .msg + .env files


def wait_for(condition, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        return answer.read().decode()


def test_a_full_data_disk_kills_no_process_and_mail_flows_once_space_is_back(
        small_disk_factory, make_server):
    """The reproduction from the issue: delivery workers stopped, a big message to two local
    users queued, the disk filled, the workers let go: they defer (a metrics write), the
    supervisor reaps nothing, every process stays up, and the mail arrives once space is back."""
    disk = small_disk_factory(20)
    port = free_port()
    server = make_server(root=disk.path, metrics={"listen": f"127.0.0.1:{port}"},
                         delivery={"workers": 1, "retry_schedule": [1.0]})
    cli(server.conf, "user", "add", OTHER, "--password-stdin", input="secret\n")
    server.start()
    children = set(server.children())
    delivery = [worker["pid"] for worker in server.status()["delivery"]]
    for pid in delivery:
        os.kill(pid, signal.SIGSTOP)
    try:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
            assert client.sendmail("sender@remote.test", [USER, OTHER], BIG_MESSAGE) == {}
        disk.fill()
    finally:
        for pid in delivery:
            os.kill(pid, signal.SIGCONT)
    # Deliveries fail for want of space and are deferred.
    wait_for(lambda: 'mailforge_messages_deferred_total{via="local"}' in scrape(port), 10,
             "no delivery deferred")
    assert server.proc.poll() is None, f"the supervisor died; log:\n{server.log()[-3000:]}"
    assert set(server.children()) == children, f"children died; log:\n{server.log()[-3000:]}"
    disk.free()
    server.wait_delivered(1)
    server.wait_delivered(1, address=OTHER)


def test_a_full_metrics_file_system_costs_counting_only(small_disk_factory, make_server):
    """Metrics on a file system of their own that fills up: the processes running reserved
    their blocks at start and go on counting; one started after the fill runs without
    metrics (and says so) but serves mail."""
    disk = small_disk_factory(1)
    port = free_port()
    server = make_server(metrics={"listen": f"127.0.0.1:{port}", "directory": str(disk.path)})
    server.start()
    # "ready" comes before every child has reserved its files: on a busy machine a delivery
    # worker may still be starting, and would start after the fill, without metrics.
    children = [*server.worker_pids(), *(worker["pid"] for worker in status(server)["delivery"])]
    wait_for(lambda: all(any(disk.path.rglob(f"*_{pid}.db")) for pid in children), 10,
             "the children never reserved their metrics files")
    disk.fill()
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        assert client.sendmail("sender@remote.test", [USER], b"Subject: one\r\n\r\nx\r\n") == {}
    server.wait_delivered(1)
    victim = server.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in server.worker_pids() and len(server.worker_pids()) == 2, 10,
             "the killed worker was not replaced")
    wait_for(lambda: "metrics off in process" in server.log(), 10, "no word of metrics off")
    for _ in range(4):  # both workers, the new one among them, take connections
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
            assert client.sendmail("sender@remote.test", [USER], b"Subject: more\r\n\r\nx\r\n") == {}
    server.wait_delivered(5)
    assert server.proc.poll() is None
    assert 'mailforge_messages_delivered_total{via="local"}' in scrape(port)


def status(server) -> dict:
    """The supervisor's status straight from its control socket: a CLI process costs more
    time than some of the windows these tests look into."""
    return control.request(server.config.control_socket, "status")


def ready_workers(server, service: str = "smtp") -> dict[int, int]:
    """slot → pid of the service's workers that serve already."""
    return {w["slot"]: w["pid"] for w in status(server)["services"][service]["workers"]
            if w["ready"] and not w["retiring"]}


def test_a_healthy_worker_killed_twice_is_restarted_at_once_each_time(make_server):
    """No backoff for a worker that served and was killed by a signal (the OOM killer, an
    operator): it used to count as a boot failure below 10 s of uptime, and the second kill
    left its slot empty for seconds."""
    server = make_server()
    server.start()
    wait_for(lambda: len(ready_workers(server)) == 2, 10, "workers never ready")
    for _ in range(3):
        wait_for(lambda: 0 in ready_workers(server), 5, "slot 0 never ready")
        victim = ready_workers(server)[0]
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: ready_workers(server).get(0, victim) != victim, 5,
                 f"slot 0 not restarted; log:\n{server.log()[-2000:]}")
        assert time.monotonic() - killed < 1.0
    assert server.log().count("restarting in 0.0 s") == 3


def reloads_under_load(server, service: str, session, reloads: int) -> list[str]:
    """`reloads` SIGHUPs, each waited for until the new generation's two workers serve, while
    4 threads keep opening connections and running `session` on each; every outcome."""
    answers: list[str] = []
    stop = threading.Event()

    def keep_connecting() -> None:
        while not stop.is_set():
            try:
                answers.append(session())
            except (OSError, smtplib.SMTPException) as exc:
                answers.append(repr(exc))

    threads = [threading.Thread(target=keep_connecting) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for generation in range(2, 2 + reloads):
            os.kill(server.pid, signal.SIGHUP)
            wait_for(lambda: status(server)["generation"] == generation
                     and len(ready_workers(server, service)) == 2, 10, "reload did not finish")
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    return answers


def test_twenty_reloads_under_load_refuse_no_new_connection(make_server):
    """Connections accepted by a worker just told to retire are served, not told 421."""
    server = make_server(smtp={"workers": 2})
    server.start()

    def session() -> str:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
            code, text = client.ehlo()
            return f"{code} {text[:40]!r}"

    answers = reloads_under_load(server, "smtp", session, 20)
    bad = [answer for answer in answers if not answer.startswith("250 ")]
    assert len(answers) > 100 and bad == [], (len(answers), bad[:5])


def test_status_names_the_rate_keeper_state_while_it_restarts(make_server):
    """Killed once it served, it is replaced at once; its replacement killed while starting
    is a boot failure and waits half a second: status says "restarting" then, not null."""
    server = make_server()
    server.start()
    wait_for(lambda: status(server)["ratekeeper"]["state"] == "running", 5, "never running")
    first = status(server)["ratekeeper"]["pid"]
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: status(server)["ratekeeper"]["pid"] not in (None, first), 5, "not replaced")
    starting = status(server)["ratekeeper"]
    assert starting["state"] == "starting"
    os.kill(starting["pid"], signal.SIGKILL)
    time.sleep(0.1)  # reaped within a tick; the next start waits for its backoff
    assert status(server)["ratekeeper"] == {"state": "restarting", "pid": None, "uptime": None,
                                             "abuse": None, "cluster": None}
    wait_for(lambda: status(server)["ratekeeper"]["state"] == "running", 5, "never back")


def test_reloads_under_smtps_load_drop_no_connection_in_its_handshake(make_server):
    """Implicit TLS: a connection accepted by a worker just told to retire may still be in its
    handshake (no session yet); the worker serves it rather than exit under it."""
    server = make_server(tls_services=True, smtps={"workers": 2})
    server.start()
    context = ssl.create_default_context(cafile=server.ca_file)
    context.check_hostname = False

    def session() -> str:
        with smtplib.SMTP_SSL("127.0.0.1", server.smtps_port, timeout=10,
                              context=context) as client:
            return str(client.noop()[0])

    answers = reloads_under_load(server, "smtps", session, 15)
    bad = [answer for answer in answers if answer != "250"]
    assert len(answers) > 50 and bad == [], (len(answers), bad[:5])
