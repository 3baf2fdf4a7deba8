"""The IMAP workload of `python -m bench.load imap`: clients that stay logged in and go round
a mixed cycle of commands, each command one op.

The cycle is what a mail client does with a folder: SELECT, FETCH 1:* (FLAGS), read one
message (BODY.PEEK[]), STORE \\Seen on it, SEARCH UNSEEN, APPEND a message, STORE \\Deleted on
it and EXPUNGE it, so the mailbox keeps its size. Raw asyncio streams, one command at a time
(as clients send them); literals in replies are read by their length.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Callable

from bench import peers, remote

# An op (one command to its tagged reply) that takes longer counts as an error.
OP_TIMEOUT = 30.0
LITERAL = re.compile(rb"\{(\d+)\}\r\n$")
EXISTS = re.compile(rb"^\* (\d+) EXISTS\r\n$")


class IMAPError(Exception):
    """The server answered something other than OK."""


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.serial = 0

    async def command(self, text: bytes, literal: bytes | None = None) -> list[bytes]:
        """Send one command (with a LITERAL+ literal if given); its untagged lines."""
        self.serial += 1
        tag = b"T%d" % self.serial
        if literal is None:
            self.writer.write(tag + b" " + text + b"\r\n")
        else:
            self.writer.write(tag + b" " + text + b" {%d+}\r\n" % len(literal) + literal + b"\r\n")
        lines = []
        while True:
            line = await self._line()
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise IMAPError(text.split(b" ")[0].decode() + " " + line[len(tag) + 1:][:2].decode())
                return lines
            lines.append(line)

    async def _line(self) -> bytes:
        line = await self.reader.readline()
        if not line.endswith(b"\n"):
            raise ConnectionResetError("connection closed")
        literal = LITERAL.search(line)
        if literal:  # the literal's octets, then the rest of the response line
            line += await self.reader.readexactly(int(literal.group(1)))
            line += await self._line()
        return line

    async def close(self) -> None:
        try:
            async with asyncio.timeout(OP_TIMEOUT):
                await self.command(b"LOGOUT")
        except (OSError, IMAPError, TimeoutError, asyncio.IncompleteReadError):
            pass
        self.writer.close()


def cycle(client: Client, message: bytes, rng: random.Random) -> list[Callable]:
    """The commands of one round, as callables run one after another; SELECT tells the count."""
    state = {"exists": 1}

    async def select() -> None:
        lines = await client.command(b"SELECT INBOX")
        state["exists"] = next(int(m.group(1)) for m in map(EXISTS.match, lines) if m)

    def pick() -> int:
        return rng.randint(1, max(1, state["exists"] - 1))

    async def read_one() -> None:
        state["n"] = pick()
        await client.command(b"FETCH %d (BODY.PEEK[])" % state["n"])

    async def last_one(text: bytes) -> None:
        await client.command(text % state["exists"])

    async def append() -> None:
        await client.command(b"APPEND INBOX", message)
        state["exists"] += 1

    return [select,
            lambda: client.command(b"FETCH 1:* (FLAGS)"),
            read_one,
            lambda: client.command(b"STORE %d +FLAGS.SILENT (\\Seen)" % state["n"]),
            lambda: client.command(b"SEARCH UNSEEN"),
            append,
            lambda: last_one(b"STORE %d +FLAGS.SILENT (\\Deleted)"),
            lambda: client.command(b"EXPUNGE")]


async def imap_client(target: peers.Target, user: str, tickets, stats, message: bytes,
                      seed: int) -> None:
    """One client as its own user, logged in once, running ops while tickets last."""
    writer = None
    rng = random.Random(seed)
    try:
        async with asyncio.timeout(OP_TIMEOUT):
            reader, writer = await remote.open_stream(target, limit=2 ** 20)
            client = Client(reader, writer)
            if not (await reader.readline()).startswith(b"* OK"):
                raise IMAPError("greeting")
            if target.tls_mode == "starttls":
                await client.command(b"STARTTLS")
                await remote.upgrade(writer, target)
            await client.command(b'LOGIN %s "%s"' % (user.encode(), target.password.encode()))
        steps = cycle(client, message, rng)
        position = 0
        while tickets.take():
            start = time.perf_counter()
            try:
                async with asyncio.timeout(OP_TIMEOUT):
                    await steps[position % len(steps)]()
            except IMAPError as exc:
                stats.fail(exc)
            else:
                stats.accept(time.perf_counter() - start)
            position += 1
        await client.close()
    except (OSError, IMAPError, TimeoutError, ValueError, asyncio.IncompleteReadError,
            asyncio.LimitOverrunError) as exc:
        stats.fail(exc)
        if writer is not None:
            writer.close()
