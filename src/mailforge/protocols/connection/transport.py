"""Shared connection IO for every protocol: buffered line and chunk reads with limits.

An asyncio Protocol (cheaper than streams: no StreamReader/StreamWriter pair per client) that
the protocol drivers read with `readline()` / `read_chunk()` / `read_up_to()`. Idle timeouts
are enforced by the worker's sweeper looking at `last_activity` (and at when the command line
being read began), not by a timer per read, so 10,000 idle clients cost one periodic task.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ssl
import struct
import termios
import time
import typing
from collections.abc import Awaitable, Callable, Iterator

from .deflate import Deflate, DeflateError

# Stop reading from a client whose unread input grows past this; resume below it.
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
# A chunk handed to DATA/BDAT readers: large enough to amortise per-call costs.
MAX_CHUNK = 256 * 1024
# Replies to a pipelined group are held for one write up to this many octets; past it they go
# out at once, so a long pipeline of large replies is not held whole in memory.
MAX_QUEUED_REPLIES = 64 * 1024
# A client that does not finish its TLS handshake in this long is dropped.
TLS_HANDSHAKE_TIMEOUT = 30.0
# A body (DATA, a BDAT chunk, an IMAP literal) must arrive at [limits] min_transfer_rate
# octets per second on average once this grace for a slow start is over, or the session ends
# as if idle: each trickled byte resets the idle timer, so without a minimum a client holds its
# connection (and a slot of its per-IP cap) as long as it likes. Postfix: smtpd_min_data_rate.
TRANSFER_GRACE = 30.0


class ConnectionClosed(Exception):
    """The client went away (or we closed it) while we waited for input."""


class LineTooLong(Exception):
    """A line exceeded its limit; the line was discarded up to its end."""


class Connection(asyncio.Protocol):
    __slots__ = ("_loop", "_handler", "_buffer", "_waiter", "_paused", "transport",
                 "peer_ip", "peer_port", "socket_peer_ip", "peer_speaks_for_itself", "client_counted",
                 "local_port", "closed", "last_activity", "idle_reply",
                 "interruptible", "tls", "task", "_replies", "_queued", "_output_mark",
                 "_transfer_start", "_transfer_bytes",
                 "_line_start", "_line_spent", "_writable", "_source", "_deflate",
                 "bytes_in", "bytes_out", "__weakref__")

    def __init__(self, handler: Callable[[Connection], Awaitable[None]],
                 source: tuple[str, int] | None = None,
                 peer_speaks_for_itself: bool = False, client_counted: bool = False) -> None:
        self._loop = asyncio.get_running_loop()
        self._handler = handler
        self._buffer = bytearray()
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self.transport: asyncio.Transport | None = None
        self.peer_ip = ""
        self.peer_port = 0
        # The connection's own peer: the load balancer or node that sent a PROXY header, else
        # the client (peer_ip) itself.
        self.socket_peer_ip = ""
        # A proxy_trusted peer sent a PROXY header naming no client (v2 LOCAL, v1 UNKNOWN): it
        # speaks for itself. A cluster node relaying mail it accepted (and checked already) to
        # the mailbox's owner does, as does a balancer's health check.
        self.peer_speaks_for_itself = peer_speaks_for_itself
        # A proxy_trusted peer's PROXY header said it counted the client against its per-IP
        # cap already (proxy.TLV_CLIENT_COUNTED): a cluster node proxying a session here.
        self.client_counted = client_counted
        self.local_port = 0
        self.closed = False
        self.last_activity = time.monotonic()
        # What the idle sweeper writes before closing: set by the protocol driver.
        self.idle_reply = b""
        # True while the driver waits for a command outside any transaction: a stopping worker
        # may then close the session at once instead of waiting out the grace period.
        self.interruptible = False
        self.tls = False  # implicit TLS, or STARTTLS done
        # Replies to pipelined commands, sent in one write (RFC 2920, RFC 2449 PIPELINING).
        self._replies: list[bytes] = []
        self._queued = 0  # their octets
        # (octets written, octets the client has yet to take) when the sweeper last found the
        # connection silent with output waiting; None: not yet.
        self._output_mark: tuple[int, int] | None = None
        self.task: asyncio.Task[None] | None = None
        # While a body is read: when it started, and how many octets came since.
        self._transfer_start: float | None = None
        self._transfer_bytes = 0
        # While the driver waits for the rest of a command line: when its clock started (its
        # first octet's arrival, less the time spent on the command's lines before a literal).
        self._line_start: float | None = None
        self._line_spent = 0.0
        # Cleared while the transport's write buffer is over its high-water mark (drain).
        self._writable = asyncio.Event()
        self._writable.set()
        # The client named by a PROXY header (protocols/proxied.py): policy sees it, not the
        # load balancer's address.
        self._source = source
        # Set once IMAP COMPRESS is on: both directions go through it (inside TLS if any).
        self._deflate: Deflate | None = None
        # Octets the session read and wrote, as compressed (COMPRESS) but not as encrypted
        # (TLS): what its commands and replies cost on the wire, for its last log line.
        self.bytes_in = 0
        self.bytes_out = 0

    # asyncio.Protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = typing.cast(asyncio.Transport, transport)
        socket_peer = transport.get_extra_info("peername") or ("", 0)
        peer = self._source or socket_peer
        sock = transport.get_extra_info("sockname") or ("", 0)
        self.peer_ip, self.peer_port = _unmap(peer[0]), peer[1]
        self.socket_peer_ip = _unmap(socket_peer[0])
        self.local_port = sock[1] if len(sock) > 1 else 0
        self.tls = transport.get_extra_info("ssl_object") is not None
        self.task = self._loop.create_task(self._handler(self))

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        self.bytes_in += len(data)
        if self._deflate is None:
            self._take(data)
        else:
            self._deflate.take_in(data)
            self._inflate_input()
        if len(self._buffer) > HIGH_WATER and not self._paused and self.transport:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def _take(self, data: bytes) -> None:
        self._buffer += data
        self._transfer_bytes += len(data)

    def _inflate_input(self) -> None:
        """Compressed input into the buffer, up to the high-water mark: the rest waits (and
        reading stays paused) until the session has read its way down."""
        assert self._deflate is not None
        try:
            while self._deflate.pending and len(self._buffer) <= HIGH_WATER:
                self._take(self._deflate.inflate(MAX_CHUNK))
        except DeflateError:
            self.close()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wake()
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    async def drain(self) -> None:
        """Wait while the client is slower than what we send it (the transport's high-water
        mark), so a big reply streams instead of piling up in memory."""
        await self._writable.wait()
        if self.closed:
            raise ConnectionClosed()

    # timeouts, checked by the worker's sweeper

    @contextlib.contextmanager
    def transfer(self) -> Iterator[None]:
        """Around the reading of a body: it is held to the minimum transfer rate."""
        self._transfer_start, self._transfer_bytes = time.monotonic(), len(self._buffer)
        try:
            yield
        finally:
            self._transfer_start = None

    # A command line must be complete within the idle timeout from its first octet, or the
    # session ends as if idle: the same trickle would otherwise hold a line open for ever
    # (Postfix's smtpd_timeout is per command, too). readline() keeps this clock itself; the
    # IMAP driver, which parses commands from chunks, keeps it with these three. An IMAP
    # literal's time does not count: its octets are held to the transfer rate instead, so a
    # large APPEND at a fair rate is not cut, while the lines around it share one bound.

    def line_pending(self) -> None:
        """Part of a command is in and the driver waits for the rest of its line: the line's
        clock runs, from the arrival of what is in (or goes on after a literal)."""
        if self._line_start is None:
            self._line_start = self.last_activity - self._line_spent

    def line_paused(self) -> None:
        """A literal's octets come next: the line's clock stops, keeping the time spent."""
        if self._line_start is not None:
            self._line_spent = self.last_activity - self._line_start
            self._line_start = None

    def line_done(self) -> None:
        """The command is read (or its reading ended): the next line's clock starts afresh."""
        self._line_start, self._line_spent = None, 0.0

    def overdue(self, now: float, idle_timeout: float, min_rate: int) -> bool:
        """Silent for `idle_timeout`; or `idle_timeout` past the first octet of a command line
        still incomplete; or in a body arriving slower than `min_rate` octets/s (0: no
        minimum) once its grace (TRANSFER_GRACE, at most the idle timeout) is over. Silent
        but still taking our output (a long RETR or FETCH read slowly) is at work, not idle."""
        if now - self.last_activity > idle_timeout:
            if not self._taking_output():
                return True
            self.last_activity = now
        if self._line_start is not None and now - self._line_start > idle_timeout:
            return True
        if self._transfer_start is None or min_rate <= 0:
            return False
        allowed = min(TRANSFER_GRACE, idle_timeout) + self._transfer_bytes / min_rate
        return now - self._transfer_start > allowed

    def _taking_output(self) -> bool:
        """Whether the client took some of our output since the sweeper last asked: what it
        has not taken (in our buffer and the kernel's send queue) went down, or we wrote more
        (it made room). The kernel's queue is where a slow reader's progress shows: with
        megabytes of send buffer the transport can wait seconds for room. The first time
        output is found waiting counts as progress: a client that stopped reading is cut one
        idle timeout later."""
        if self.transport is None or self.transport.is_closing():
            return False
        try:
            fd = self.transport.get_extra_info("socket").fileno()
            queued = struct.unpack("i", fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0" * 4))[0]
        except (AttributeError, OSError, ValueError):
            return False
        unsent = self.transport.get_write_buffer_size() + queued
        mark, self._output_mark = self._output_mark, (self.bytes_out, unsent)
        if not unsent:
            return False
        return mark is None or self.bytes_out > mark[0] or unsent < mark[1]

    # reading

    def has_buffered_line(self) -> bool:
        """Whether a complete line is already waiting (pipelined commands)."""
        return b"\n" in self._buffer

    async def readline(self, limit: int) -> bytes:
        """The next line without its CRLF (or bare LF); LineTooLong past `limit` octets.
        A line begun is held to the idle timeout as a whole (`overdue`)."""
        scanned = 0
        try:
            while True:
                end = self._buffer.find(b"\n", scanned)
                if end >= 0:
                    if end + 1 > limit:
                        self._consume(end + 1)
                        raise LineTooLong()
                    line = bytes(self._buffer[: end + 1])
                    self._consume(end + 1)
                    return line[:-2] if line.endswith(b"\r\n") else line[:-1]
                scanned = len(self._buffer)
                if scanned:
                    self.line_pending()
                if scanned > limit:
                    await self._discard_line()
                    raise LineTooLong()
                await self._wait()
        finally:
            self.line_done()

    async def _discard_line(self) -> None:
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                self._consume(end + 1)
                return
            self._consume(len(self._buffer))
            await self._wait()

    async def read_chunk(self) -> bytes:
        """Whatever input is buffered (at most MAX_CHUNK), waiting for some if there is none."""
        while not self._buffer:
            await self._wait()
        size = min(len(self._buffer), MAX_CHUNK)
        chunk = bytes(self._buffer[:size])
        self._consume(size)
        return chunk

    async def read_up_to(self, size: int) -> bytes:
        """At most `size` bytes of input (at least one), for length-framed data such as BDAT."""
        while not self._buffer:
            await self._wait()
        size = min(len(self._buffer), size, MAX_CHUNK)
        chunk = bytes(self._buffer[:size])
        self._consume(size)
        return chunk

    def unread(self, data: bytes) -> None:
        """Put back input read past the end of a message (pipelined commands after it)."""
        if data:
            self._buffer[:0] = data

    def discard_input(self) -> None:
        """Drop unread input: nothing sent before a TLS handshake may be acted on after it."""
        self._consume(len(self._buffer))

    async def start_tls(self, context: ssl.SSLContext) -> None:
        """STARTTLS: whatever the client sent before the handshake is thrown away unread, so
        commands pipelined behind STARTTLS cannot ride into the encrypted session
        (CVE-2011-0411)."""
        assert self.transport is not None
        self.discard_input()
        try:
            self.transport = await self._loop.start_tls(
                self.transport, self, context, server_side=True,
                ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)
        except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError) as exc:
            self.close()
            raise ConnectionClosed() from exc
        self.tls = True
        self.last_activity = time.monotonic()

    def _consume(self, size: int) -> None:
        del self._buffer[:size]
        if len(self._buffer) >= LOW_WATER:
            return
        if self._deflate is not None:
            self._inflate_input()
        if self._paused and len(self._buffer) < HIGH_WATER and self.transport:
            self._paused = False
            self.transport.resume_reading()

    async def _wait(self) -> None:
        if self.closed:
            raise ConnectionClosed()
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self.closed and not self._buffer:
            raise ConnectionClosed()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def start_compression(self) -> None:
        """IMAP COMPRESS DEFLATE, once its OK is written: from here on both directions are
        deflated; what the client sent after the command is compressed already."""
        self._deflate = Deflate()
        early, self._buffer = bytes(self._buffer), bytearray()
        self._deflate.take_in(early)
        self._inflate_input()

    # writing

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            if self._deflate is not None:
                data = self._deflate.deflate(data)
            self.bytes_out += len(data)
            self.transport.write(data)

    def queue_reply(self, data: bytes) -> None:
        """Hold a reply until `flush`: one write for a whole pipelined group (or for as much
        of it as MAX_QUEUED_REPLIES allows)."""
        self._replies.append(data)
        self._queued += len(data)
        if self._queued > MAX_QUEUED_REPLIES:
            self.flush()

    def flush(self) -> None:
        replies, self._queued = self._replies, 0
        if len(replies) == 1:
            self.write(replies[0])  # no join: that would copy a large FETCH reply once more
            replies.clear()
        elif replies:
            self.write(b"".join(replies))
            replies.clear()

    def close(self) -> None:
        """Close after the buffered replies are sent."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        self._wake()

    def expire(self, reply: bytes) -> None:
        """Say why in the protocol's words (idle, shutting down), then close. A client that
        stopped reading still has output waiting: a close would wait for ever to send it (its
        session, waiting in `drain`, keeping what it holds: a POP3 maildrop lock), and the
        words would land inside an unfinished reply, so its connection is cut at once."""
        if self.transport is not None and self.transport.get_write_buffer_size():
            self.closed = True
            self.transport.abort()  # connection_lost follows: `drain` raises ConnectionClosed
            self._wake()
            return
        self.write(reply)
        self.close()


def _unmap(ip: str) -> str:
    """'::ffff:1.2.3.4' → '1.2.3.4', so IPv4 clients on a dual-stack socket count as themselves."""
    return ip[7:] if ip.startswith("::ffff:") and "." in ip else ip
