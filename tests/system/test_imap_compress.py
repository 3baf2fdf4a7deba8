"""COMPRESS=DEFLATE (RFC 4978) over real sockets: imaplib taught to deflate, and a raw client
that deflates by hand, in plain text and inside TLS."""

from __future__ import annotations

import imaplib
import os
import zlib

import pytest

from .conftest import PASSWORD, USER
from .imap_helpers import RawSession, message, tls_context


class DeflatingIMAP4(imaplib.IMAP4):
    """imaplib with RFC 4978 once `compress()` has been answered OK."""

    deflater = None

    def compress(self) -> tuple[str, list]:
        result = self._simple_command("COMPRESS", "DEFLATE")
        if result[0] == "OK":
            self.deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
            self.inflater = zlib.decompressobj(-15)
            self.plain = b""
        return result

    def send(self, data: bytes) -> None:
        if self.deflater is not None:
            data = self.deflater.compress(data) + self.deflater.flush(zlib.Z_SYNC_FLUSH)
        super().send(data)

    def _fill(self, wanted) -> None:
        while not wanted(self.plain):
            chunk = self.sock.recv(65536)
            if not chunk:
                raise imaplib.IMAP4.abort("closed")
            self.plain += self.inflater.decompress(chunk)

    def read(self, size: int) -> bytes:
        if self.deflater is None:
            return super().read(size)
        self._fill(lambda plain: len(plain) >= size)
        data, self.plain = self.plain[:size], self.plain[size:]
        return data

    def readline(self) -> bytes:
        if self.deflater is None:
            return super().readline()
        self._fill(lambda plain: b"\n" in plain)
        line, _, self.plain = self.plain.partition(b"\n")
        return line + b"\n"


class InflatingReader:
    """The raw session's line reader once the server deflates."""

    def __init__(self, session: RawSession) -> None:
        self.sock, self.file = session.sock, session.reader
        self.inflater = zlib.decompressobj(-15)
        self.plain = b""

    def readline(self) -> bytes:
        while b"\n" not in self.plain:
            chunk = self.sock.recv(65536)
            if not chunk:
                return b""
            self.plain += self.inflater.decompress(chunk)
        line, _, self.plain = self.plain.partition(b"\n")
        return line + b"\n"

    def close(self) -> None:
        self.file.close()


class DeflatingSession(RawSession):
    """A raw session whose bytes go through deflate after `compress()`."""

    deflater = None

    def compress(self) -> None:
        assert self.command(b"Z", b"COMPRESS DEFLATE") == [b"Z OK DEFLATE active\r\n"]
        self.deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.reader = InflatingReader(self)

    def send(self, data: bytes) -> None:
        if self.deflater is not None:
            data = self.deflater.compress(data) + self.deflater.flush(zlib.Z_SYNC_FLUSH)
        self.sock.sendall(data)


@pytest.fixture
def plain_server(make_server):
    server = make_server(imap_services=True, server={"allow_plaintext_auth": True})
    server.start()
    return server


def test_imaplib_session_through_deflate(plain_server, monkeypatch):
    monkeypatch.setitem(imaplib.Commands, "COMPRESS", ("AUTH", "SELECTED"))
    client = DeflatingIMAP4("127.0.0.1", plain_server.imap_port, timeout=20)
    assert "COMPRESS=DEFLATE" in client.capabilities
    client.login(USER, PASSWORD)
    assert client.compress()[0] == "OK"
    big = message(1, os.urandom(300_000).hex().encode())  # a literal far past one read
    assert client.append("INBOX", None, None, big)[0] == "OK"
    assert client.select("INBOX") == ("OK", [b"1"])
    status, data = client.fetch("1", "(BODY.PEEK[])")
    assert status == "OK" and data[0][1] == big
    status, data = client.compress()
    assert status == "NO" and data[0].startswith(b"[COMPRESSIONACTIVE]")
    assert client.noop()[0] == "OK"
    client.logout()


def test_pipelined_behind_compress_and_refusals(plain_server):
    session = DeflatingSession(plain_server.imap_port)
    assert session.command(b"A", b"COMPRESS DEFLATE")[-1].startswith(b"A BAD")  # not logged in
    session.login()
    assert session.command(b"B", b"COMPRESS GZIP")[-1].startswith(b"B BAD")
    # The client deflates what it sends right after the command, in the same packet.
    deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
    session.sock.sendall(b"C COMPRESS DEFLATE\r\n"
                         + deflater.compress(b"D NOOP\r\n") + deflater.flush(zlib.Z_SYNC_FLUSH))
    # Read from the socket itself: the OK and the deflated reply may come in one segment.
    received, ok_line = b"", b"C OK DEFLATE active\r\n"
    while not received.startswith(ok_line) or b"\n" not in _inflate(received[len(ok_line):]):
        received += session.sock.recv(65536)
    assert _inflate(received[len(ok_line):]) == b"D OK NOOP completed\r\n"
    session.close()


def _inflate(data: bytes) -> bytes:
    return zlib.decompressobj(-15).decompress(data)


def test_compress_inside_tls(make_server):
    server = make_server(imap_services=True)
    server.start()
    session = DeflatingSession(server.imaps_port, tls_context(server))
    session.login()
    session.compress()
    lines = session.command(b"S", b"SELECT INBOX")
    assert lines[-1].startswith(b"S OK [READ-WRITE]")
    lines = session.command(b"L", b'LIST "" *')
    assert any(line.endswith(b'"/" Sent\r\n') for line in lines)
    assert session.command(b"Q", b"LOGOUT")[-1] == b"Q OK LOGOUT completed\r\n"
    session.close()
