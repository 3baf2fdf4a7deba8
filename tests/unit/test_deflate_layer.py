"""The COMPRESS=DEFLATE layer (RFC 4978) alone and inside the connection: raw deflate both
ways, input inflated only as fast as the session reads it, a corrupt stream ends the session."""

from __future__ import annotations

import asyncio
import os
import zlib

import pytest

from mailforge.protocols.connection.deflate import Deflate, DeflateError
from mailforge.protocols.connection.transport import HIGH_WATER, Connection


def client_deflate(data: bytes, compressor=None) -> bytes:
    compressor = compressor or zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)


def inflate_all(layer: Deflate) -> bytes:
    out = b""
    while layer.pending:
        out += layer.inflate(1000)
    return out


def test_input_inflates_byte_by_byte():
    plain = b"a1 LOGIN alice secret\r\n" * 50 + os.urandom(3000)
    layer, out = Deflate(), b""
    for byte in client_deflate(plain):
        layer.take_in(bytes([byte]))
        out += inflate_all(layer)
    assert out == plain


def test_each_output_batch_can_be_read_at_once():
    layer, reader = Deflate(), zlib.decompressobj(-15)
    for batch in (b"* OK first\r\n", b"x" * 100_000, b"a OK done\r\n"):
        assert reader.decompress(layer.deflate(batch)) == batch  # no wait for more input


def test_a_bomb_comes_out_in_bounded_pieces():
    layer = Deflate()
    layer.take_in(client_deflate(b"\0" * 10_000_000))
    piece = layer.inflate(64 * 1024)
    assert len(piece) == 64 * 1024 and layer.pending


def test_corrupt_input_is_refused():
    layer = Deflate()
    layer.take_in(b"\xff" * 20)
    with pytest.raises(DeflateError):
        layer.inflate(1000)


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.reading, self.closed = True, False

    def get_extra_info(self, name, default=None):
        return default

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


async def _nothing(conn: Connection) -> None:
    pass


def connected(test) -> None:
    async def main() -> None:
        conn, transport = Connection(_nothing), FakeTransport()
        conn.connection_made(transport)
        await test(conn, transport)
    asyncio.run(main())


def test_connection_reads_and_writes_through_the_layer():
    async def test(conn: Connection, transport: FakeTransport) -> None:
        compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        # What came right behind COMPRESS was compressed already.
        conn.unread(client_deflate(b"b NOOP\r\n", compressor))
        conn.start_compression()
        conn.data_received(client_deflate(b"c LOGOUT\r\n", compressor))
        assert await conn.readline(100) == b"b NOOP"
        assert await conn.readline(100) == b"c LOGOUT"
        conn.write(b"* BYE\r\n")
        assert zlib.decompressobj(-15).decompress(b"".join(transport.written)) == b"* BYE\r\n"
    connected(test)


def test_a_bomb_pauses_reading_until_the_session_reads_its_way_down():
    async def test(conn: Connection, transport: FakeTransport) -> None:
        conn.start_compression()
        size = 20 * HIGH_WATER
        conn.data_received(client_deflate(b"x" * size))
        assert not transport.reading
        assert len(conn._buffer) <= HIGH_WATER + 256 * 1024
        total = 0
        while total < size:
            total += len(await conn.read_chunk())
        assert total == size and transport.reading
    connected(test)


def test_a_corrupt_stream_closes_the_connection():
    async def test(conn: Connection, transport: FakeTransport) -> None:
        conn.start_compression()
        conn.data_received(b"\xff" * 20)
        assert conn.closed and transport.closed
    connected(test)
