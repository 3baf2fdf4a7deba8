"""The link to a mailbox's owner: a hung owner ends as OwnerUnavailable within the owner's
reply bound, in the TLS handshake too (protocols/connection/upstream.py)."""

import asyncio
import ssl
import time

import pytest

from mailforge.protocols.connection import upstream
from mailforge.protocols.connection.upstream import OwnerUnavailable
from mailforge.protocols.ownerlogin import imap_login


async def agrees_to_starttls_then_hangs(reader: asyncio.StreamReader,
                                        writer: asyncio.StreamWriter) -> None:
    fixed = await reader.readexactly(16)  # the PROXY v2 header: its length ends this part
    await reader.readexactly(int.from_bytes(fixed[14:16], "big"))
    writer.write(b"* OK owner ready\r\n")
    await reader.readline()
    writer.write(b"P1 OK Begin TLS negotiation now\r\n")
    await writer.drain()
    await asyncio.sleep(60)  # never answers the ClientHello


def test_a_hung_handshake_ends_within_the_owners_reply_bound(monkeypatch):
    monkeypatch.setattr(upstream, "REPLY_TIMEOUT", 0.5)

    async def run() -> float:
        server = await asyncio.start_server(agrees_to_starttls_then_hangs, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        context = ssl.create_default_context()
        link = await upstream.connect("127.0.0.1", port, ("192.0.2.7", 4321), context)
        started = time.monotonic()
        try:
            with pytest.raises(OwnerUnavailable, match="TLS handshake failed"):
                await imap_login(link, b"user\0node\0secret")
        finally:
            link.close()
            server.close()
        return time.monotonic() - started

    assert asyncio.run(run()) < 10  # not the 30 s a client's handshake may take
