"""A listener behind a load balancer: accept, read the PROXY header, then serve as usual.

The header must be read before the protocol's greeting and, on implicit-TLS ports, before the
TLS handshake. asyncio's `create_server(ssl=...)` starts the handshake itself, and a Protocol
cannot give back bytes it read past the header (a ClientHello sent in the same segment), so
this listener accepts sockets itself, reads exactly the header's bytes (peeking first, so
nothing after it is taken), and only then hands the socket to the loop with
`connect_accepted_socket`, TLS and all. Anything else on the connection (caps, idle timeouts)
is the shared transport's, with the header's client as `Connection.peer_ip`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable

from . import proxy
from ...policy.networks import Network, listed
from .transport import TLS_HANDSHAKE_TIMEOUT

log = logging.getLogger("mailforge.proxy")

# A load balancer sends the header at once; a peer that does not is not one.
HEADER_TIMEOUT = 10.0
# Back off when accept fails for want of file descriptors instead of spinning on it.
ACCEPT_RETRY = 0.1

# Called with the header read: the protocol that serves the connection.
ProtocolFactory = Callable[[proxy.ProxyHeader], asyncio.BaseProtocol]


class ProxiedServer:
    """Serves one listening socket; `close()` stops accepting, as asyncio.Server's does."""

    def __init__(self, sock: socket.socket, factory: ProtocolFactory,
                 trusted: tuple[Network, ...], tls_context: ssl.SSLContext | None) -> None:
        self._loop = asyncio.get_running_loop()
        self._sock = sock
        self._factory = factory
        self._trusted = trusted
        self._tls = tls_context
        self._pending: set[asyncio.Task[None]] = set()
        sock.setblocking(False)
        self._accepting = self._loop.create_task(self._accept_loop())

    def close(self) -> None:
        self._accepting.cancel()
        for task in list(self._pending):
            task.cancel()

    async def _accept_loop(self) -> None:
        while True:
            try:
                client, address = await self._loop.sock_accept(self._sock)
            except OSError as exc:
                log.warning("accept failed: %s", exc)
                await asyncio.sleep(ACCEPT_RETRY)
                continue
            task = self._loop.create_task(self._admit(client, address[0]))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _admit(self, client: socket.socket, peer_ip: str) -> None:
        """Untrusted peer, bad or late header: the connection is closed without a word."""
        try:
            if not listed(peer_ip, self._trusted):
                # info, not warning: anyone who can reach the port can make these lines.
                log.info("PROXY header refused: %s is not in [server] proxy_trusted", peer_ip)
                client.close()
                return
            client.setblocking(False)
            header = await asyncio.wait_for(read_header(self._loop, client), HEADER_TIMEOUT)
        except (proxy.ProxyError, OSError, TimeoutError, EOFError) as exc:
            log.warning("PROXY header from %s refused: %s", peer_ip, exc or type(exc).__name__)
            client.close()
            return
        except asyncio.CancelledError:
            client.close()
            raise
        # From here the loop's transport owns the socket (and closes it on a failed handshake).
        try:
            await self._loop.connect_accepted_socket(
                lambda: self._factory(header), client, ssl=self._tls,
                ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT if self._tls else None)
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            log.info("TLS handshake with %s (via %s) failed: %s",
                     header.source[0] if header.source else peer_ip, peer_ip, exc)


async def read_header(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> proxy.ProxyHeader:
    """Consume the PROXY header and not one byte more: what follows is the client's."""
    received = b""
    while True:
        await _readable(loop, sock)
        try:
            peeked = sock.recv(proxy.MAX_HEADER - len(received), socket.MSG_PEEK)
        except BlockingIOError:
            continue
        if not peeked:
            raise EOFError("closed before the PROXY header ended")
        result = proxy.parse(received + peeked)
        # Unfinished: every byte so far is header (v1 ends at CRLF, v2 has its length).
        take = len(peeked) if result is None else result[1] - len(received)
        received += sock.recv(take)
        if result is not None:
            return result[0]


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    ready = loop.create_future()
    loop.add_reader(sock.fileno(), lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())
