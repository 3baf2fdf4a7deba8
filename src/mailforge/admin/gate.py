"""Each console connection is counted in the rate-keeper before aiohttp reads a byte of it,
as every service's are: over [admin] max_connections or max_connections_per_ip, or from an
address blocked for failed logins, it gets a short HTTP refusal and is closed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from ..ratekeeper.client import RateKeeperClient
from ..ratekeeper.counters import OpenVerdict

log = logging.getLogger("mailforge.admin")

# The loop keeps only weak references to tasks: these are held until done.
_running: set[asyncio.Future] = set()


def _background(coroutine: Coroutine[Any, Any, None]) -> None:
    task = asyncio.ensure_future(coroutine)
    _running.add(task)
    task.add_done_callback(_running.discard)

SERVICE = "admin"
REFUSALS = {
    OpenVerdict.BLOCKED: (403, "Forbidden", "too many failed logins from your address; try later"),
    OpenVerdict.SERVICE_FULL: (503, "Service Unavailable", "too many connections; try again soon"),
    OpenVerdict.IP_FULL: (503, "Service Unavailable", "too many connections from your address"),
}


def refusal(verdict: OpenVerdict) -> bytes:
    code, reason, text = REFUSALS.get(verdict, REFUSALS[OpenVerdict.SERVICE_FULL])
    return (f"HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nConnection: close\r\n"
            f"Content-Length: {len(text) + 1}\r\n\r\n{text}\n").encode()


class Gate(asyncio.Protocol):
    """Stands between the transport and aiohttp's protocol (`handler_factory`): reading is
    paused until the rate-keeper admits the connection, then every event is passed on."""

    def __init__(self, handler_factory: Callable[[], asyncio.Protocol], ratekeeper: RateKeeperClient,
                 max_total: int, max_per_ip: int, open_connections: set[Gate]) -> None:
        self._factory = handler_factory
        self._ratekeeper = ratekeeper
        self._caps = (max_total, max_per_ip)
        self._open = open_connections
        self._handler: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._counted = False
        # What arrived before the rate-keeper's answer: on a plain connection (no TLS layer
        # to hold it back) the first request may come in the read that pause_reading is too
        # late for. It goes to aiohttp once the connection is admitted, never dropped.
        self._early: list[bytes] = []
        self._early_eof = False
        self.ip = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.ip = peer[0] if peer else ""
        self._transport.pause_reading()
        self._open.add(self)
        _background(self._admit())

    async def _admit(self) -> None:
        verdict = await self._ratekeeper.open_session(SERVICE, self.ip, *self._caps)
        self._counted = verdict is OpenVerdict.OK  # a refusal is not counted as open
        if self._transport.is_closing():
            self._release()
            return
        if verdict is not OpenVerdict.OK:
            log.warning("admin: refused %s: %s", self.ip, verdict)
            self._transport.write(refusal(verdict))
            self._transport.close()
            return
        self._handler = self._factory()
        self._handler.connection_made(self._transport)
        for data in self._early:
            self._handler.data_received(data)
        self._early.clear()
        if self._early_eof and not self._handler.eof_received():
            self._transport.close()
            return
        self._transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self._handler is not None:
            self._handler.data_received(data)
        else:
            self._early.append(data)

    def eof_received(self) -> bool | None:
        if self._handler is not None:
            return self._handler.eof_received()
        self._early_eof = True
        return True  # kept open: the request read before the EOF is still to be answered

    def pause_writing(self) -> None:
        if self._handler is not None:
            self._handler.pause_writing()

    def resume_writing(self) -> None:
        if self._handler is not None:
            self._handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._open.discard(self)
        if self._handler is not None:
            self._handler.connection_lost(exc)
        self._release()

    def _release(self) -> None:
        if self._counted:
            self._counted = False
            _background(self._ratekeeper.close_session(SERVICE, self.ip))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
