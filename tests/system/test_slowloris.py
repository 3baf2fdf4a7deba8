"""Slow clients cannot starve the service: a slowloris of trickling connections from one
address and from many meets the per-IP and service caps while a normal client is served at
once; a message body (SMTP DATA, an IMAP APPEND literal) trickled below the minimum transfer
rate ends the session."""

from __future__ import annotations

import imaplib
import resource
import smtplib
import socket
import threading
import time

from .conftest import PASSWORD, USER

# 1,000 connections from one address, 200 from 200 others (loopback aliases need no setup).
FROM_ONE_IP = 1000
SPREAD = [f"127.0.0.{i}" for i in range(2, 202)]
NORMAL_CLIENT = "127.0.0.250"
TRICKLE_INTERVAL = 0.5
# What the issue promises a normal client while the attack goes on.
SERVICE_WITHIN = 2.0


class Trickler:
    """Holds connections open and feeds each one byte of a command line now and then."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.socks: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True)

    def open(self, source: str, count: int) -> None:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=10,
                                            source_address=(source, 0))
            sock.setblocking(False)
            self.socks.append(sock)

    def start(self) -> None:
        self._thread.start()

    def _trickle(self) -> None:
        line = b"EHLO slowly.example\r\n"
        step = 0
        while not self._stop.wait(TRICKLE_INTERVAL):
            byte = line[step % len(line):][:1]
            for sock in self.socks:
                try:
                    sock.send(byte)
                except OSError:
                    pass  # refused over a cap and closed by the server: that is the point
            step += 1

    def refused(self) -> int:
        """Connections the server answered with a cap refusal (421) and closed."""
        count = 0
        for sock in self.socks:
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                continue
            except ConnectionResetError:  # closed after its 421, then written to
                count += 1
                continue
            count += data.startswith(b"421") or data == b""
        return count

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for sock in self.socks:
            sock.close()


def normal_session(port: int) -> float:
    """A whole SMTP transaction from an address of its own; its duration in seconds."""
    started = time.monotonic()
    with smtplib.SMTP("127.0.0.1", port, timeout=SERVICE_WITHIN * 2,
                      source_address=(NORMAL_CLIENT, 0)) as client:
        client.sendmail("bob@remote.test", [USER], b"Subject: still served\r\n\r\nhi\r\n")
    return time.monotonic() - started


def test_slowloris_from_one_ip_and_from_many_leaves_service_for_others(make_server):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FROM_ONE_IP + len(SPREAD) + 256
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    server = make_server(smtp={"workers": 2, "max_connections": 1000, "max_connections_per_ip": 50})
    server.start()
    workers = sorted(server.worker_pids())
    trickler = Trickler(server.port)
    try:
        trickler.open("127.0.0.1", FROM_ONE_IP)
        for source in SPREAD:
            trickler.open(source, 1)
        trickler.start()
        time.sleep(2 * TRICKLE_INTERVAL)  # the attack is under way, every connection accepted
        durations = [normal_session(server.port) for _ in range(3)]
        assert max(durations) < SERVICE_WITHIN, durations
        # All but 50 of the connections from one address met the per-IP cap.
        assert trickler.refused() >= FROM_ONE_IP - 50
    finally:
        trickler.close()
    assert sorted(server.worker_pids()) == workers
    server.wait_delivered(3)


def test_a_body_trickled_below_the_minimum_rate_ends_the_session(make_server):
    # idle_timeout bounds the grace: the trickler is cut after about 2 s, not TRANSFER_GRACE.
    server = make_server(smtp={"idle_timeout": 2}, limits={"min_transfer_rate": 1000})
    server.start()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        for command in (b"EHLO slow.example", b"MAIL FROM:<bob@remote.test>", f"RCPT TO:<{USER}>".encode()):
            sock.sendall(command + b"\r\n")
            while (line := reader.readline())[3:4] == b"-":
                pass
            assert line[:1] == b"2", line
        sock.sendall(b"DATA\r\n")
        assert reader.readline().startswith(b"354")
        started = time.monotonic()
        sock.settimeout(0.25)
        answer = b""
        while not answer and time.monotonic() - started < 10:
            try:
                sock.sendall(b"x")  # 4 octets a second: active, but far below 1,000/s
                answer = sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                break
        elapsed = time.monotonic() - started
    assert answer.startswith(b"421 4.4.2"), answer
    assert 2 <= elapsed < 5, elapsed
    # A client at a normal rate is not affected by the same limits.
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        client.sendmail("bob@remote.test", [USER], b"Subject: big\r\n\r\n" + b"y" * 1000 + b"\r\n" * 500)
    server.wait_delivered(1)


def trickle_until_answered(sock: socket.socket, limit: float = 10) -> tuple[bytes, float]:
    """Send a byte every 0.25 s until the server says something; its words and the time taken."""
    started = time.monotonic()
    sock.settimeout(0.25)
    answer = b""
    while not answer and time.monotonic() - started < limit:
        try:
            sock.sendall(b"x")  # 4 octets a second: active, but far below 1,000/s
            answer = sock.recv(4096)
        except socket.timeout:
            continue
        except OSError:
            break
    return answer, time.monotonic() - started


def test_an_imap_literal_trickled_below_the_minimum_rate_ends_the_session(make_server):
    server = make_server(imap_services=True, imap={"idle_timeout": 2},
                         limits={"min_transfer_rate": 1000}, server={"allow_plaintext_auth": True})
    server.start()
    workers = server.worker_pids("imap")
    with socket.create_connection(("127.0.0.1", server.imap_port), timeout=10) as sock:
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"* OK")
        sock.sendall(f'a LOGIN {USER} "{PASSWORD}"\r\n'.encode())
        while not (line := reader.readline()).startswith(b"a "):
            pass
        assert line.startswith(b"a OK"), line
        # Waiting for a command is not a transfer: only the idle timeout applies (not hit here).
        time.sleep(1.5)
        sock.sendall(b"b APPEND INBOX {100000}\r\n")
        assert reader.readline().startswith(b"+")
        answer, elapsed = trickle_until_answered(sock)
    assert answer.startswith(b"* BYE"), answer
    assert 2 <= elapsed < 5, elapsed
    assert server.worker_pids("imap") == workers
    # A client at a normal rate is served by the same worker under the same limits.
    client = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=10)
    client.login(USER, PASSWORD)
    assert client.append("INBOX", None, None, b"Subject: big\r\n\r\n" + b"y" * 50_000 + b"\r\n")[0] == "OK"
    client.logout()
