"""Seeded generators of hostile command lines: random bytes, random commands built from a
protocol's verbs and nasty tokens, and mutations of sessions recorded from real clients.

Each session starts from a recorded one (so the fuzz reaches AUTH exchanges, DATA, the
TRANSACTION state…) with some lines mutated and random ones mixed in. Everything comes from
one `random.Random(seed)`: a failure names its seed and reproduces exactly.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

SESSIONS_DIR = Path(__file__).parent / "sessions"

# Tokens that have broken parsers before: delimiters, numbers at and past integer limits,
# encodings, empty and huge fields.
NASTY = [b"", b" ", b"  ", b"\t", b"<", b">", b"<>", b"@", b":", b"=", b",", b"\"", b"\\",
         b"(", b")", b"[", b"]", b"{", b"}", b"*", b"%", b"+", b"-", b".", b"..", b"\x00",
         b"\xff", b"\xc3\xa4", b"\xed\xa0\x80", b"0", b"-1", b"1", b"4294967295", b"4294967296",
         b"18446744073709551616", b"99999999999999999999999", b"1e9", b"NaN", b"FROM:", b"TO:",
         b"<@a,@b:c@d>", b"SIZE=", b"BODY=8BITMIME", b"SMTPUTF8", b"AUTH=<>", b"LAST",
         b"=", b"*", b"AAAA", b"%s%n", b"{5}", b"{4294967296}", b"A" * 300, b"@" * 100,
         b"<" * 50, b"\r", b"\n", b"\r\n.\r\n", b"user@[127.0.0.1]", b"user@[IPv6:::1]"]
LINE_ENDINGS = [b"\r\n"] * 12 + [b"\n", b"\r", b"", b"\r\r\n", b"\n\r"]


def recorded_sessions(name: str) -> list[list[bytes]]:
    """The sessions in sessions/<name>.txt: lists of lines, each with its line ending."""
    sessions: list[list[bytes]] = []
    for line in (SESSIONS_DIR / f"{name}.txt").read_bytes().splitlines(keepends=True):
        if line.startswith(b"#SESSION"):
            sessions.append([])
        elif not line.startswith(b"#"):
            sessions[-1].append(line)
    return [session for session in sessions if session]


class LineFuzzer:
    """Hostile lines for one protocol, from one seed."""

    def __init__(self, seed: int, verbs: list[bytes], recorded: list[list[bytes]]) -> None:
        self.rng = random.Random(seed)
        self.verbs = verbs
        self.recorded = recorded
        self.corpus = [line for session in recorded for line in session]

    def sessions(self, count: int) -> Iterator[list[bytes]]:
        """Sessions until `count` lines are given out in all."""
        while count > 0:
            session = self.session()[:count]
            count -= len(session)
            yield session

    def session(self) -> list[bytes]:
        rng = self.rng
        lines = []
        for line in rng.choice(self.recorded):
            roll = rng.random()
            if roll < 0.55:
                lines.append(line)
            elif roll < 0.85:
                lines.append(self.mutate(line))
            else:
                lines.extend(self.line() for _ in range(rng.randint(1, 3)))
        lines.extend(self.line() for _ in range(rng.randint(0, 20)))
        return lines

    def line(self) -> bytes:
        roll = self.rng.random()
        if roll < 0.25:
            return self.random_bytes()
        if roll < 0.65:
            return self.command()
        return self.mutate(self.rng.choice(self.corpus))

    def random_bytes(self) -> bytes:
        rng = self.rng
        size = rng.choice([rng.randint(0, 40), rng.randint(0, 600), rng.randint(900, 9000)])
        return rng.randbytes(size) + rng.choice(LINE_ENDINGS)

    def command(self) -> bytes:
        rng = self.rng
        verb = rng.choice(self.verbs)
        if rng.random() < 0.2:
            verb = bytes(rng.choice((c, c ^ 0x20)) if 64 < c < 123 else c for c in verb)
        args = [rng.choice(NASTY) if rng.random() < 0.7 else rng.randbytes(rng.randint(1, 12))
                for _ in range(rng.randint(0, 6))]
        glue = rng.choice([b" ", b"", b"  ", b"\t"])
        return glue.join([verb, *args]) + rng.choice(LINE_ENDINGS)

    def mutate(self, line: bytes) -> bytes:
        rng = self.rng
        data = bytearray(line.rstrip(b"\r\n"))
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(7)
            at = rng.randint(0, len(data))
            if op == 0 and data:  # flip a bit
                at = min(at, len(data) - 1)
                data[at] ^= 1 << rng.randrange(8)
            elif op == 1:  # insert noise or a nasty token
                data[at:at] = rng.choice([rng.randbytes(rng.randint(1, 8)), rng.choice(NASTY)])
            elif op == 2:  # cut a span
                del data[at:at + rng.randint(1, 16)]
            elif op == 3:  # repeat a span, up to far past any line limit
                span = bytes(data[at:at + rng.randint(1, 8)]) or b"A"
                data[at:at] = span * rng.choice([2, 10, 1000])
            elif op == 4:  # truncate
                del data[at:]
            elif op == 5:  # swap case of the whole line
                data = bytearray(bytes(data).swapcase())
            else:  # a number where one was, or grown to overflow
                data[at:at] = rng.choice([b"0", b"-1", b"4294967296", b"9" * 40])
        return bytes(data) + rng.choice(LINE_ENDINGS)
