"""Every cap and timeout, with the refusal text a client sees."""

import socket
import time

import pytest


class Client:
    """A raw SMTP client socket that reads one reply at a time, pipelined or not."""

    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
        self.buffer = b""
        self.greeting = self.reply()

    def reply(self) -> bytes:
        """One whole reply (all its lines), or what came before the server closed."""
        lines = []
        while True:
            while b"\r\n" not in self.buffer:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return b"".join(lines) + self.buffer
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            lines.append(line + b"\r\n")
            if line[3:4] != b"-":
                return b"".join(lines)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def command(self, line: bytes) -> bytes:
        self.send(line + b"\r\n")
        return self.reply()

    def closed(self) -> bool:
        return self.reply() == b""

    def close(self) -> None:
        self.sock.close()


def test_service_wide_connection_cap_spans_workers(make_server):
    server = make_server(smtp={"workers": 2, "max_connections": 4, "max_connections_per_ip": 0})
    server.start()
    held = [Client(server.port, f"127.0.0.{i + 2}") for i in range(4)]
    try:
        assert all(client.greeting.startswith(b"220") for client in held)
        refused = Client(server.port, "127.0.0.9")
        assert refused.greeting.startswith(b"421 4.3.2") and b"too many connections" in refused.greeting
        assert refused.closed()
        refused.close()
        held.pop().close()
        time.sleep(0.3)
        again = Client(server.port, "127.0.0.9")
        assert again.greeting.startswith(b"220")
        again.close()
    finally:
        for client in held:
            client.close()


def test_per_ip_cap(make_server):
    server = make_server(smtp={"workers": 2, "max_connections_per_ip": 3})
    server.start()
    held = [Client(server.port) for _ in range(3)]
    try:
        refused = Client(server.port)
        assert refused.greeting.startswith(b"421 4.7.0") and b"from your IP" in refused.greeting
        assert refused.closed()
        refused.close()
        other = Client(server.port, "127.0.0.2")
        assert other.greeting.startswith(b"220")
        other.close()
    finally:
        for client in held:
            client.close()


def test_idle_timeout(make_server):
    server = make_server(smtp={"idle_timeout": 1})
    server.start()
    client = Client(server.port)
    assert client.command(b"EHLO idle.test").startswith(b"250")
    started = time.monotonic()
    reply = client.reply()
    assert reply.startswith(b"421 4.4.2") and b"timeout" in reply
    assert 0.9 < time.monotonic() - started < 4
    assert client.closed()
    client.close()


def test_line_too_long(shared_server):
    client = Client(shared_server.port)
    client.send(b"EHLO " + b"a" * 5000 + b"\r\nNOOP\r\n")
    assert client.reply().startswith(b"500 5.5.2 Error: line too long")
    assert client.reply().startswith(b"250 2.0.0")
    client.close()


def test_too_many_errors_disconnects(shared_server):
    client = Client(shared_server.port)
    client.send(b"BOGUS\r\n" * 20)
    replies = [client.reply() for _ in range(20)]
    assert all(r.startswith(b"500 5.5.2") for r in replies[:-1])
    assert replies[-1].startswith(b"421 4.7.0")
    assert client.closed()
    client.close()


def test_max_threads_and_workers_are_honoured(make_server):
    server = make_server(smtp={"workers": 3, "max_threads": 2})
    server.start()
    assert len(server.worker_pids()) == 3
    for pid in server.worker_pids():
        threads = [line for line in open(f"/proc/{pid}/status") if line.startswith("Threads:")]
        # the event loop thread plus at most max_threads IO threads (and one committer)
        assert int(threads[0].split()[1]) <= 1 + 2 + 1


@pytest.mark.parametrize("smuggled", [b"\n.\n", b"\r.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r"])
def test_smuggling_never_makes_a_second_message(shared_server, smuggled):
    client = Client(shared_server.port)
    client.command(b"EHLO s.test")
    assert client.command(b"MAIL FROM:<a@remote.test>").startswith(b"250")
    assert client.command(b"RCPT TO:<alice@example.test>").startswith(b"250")
    assert client.command(b"DATA").startswith(b"354")
    client.send(b"Subject: first\r\n\r\nhello" + smuggled +
                 b"MAIL FROM:<evil@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"
                 b"Subject: smuggled\r\n\r\nsecond\r\n.\r\n")
    reply = client.reply()
    # The only end of data is the real CRLF.CRLF: one reply, one refusal, nothing smuggled.
    assert reply.startswith(b"550 5.5.2"), reply
    assert client.command(b"QUIT").startswith(b"221")
    client.close()
    time.sleep(0.5)
    assert shared_server.delivered() == []
