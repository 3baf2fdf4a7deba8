"""Connection.overdue's bound on a command line: the idle timeout from the line's first octet,
however often octets arrive; an IMAP literal's time left out. Arrival times are set by hand
(`last_activity` is what data_received stamps), so nothing here sleeps."""

from __future__ import annotations

import asyncio

import pytest

from mailforge.protocols.connection.transport import Connection, LineTooLong

IDLE = 3.0


async def _nothing(conn: Connection) -> None:
    pass


def arrive(conn: Connection, data: bytes, at: float) -> None:
    conn.data_received(data)
    conn.last_activity = at


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


def run(test) -> None:
    async def main() -> None:
        await test(Connection(_nothing))
    asyncio.run(main())


def test_a_trickled_line_is_overdue_an_idle_timeout_after_its_first_octet():
    async def test(conn: Connection) -> None:
        conn.last_activity = 90.0
        reader = asyncio.ensure_future(conn.readline(512))
        await settle()
        assert not conn.overdue(92.0, IDLE, 0)  # waiting for a command is only idle
        for index, byte in enumerate(b"EHLO slow"):
            arrive(conn, bytes([byte]), 100.0 + index / 2)
            await settle()
        assert conn.last_activity == 104.0
        assert not conn.overdue(102.9, IDLE, 0)
        assert conn.overdue(103.1, IDLE, 0)  # active a moment ago, but the line began at 100
        arrive(conn, b".example\r\n", 104.5)
        await settle()
        assert await reader == b"EHLO slow.example"
        assert not conn.overdue(105.9, IDLE, 0)  # the next line's clock has not started
    run(test)


def test_each_line_has_a_clock_of_its_own():
    async def test(conn: Connection) -> None:
        for start in (100.0, 102.5, 105.0):  # the session outlasts the timeout, no line does
            reader = asyncio.ensure_future(conn.readline(512))
            arrive(conn, b"NO", start)
            await settle()
            assert not conn.overdue(start + 2.9, IDLE, 0)
            arrive(conn, b"OP\r\n", start + 2.4)
            assert await reader == b"NOOP"
        # A partial line left behind a pipelined one starts its clock when it is waited for.
        arrive(conn, b"NOOP\r\nNO", 110.0)
        assert await conn.readline(512) == b"NOOP"
        reader = asyncio.ensure_future(conn.readline(512))
        await settle()
        arrive(conn, b"O", 112.0)
        await settle()
        assert not conn.overdue(112.9, IDLE, 0)
        assert conn.overdue(113.1, IDLE, 0)
        reader.cancel()
    run(test)


def test_a_line_too_long_is_held_to_the_bound_while_it_is_discarded():
    async def test(conn: Connection) -> None:
        reader = asyncio.ensure_future(conn.readline(16))
        arrive(conn, b"x" * 20, 100.0)
        await settle()
        arrive(conn, b"x", 102.5)
        await settle()
        assert conn.overdue(103.1, IDLE, 0)
        arrive(conn, b"x\r\n", 103.0)
        with pytest.raises(LineTooLong):
            await reader
        assert not conn.overdue(105.9, IDLE, 0)
    run(test)


def test_a_cancelled_readline_leaves_no_clock_running():
    async def test(conn: Connection) -> None:
        reader = asyncio.ensure_future(conn.readline(512))  # IMAP IDLE's wait for DONE
        arrive(conn, b"DO", 100.0)
        await settle()
        reader.cancel()
        await settle()
        conn.last_activity = 103.0  # the IDLE loop stamps its polls
        assert not conn.overdue(103.5, IDLE, 0)
    run(test)


def test_a_literal_stops_the_line_clock_and_the_lines_around_it_share_one_bound():
    async def test(conn: Connection) -> None:
        conn.last_activity = 100.0
        conn.line_pending()  # "a APPEND INBOX" came at 100
        conn.last_activity = 101.0
        conn.line_paused()  # " {20000}\r\n" at 101: a second spent
        conn.last_activity = 130.0  # the literal took 29 s (the transfer rate's business)
        assert not conn.overdue(130.5, IDLE, 0)
        conn.line_pending()  # the literal is in, the command goes on
        assert not conn.overdue(131.9, IDLE, 0)
        assert conn.overdue(132.1, IDLE, 0)  # 1 s before the literal, 2.1 s after it
        conn.line_done()
        assert not conn.overdue(132.1, IDLE, 0)
        conn.line_paused()  # a literal before any line part is pending: nothing spent
        conn.last_activity = 140.0
        conn.line_pending()
        assert not conn.overdue(142.9, IDLE, 0)
    run(test)
