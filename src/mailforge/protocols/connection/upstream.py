"""A session's connection onward to the node that owns its mailbox (mailbox routing), and the
splice that carries the session there once the owner has logged the user in.

The connection opens with a PROXY v2 header naming the real client, so the owner's policies,
limits and logs see the client and not this node; the owner's port takes it from its
[server] proxy_trusted peers. The header carries our TLV_CLIENT_COUNTED mark: this node
counted the client against its max_connections_per_ip, so the owner does not count it
again. What is said before the splice (the owner's greeting, STARTTLS where the cluster's
link is TLS, the login) is each protocol's (protocols/ownerlogin.py); after it, bytes go
both ways unread until either side closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time

from . import proxy
from .transport import MAX_CHUNK, Connection, ConnectionClosed

# The owner must answer within these, or the client gets a temporary error: a node that is
# down or hung must not hold the client's login for long.
CONNECT_TIMEOUT = 5.0
REPLY_TIMEOUT = 15.0
# The longest line of the owner's greeting and login replies (IMAP's CAPABILITY is long).
MAX_LINE = 16 * 1024


class OwnerUnavailable(Exception):
    """The owner could not be reached, or did not log the user in: a temporary failure."""


class Upstream:
    """The connection to the owner: lines before the splice, raw bytes in it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 host: str, tls: ssl.SSLContext | None) -> None:
        """`tls`: the context the owner at `host` is verified with ([cluster] tls); None for a
        plain link."""
        self.reader, self.writer = reader, writer
        self._host, self._tls = host, tls

    @property
    def needs_tls(self) -> bool:
        """Whether the login must wait for STARTTLS: the link is TLS and not yet in it."""
        return self._tls is not None and self.writer.get_extra_info("ssl_object") is None

    async def start_tls(self) -> None:
        """The handshake, once the owner agreed to STARTTLS: its certificate must be one of
        the cluster's CAs for its host (OwnerUnavailable otherwise, nothing sent but that)."""
        assert self._tls is not None
        if sent_past_starttls(self.reader):  # a man in the middle's answers to the login
            raise OwnerUnavailable("sent more after agreeing to STARTTLS")
        try:
            # The owner's answers' bound, not a client's handshake bound: a hung owner must
            # not hold the client's login for long.
            await self.writer.start_tls(self._tls, server_hostname=self._host,
                                        ssl_handshake_timeout=REPLY_TIMEOUT)
        except OSError as exc:  # ssl.SSLError, a timed-out or closed handshake
            raise OwnerUnavailable(f"TLS handshake failed: {exc or type(exc).__name__}") from None

    async def readline(self) -> bytes:
        """One line of the owner's, CRLF included."""
        try:
            line = await asyncio.wait_for(self.reader.readline(), REPLY_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as exc:  # ValueError: over MAX_LINE
            raise OwnerUnavailable(f"no answer: {exc or type(exc).__name__}") from None
        if not line.endswith(b"\n"):
            raise OwnerUnavailable("closed the connection")
        return line

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    def close(self) -> None:
        self.writer.close()


def sent_past_starttls(reader: asyncio.StreamReader) -> bool:
    """Whether a server sent bytes behind its consent to STARTTLS: they came in the clear,
    yet would be read as if from inside TLS (CVE-2011-0411's kind, from the client's side), so
    a client that requires TLS goes no further. StreamReader has no public way to show what it
    holds."""
    return bool(reader._buffer)


async def connect(host: str, port: int, client: tuple[str, int],
                  tls: ssl.SSLContext | None) -> Upstream:
    """To the owner's `host`:`port`, announcing `client` in a PROXY v2 header; `tls`: the
    context that verifies the owner once the login's protocol asked for STARTTLS."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=MAX_LINE), CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else exc.strerror
        raise OwnerUnavailable(f"cannot connect to {host}:{port}: {reason}") from None
    owner_address = writer.get_extra_info("peername")[:2]
    writer.write(proxy.v2_header(client, owner_address, client_counted=True))
    return Upstream(reader, writer, host, tls)


async def splice(conn: Connection, upstream: Upstream) -> None:
    """Carry the session both ways until the client or the owner closes; then close both."""
    directions = {asyncio.ensure_future(_client_to_owner(conn, upstream.writer)),
                  asyncio.ensure_future(_owner_to_client(upstream.reader, conn))}
    try:
        await asyncio.wait(directions, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for direction in directions:
            direction.cancel()
        await asyncio.gather(*directions, return_exceptions=True)
        upstream.close()


async def _client_to_owner(conn: Connection, writer: asyncio.StreamWriter) -> None:
    # The client's input left unread by the login (pipelined commands) comes first.
    with contextlib.suppress(ConnectionClosed, OSError):
        while True:
            writer.write(await conn.read_chunk())
            await writer.drain()


async def _owner_to_client(reader: asyncio.StreamReader, conn: Connection) -> None:
    with contextlib.suppress(ConnectionClosed, OSError):
        while data := await reader.read(MAX_CHUNK):
            conn.write(data)
            # The owner speaking (IDLE's pushes) keeps the session alive as the client does.
            conn.last_activity = time.monotonic()
            await conn.drain()
