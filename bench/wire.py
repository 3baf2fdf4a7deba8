"""Reading replies on the wire, shared by the load clients and their TLS and AUTH steps."""

from __future__ import annotations

import asyncio


class ProtocolError(Exception):
    """The server answered something other than what the transaction or session needs."""


async def read_reply(reader: asyncio.StreamReader) -> tuple[int, list[bytes]]:
    lines = []
    while True:
        line = await reader.readline()
        if not line.endswith(b"\n"):
            raise ConnectionResetError("connection closed")
        lines.append(line)
        if line[3:4] != b"-":
            try:
                return int(line[:3]), lines
            except ValueError:
                raise ProtocolError("garbled reply") from None


async def expect(reader: asyncio.StreamReader, code: int, step: str) -> list[bytes]:
    got, lines = await read_reply(reader)
    if got != code:
        raise ProtocolError(f"{step} {got}")
    return lines


async def pop3_ok(reader: asyncio.StreamReader, step: str) -> bytes:
    line = await reader.readline()
    if not line.endswith(b"\n"):
        raise ConnectionResetError("connection closed")
    if not line.startswith(b"+OK"):
        raise ProtocolError(f"{step} {line[:4].decode(errors='replace').strip()}")
    return line
