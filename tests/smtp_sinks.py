"""SMTP servers on loopback for outbound tests: aiosmtpd sinks with a behaviour per recipient.

A recipient's local part picks what the sink does with it:
  bad*   RCPT refused, 550 5.1.1        later*  RCPT deferred, 451 4.2.0
  reject* message refused at end of DATA, 554 5.7.1
  defer*  message deferred at end of DATA, 452 4.3.1
  drop*   connection closed at end of DATA    stall*  no answer at end of DATA
  flaky*  deferred (451) the first `flaky` times the sink sees it, then accepted
  slow*   accepted after `slow` seconds in DATA (`peak_in_data`: most messages at once)
anything else is accepted. Every accepted message is kept in `received`.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from dataclasses import dataclass

from aiosmtpd.controller import Controller
from mailforge.protocols.connection.proxy import V2_LOCAL_HEADER
from tests.ports import free_port


@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes
    mail_options: list[str]


class Behaviour:
    def __init__(self, flaky: int = 1, stall: float = 30.0, slow: float = 0.2) -> None:
        self.received: list[Received] = []
        self.rcpt_seen: collections.Counter = collections.Counter()
        self.connections = 0
        self.flaky = flaky
        self.stall = stall
        self.slow = slow
        self.in_data = self.peak_in_data = 0
        self.lock = threading.Lock()

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        with self.lock:
            self.connections += 1
        return responses

    async def handle_HELO(self, server, session, envelope, hostname):
        session.host_name = hostname
        with self.lock:
            self.connections += 1
        return f"250 {server.hostname}"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@")[0].lower()
        with self.lock:
            self.rcpt_seen[address] += 1
            seen = self.rcpt_seen[address]
        if local.startswith("bad"):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if local.startswith("later") or (local.startswith("flaky") and seen <= self.flaky):
            return f"451 4.2.0 <{address}>: mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):
        locals_ = [r.split("@")[0].lower() for r in envelope.rcpt_tos]
        if any(l.startswith("stall") for l in locals_):
            await asyncio.sleep(self.stall)
        if any(l.startswith("slow") for l in locals_):
            with self.lock:
                self.in_data += 1
                self.peak_in_data = max(self.peak_in_data, self.in_data)
            await asyncio.sleep(self.slow)
            with self.lock:
                self.in_data -= 1
        if any(l.startswith("drop") for l in locals_):
            server.transport.close()
            return "421 4.3.0 gone"
        if any(l.startswith("reject") for l in locals_):
            return "554 5.7.1 Message rejected: looks like spam"
        if any(l.startswith("defer") for l in locals_):
            return "452 4.3.1 Insufficient system storage"
        with self.lock:
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                          envelope.original_content, list(envelope.mail_options)))
        return "250 2.0.0 Ok: queued"


class Sink:
    """An aiosmtpd server in its own thread; `stop()` ends it."""

    def __init__(self, behaviour: Behaviour | None = None, port: int | None = None,
                 host: str = "127.0.0.1", **server_kwargs) -> None:
        """`host`: another loopback address (127.0.0.2) lets it share a port number with a
        server on 127.0.0.1, as a second MX on the one MX port."""
        self.behaviour = behaviour or Behaviour()
        self.host = host
        self.port = port or free_port()
        self.controller = Controller(self.behaviour, hostname=host, port=self.port,
                                     server_hostname="sink.test", enable_SMTPUTF8=True,
                                     **server_kwargs)
        self.controller.start()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def received(self) -> list[Received]:
        return self.behaviour.received

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.behaviour.lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.02)
        raise AssertionError(f"sink got {len(self.received)} of {count} messages")

    def stop(self) -> None:
        self.controller.stop()


class ScriptedServer:
    """A minimal raw SMTP server for what aiosmtpd cannot do: advertise DSN (it refuses RCPT
    parameters), stay silent from the start, or answer a verb as told (`replies`: the raw
    reply, CRLFs included). Records every command line it gets. `proxy_protocol`: a PROXY v2
    LOCAL header comes first, as at an owner node's internal port."""

    def __init__(self, extensions: tuple[str, ...] = ("PIPELINING", "DSN", "SIZE 1000000"),
                 silent: bool = False, replies: dict[str, bytes] | None = None,
                 proxy_protocol: bool = False) -> None:
        self.extensions = extensions
        self.silent = silent
        self.replies = replies or {}
        self.proxy_protocol = proxy_protocol
        self.host = "127.0.0.1"
        self.lines: list[str] = []
        self.messages: list[bytes] = []
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._session, self.host, self.port))
        self._ready.set()
        self._loop.run_forever()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.silent:
            await reader.read()
            writer.close()
            return
        if self.proxy_protocol:
            await reader.readexactly(len(V2_LOCAL_HEADER))
        writer.write(b"220 scripted.test ESMTP\r\n")
        try:
            while line := (await reader.readline()).decode().rstrip("\r\n"):
                self.lines.append(line)
                verb = line.split(" ")[0].upper()
                if verb in self.replies:
                    writer.write(self.replies[verb])
                elif verb == "EHLO":
                    items = ["scripted.test", *self.extensions]
                    writer.write("".join(f"250{'-' if i < len(items) - 1 else ' '}{x}\r\n"
                                         for i, x in enumerate(items)).encode())
                elif verb == "DATA":
                    writer.write(b"354 go ahead\r\n")
                    body = await reader.readuntil(b"\r\n.\r\n")
                    self.messages.append(body)
                    writer.write(b"250 2.0.0 Ok\r\n")
                elif verb == "QUIT":
                    writer.write(b"221 2.0.0 Bye\r\n")
                    break
                else:
                    writer.write(b"250 2.0.0 Ok\r\n")
                await writer.drain()
        finally:
            writer.close()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self) -> None:
        def close() -> None:
            self._server.close()
            self._loop.stop()
        self._loop.call_soon_threadsafe(close)
        self._thread.join(10)
