"""Drives one HTTP session (the autoconfig service): a request read with the shared transport's
bounds and timeouts, one response, then the close.

Running on the same transport and session loop as the mail protocols gives the web listener
what they have without a second server: the service-wide and per-address caps (the
rate-keeper), the abuse blocks, the idle timeout and the minimum transfer rate (slowloris),
graceful stop and reload, PROXY headers and the session record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .connection.driver import Refusals, SessionContext, SessionDriver, Settings
from .connection.transport import Connection, LineTooLong
from .http import HTTPMachine, Request, refusal_head
from .session import Reply


@dataclass(kw_only=True)
class HTTPContext(SessionContext):
    settings: Settings
    answer: Callable[[Request], Reply]  # a well-formed request → its response


REFUSALS = Refusals(blocked=refusal_head(403), ip_full=refusal_head(429),
                    full=refusal_head(503), shutdown=refusal_head(503))


class HTTPDriver(SessionDriver):
    service = "autoconfig"
    refusals = REFUSALS

    ctx: HTTPContext
    machine: HTTPMachine

    def __init__(self, conn: Connection, ctx: HTTPContext) -> None:
        super().__init__(conn, ctx)
        self.machine = HTTPMachine(ctx.answer)

    async def next_reply(self) -> Reply:
        machine, conn = self.machine, self.conn
        step: Reply | int | None = None
        try:
            while step is None:
                # Before a request line a stopping worker may close the session at once.
                conn.interruptible = machine.request is None
                try:
                    line = await conn.readline(machine.line_limit)
                finally:
                    conn.interruptible = False
                step = machine.line(line)
        except LineTooLong:
            return machine.line_too_long()
        if isinstance(step, Reply):
            return step
        return machine.respond(await self._read_body(step))

    async def _read_body(self, length: int) -> bytes:
        body = bytearray()
        with self.conn.transfer():
            while len(body) < length:
                body += await self.conn.read_up_to(length - len(body))
        return bytes(body)

    def error_code(self, result: Reply) -> str | None:
        status = result.text[9:12]  # "HTTP/1.1 404 ..."
        return status.decode() if status[:1] in (b"4", b"5") else None
