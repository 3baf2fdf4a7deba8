"""A client back on a big folder after another session changed a few messages: QRESYNC's
resync against a plain one, mailforge and Dovecot side by side in one run.

    python -m bench.qresync [--messages 10000] [--flags 8] [--expunges 2] [--size 2048]
        [--repeat 5] [--workers 2] [--peers mailforge,dovecot] [--anchors DIR]

Each peer starts with one user whose INBOX holds `--messages` messages (written into its
Maildir before it starts). A client syncs the folder in full (SELECT, UID FETCH 1:* (FLAGS)),
keeps its UIDVALIDITY, HIGHESTMODSEQ and UIDs, and logs out. Another session flags `--flags`
messages and expunges `--expunges`, spread over the folder. Then the client comes back,
`--repeat` times each way, each time on a new connection (its login not counted):

- qresync: ENABLE QRESYNC, then EXAMINE INBOX (QRESYNC (uidvalidity modseq known-uids));
- plain: EXAMINE INBOX, then UID FETCH 1:* (FLAGS): what a client without CONDSTORE must
  fetch to learn both the flags and the expunges.

EXAMINE, so that coming back changes nothing and every repeat sees the same folder. The table
gives the median time from the first command sent to the last tagged OK, the octets the
client got (in) and sent (out) from then on, and what the answer told; each answer is checked against the changes made (QRESYNC: exactly
the expunged UIDs VANISHED, exactly the flagged ones FETCHed).
"""

from __future__ import annotations

import argparse
import re
import socket
import statistics
import sys
import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table

from bench import peers
from bench.load import mailbox
from mailforge.speedups import parse_sequence_set

# One command to its tagged reply; longer means the peer is stuck.
OP_TIMEOUT = 120.0
UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
HIGHESTMODSEQ = re.compile(rb"\[HIGHESTMODSEQ (\d+)\]")
FETCH_UID = re.compile(rb"^\* \d+ FETCH \(.*\bUID (\d+)")
VANISHED = re.compile(rb"^\* VANISHED \(EARLIER\) ([0-9:,]+)\r\n$")
RESYNCS = ("qresync", "plain")


class IMAPError(Exception):
    """The peer answered a command with something other than OK."""


class Session:
    """One logged-in IMAP connection, one command at a time, counting the octets each way."""

    def __init__(self, target: peers.Target) -> None:
        self.sock = socket.create_connection((target.host, target.port), timeout=OP_TIMEOUT)
        self.reader = self.sock.makefile("rb")
        self.serial = 0
        self.sent = self.received = 0
        if not self.reader.readline().startswith(b"* OK"):
            raise IMAPError("no greeting")
        self.command(b'LOGIN "%s" "%s"' % (target.users[0].encode(), target.password.encode()))

    def command(self, text: bytes) -> list[bytes]:
        """Send one command; its untagged lines (none of these answers holds a literal)."""
        self.serial += 1
        tag = b"Q%d" % self.serial
        line = tag + b" " + text + b"\r\n"
        self.sock.sendall(line)
        self.sent += len(line)
        lines = []
        while True:
            line = self.reader.readline()
            if not line.endswith(b"\n"):
                raise IMAPError(f"connection closed during {text[:40]!r}")
            self.received += len(line)
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise IMAPError(f"{text[:40]!r}: {line[:120]!r}")
                return lines
            lines.append(line)

    def close(self) -> None:
        try:
            self.command(b"LOGOUT")
        except (OSError, IMAPError):
            pass
        self.reader.close()
        self.sock.close()


@dataclass(frozen=True)
class Known:
    """What the client kept from its full sync."""

    uidvalidity: int
    modseq: int
    uids: list[int]


@dataclass(frozen=True)
class Changes:
    flagged: frozenset[int]
    expunged: frozenset[int]


@dataclass
class Resync:
    """One way of resynchronising, over its repeats."""

    peer: str
    kind: str
    seconds: list[float] = field(default_factory=list)
    sent: int = 0
    received: int = 0
    fetched: int = 0  # FETCH responses in the answer
    vanished: int = 0  # UIDs the answer said are gone

    @property
    def median_ms(self) -> float:
        return 1000 * statistics.median(self.seconds)


@dataclass
class Outcome:
    peer: str
    resyncs: list[Resync] = field(default_factory=list)
    failure: str = ""


def full_sync(target: peers.Target) -> Known:
    session = Session(target)
    try:
        session.command(b"ENABLE QRESYNC")
        selected = b"".join(session.command(b"SELECT INBOX"))
        uids = fetched_uids(session.command(b"UID FETCH 1:* (FLAGS)"))
        return Known(int(UIDVALIDITY.search(selected).group(1)),
                     int(HIGHESTMODSEQ.search(selected).group(1)), sorted(uids))
    finally:
        session.close()


def fetched_uids(lines: list[bytes]) -> list[int]:
    return [int(m.group(1)) for m in map(FETCH_UID.match, lines) if m]


def change_from_another_session(target: peers.Target, known: Known, flags: int,
                                expunges: int) -> Changes:
    """Flag `flags` messages and expunge `expunges` others, spread over the folder."""
    step = max(1, len(known.uids) // (flags + expunges))
    spread = known.uids[step // 2::step][:flags + expunges]
    changes = Changes(frozenset(spread[:flags]), frozenset(spread[flags:]))
    session = Session(target)
    try:
        session.command(b"SELECT INBOX")
        for uid in sorted(changes.flagged):
            session.command(b"UID STORE %d +FLAGS.SILENT (\\Flagged)" % uid)
        for uid in sorted(changes.expunged):
            session.command(b"UID STORE %d +FLAGS.SILENT (\\Deleted)" % uid)
        session.command(b"EXPUNGE")
    finally:
        session.close()
    return changes


def resync_once(target: peers.Target, kind: str, known: Known) -> tuple[float, Session, list[bytes]]:
    """One resync on a new connection: its time, the session (octets counted from after the
    login) and the answer's untagged lines."""
    session = Session(target)
    session.sent = session.received = 0
    started = time.perf_counter()
    if kind == "qresync":
        session.command(b"ENABLE QRESYNC")
        known_uids = b"%d:%d" % (known.uids[0], known.uids[-1])
        lines = session.command(b"EXAMINE INBOX (QRESYNC (%d %d %s))"
                                % (known.uidvalidity, known.modseq, known_uids))
    else:
        lines = session.command(b"EXAMINE INBOX") + session.command(b"UID FETCH 1:* (FLAGS)")
    return time.perf_counter() - started, session, lines


def vanished_uids(lines: list[bytes]) -> set[int]:
    gone: set[int] = set()
    for match in filter(None, map(VANISHED.match, lines)):
        for low, high in parse_sequence_set(match.group(1).decode()):
            gone.update(range(low, high + 1))
    return gone


def check(kind: str, lines: list[bytes], known: Known, changes: Changes) -> None:
    """The answer tells the client exactly what changed (plain: the folder as it now is)."""
    told = (set(fetched_uids(lines)), vanished_uids(lines))
    if kind == "qresync":
        expected = (set(changes.flagged), set(changes.expunged))
    else:
        expected = (set(known.uids) - changes.expunged, set())
    if told != expected:
        raise IMAPError(f"{kind} resync told FETCH {len(told[0])} / VANISHED {len(told[1])} "
                        f"UIDs, expected {len(expected[0])} / {len(expected[1])}")


def measure(target: peers.Target, opts: argparse.Namespace) -> list[Resync]:
    known = full_sync(target)
    changes = change_from_another_session(target, known, opts.flags, opts.expunges)
    resyncs = {kind: Resync(target.name, kind) for kind in RESYNCS}
    for _ in range(opts.repeat):
        for kind, resync in resyncs.items():  # interleaved: a noisy moment hits both kinds
            seconds, session, lines = resync_once(target, kind, known)
            session.close()
            check(kind, lines, known, changes)
            resync.seconds.append(seconds)
            resync.sent, resync.received = session.sent, session.received
            resync.fetched = len(fetched_uids(lines))
            resync.vanished = len(vanished_uids(lines))
    return list(resyncs.values())


def run_peer(name: str, opts: argparse.Namespace, messages: list[bytes]) -> Outcome:
    try:
        with peers.run_imap_peer(name, opts.workers, messages, opts.anchors) as target:
            return Outcome(name, measure(target, opts))
    except (peers.PeerUnavailable, IMAPError, RuntimeError, OSError) as exc:
        return Outcome(name, failure=f"{exc.__class__.__name__}: {exc}")


def report(outcomes: list[Outcome], opts: argparse.Namespace) -> None:
    base = {r.kind: r.median_ms for o in outcomes if o.peer == "mailforge" for r in o.resyncs}
    table = Table(title=f"Resync of a {opts.messages:,}-message folder after {opts.flags} flag "
                        f"changes and {opts.expunges} expunges by another session "
                        f"(median of {opts.repeat})")
    for column in ("peer", "resync", "ms", "octets in", "octets out", "FETCH", "VANISHED",
                   "× mailforge"):
        table.add_column(column, justify="left" if column in ("peer", "resync") else "right",
                         no_wrap=True)
    for outcome in outcomes:
        for r in outcome.resyncs:
            table.add_row(r.peer, r.kind, f"{r.median_ms:.1f}", f"{r.received:,}", f"{r.sent:,}",
                          f"{r.fetched:,}", str(r.vanished),
                          f"{r.median_ms / base[r.kind]:.2f}" if base.get(r.kind) else "-")
    # Piped into a file, rich would squeeze the table into 80 columns and cut the cells.
    console = Console(width=max(Console().width, 120))
    console.print(table)
    for outcome in outcomes:
        if outcome.failure:
            console.print(f"{outcome.peer}: failed: {outcome.failure}", markup=False)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.qresync", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=10000, help="messages in the folder")
    parser.add_argument("--flags", type=int, default=8, help="messages the other session flags")
    parser.add_argument("--expunges", type=int, default=2,
                        help="messages the other session expunges")
    parser.add_argument("--size", type=int, default=2048, help="bytes per message")
    parser.add_argument("--repeat", type=int, default=5, help="resyncs of each kind")
    parser.add_argument("--workers", type=int, default=2, help="mailforge IMAP workers")
    parser.add_argument("--peers", default="mailforge,dovecot")
    parser.add_argument("--anchors", default=None)
    opts = parser.parse_args(argv)
    if opts.flags < 0 or opts.expunges < 0 or opts.repeat < 1:
        parser.error("--flags and --expunges must be 0 or more, --repeat 1 or more")
    if opts.messages < 2 * (opts.flags + opts.expunges):
        parser.error("--messages must be at least twice --flags plus --expunges")
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    messages = mailbox(opts.messages, opts.size)
    outcomes = [run_peer(name, opts, messages) for name in opts.peers.split(",")]
    report(outcomes, opts)
    return 0 if all(not o.failure for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
