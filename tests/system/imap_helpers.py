"""What the IMAP system tests share: servers, clients logged in, raw sessions."""

from __future__ import annotations

import imaplib
import socket
import ssl

from .conftest import PASSWORD, USER

HOSTNAME = "mx.example.test"


def message(n: int, body: bytes = b"hello") -> bytes:
    return (b"From: Bob <bob@remote.test>\r\nTo: alice@example.test\r\nSubject: message %d\r\n"
            b"Message-ID: <%d@remote.test>\r\nDate: Wed, 25 Nov 2026 12:00:00 +0000\r\n\r\n"
            b"%s %d\r\n" % (n, n, body, n))


def ok(result: tuple[str, list]) -> list:
    """An imaplib command's data, once its status was OK."""
    status, data = result
    assert status == "OK", data
    return data


def tls_context(server) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=server.ca_file)
    context.check_hostname = False  # the clients name 127.0.0.1; the certificate names HOSTNAME
    return context


def login(server, port: int | None = None) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", port or server.imap_port, timeout=20)
    client.login(USER, PASSWORD)
    return client


def fill(client: imaplib.IMAP4, count: int, folder: str = "INBOX") -> None:
    for n in range(count):
        assert client.append(folder, None, None, message(n))[0] == "OK"


class RawSession:
    """A client that writes exact bytes and reads exact lines: for what imaplib will not send."""

    def __init__(self, port: int, context: ssl.SSLContext | None = None) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.sock = context.wrap_socket(sock) if context else sock
        self.reader = self.sock.makefile("rb")
        self.greeting = self.readline()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def readline(self) -> bytes:
        return self.reader.readline()

    def until_tagged(self, tag: bytes) -> list[bytes]:
        """Every line up to and including the tagged completion (literals read as lines)."""
        lines = []
        while True:
            line = self.readline()
            if not line:
                raise ConnectionError(f"closed before {tag!r}: {lines}")
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines

    def command(self, tag: bytes, text: bytes) -> list[bytes]:
        self.send(tag + b" " + text + b"\r\n")
        return self.until_tagged(tag)

    def start_idle(self) -> None:
        self.send(b"I IDLE\r\n")
        assert self.readline() == b"+ idling\r\n"

    def end_idle(self) -> None:
        self.send(b"DONE\r\n")
        assert self.until_tagged(b"I")[-1] == b"I OK IDLE terminated\r\n"

    def login(self) -> None:
        assert self.command(b"L", b'LOGIN %s "%s"' % (USER.encode(), PASSWORD.encode()))[-1] \
            .startswith(b"L OK")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()
