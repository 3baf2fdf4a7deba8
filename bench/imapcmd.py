"""Server CPU per IMAP command, one kind of command at a time: mailforge and Dovecot side by
side in one run.

    python -m bench.imapcmd [--messages 200] [--size 3000] [--seconds 3] [--workers 1]
        [--commands NOOP,STATUS,...] [--peers mailforge,dovecot] [--anchors DIR]

Each peer starts with one user whose INBOX holds `--messages` messages of `--size` octets.
One client logs in, selects INBOX and sends each kind of command over and over for
`--seconds` (after a few to warm up), one at a time. The table gives the peer's CPU time per
command (all its processes), the client's wall time per command, and Dovecot's CPU over
mailforge's. imaptest (bench.imaptest) measures the whole under load; this tells which
commands cost what, and the fixed cost every command pays (NOOP: reading, the worker's
thread-pool hop, the folder's refresh, writing). STORE alternates adding and removing a flag;
APPEND grows the folder, so it goes last.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench import peers
from bench.load import mailbox
from bench.qresync import IMAPError, Session

APPENDED = b"Subject: appended\r\n\r\n" + b"x" * 280 + b"\r\n"
# name: the commands sent in turn (one each time round)
COMMANDS: dict[str, tuple[bytes, ...]] = {
    "NOOP": (b"NOOP",),
    "STATUS": (b'STATUS "INBOX" (MESSAGES UNSEEN RECENT)',),
    "LIST": (b'LIST "" *',),
    "FETCH 1:* (FLAGS)": (b"FETCH 1:* (FLAGS)",),
    "FETCH 1:10 (ENVELOPE ...)":
        (b"FETCH 1:10 (UID FLAGS ENVELOPE BODYSTRUCTURE RFC822.SIZE INTERNALDATE)",),
    "FETCH 1:5 (HEADER.FIELDS)":
        (b"FETCH 1:5 (UID BODY.PEEK[HEADER.FIELDS (From To Subject Message-ID)])",),
    "FETCH 7 (BODY.PEEK[])": (b"FETCH 7 (UID BODY.PEEK[])",),
    "FETCH 7 (HEADER)": (b"FETCH 7 (UID BODY.PEEK[HEADER])",),
    "FETCH 7 (TEXT)": (b"FETCH 7 (UID BODY.PEEK[TEXT])",),
    "STORE +/-FLAGS": (b"STORE 3 +FLAGS (\\Flagged)", b"STORE 3 -FLAGS (\\Flagged)"),
    "EXPUNGE (none)": (b"EXPUNGE",),
    "APPEND": (b"APPEND INBOX {%d+}\r\n%s" % (len(APPENDED), APPENDED),),
}
WARM_UP = 50


@dataclass
class Outcome:
    peer: str
    cpu_us: dict[str, float] = field(default_factory=dict)
    wall_us: dict[str, float] = field(default_factory=dict)
    failure: str = ""


def measure(target: peers.Target, names: list[str], seconds: float) -> Outcome:
    outcome = Outcome(target.name)
    session = Session(target)
    try:
        session.command(b"SELECT INBOX")
        for name in names:
            texts = COMMANDS[name]
            for serial in range(WARM_UP):
                session.command(texts[serial % len(texts)])
            cpu, start, sent = peers.tree_cpu_seconds(target.pid), time.perf_counter(), 0
            while time.perf_counter() - start < seconds:
                session.command(texts[sent % len(texts)])
                sent += 1
            wall = time.perf_counter() - start
            outcome.cpu_us[name] = (peers.tree_cpu_seconds(target.pid) - cpu) / sent * 1e6
            outcome.wall_us[name] = wall / sent * 1e6
    finally:
        session.close()
    return outcome


def run_peer(name: str, opts: argparse.Namespace, names: list[str]) -> Outcome:
    box = mailbox(opts.messages, opts.size)
    try:
        with peers.run_imap_peer(name, opts.workers, box, opts.anchors) as target:
            return measure(target, names, opts.seconds)
    except (peers.PeerUnavailable, IMAPError, RuntimeError, OSError) as exc:
        return Outcome(name, failure=f"{exc.__class__.__name__}: {exc}")


def report(outcomes: list[Outcome], names: list[str], opts: argparse.Namespace) -> None:
    # Piped into a file or a test, a row per command still: no wrapping at 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(f"one client, one command at a time, {opts.seconds:g} s each; INBOX of "
                  f"{opts.messages} messages of {opts.size} octets; mailforge IMAP workers "
                  f"{opts.workers}")
    for outcome in outcomes:
        if outcome.failure:
            console.print(f"{outcome.peer}: {outcome.failure}")
    measured = [o for o in outcomes if not o.failure]
    base = next((o for o in measured if o.peer == "mailforge"), None)
    table = Table()
    table.add_column("command")
    for outcome in measured:
        table.add_column(f"{outcome.peer} CPU µs", justify="right")
        table.add_column(f"{outcome.peer} wall µs", justify="right")
    if base is not None and len(measured) > 1:
        table.add_column("CPU × mailforge", justify="right")
    for name in names:
        cells = [escape(name)]
        for outcome in measured:
            cells += [f"{outcome.cpu_us[name]:.0f}", f"{outcome.wall_us[name]:.0f}"]
        if base is not None and len(measured) > 1:
            other = next(o for o in measured if o is not base)
            cells.append(f"{other.cpu_us[name] / base.cpu_us[name]:.2f}"
                         if base.cpu_us[name] else "-")
        table.add_row(*cells)
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.imapcmd", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--size", type=int, default=3000, help="octets per message")
    parser.add_argument("--seconds", type=float, default=3.0, help="per kind of command")
    parser.add_argument("--workers", type=int, default=1, help="mailforge IMAP workers")
    parser.add_argument("--commands", default=",".join(COMMANDS),
                        help="which kinds, by name, comma-separated (default: all)")
    parser.add_argument("--peers", default="mailforge,dovecot")
    parser.add_argument("--anchors", default=None)
    opts = parser.parse_args(argv)
    names = [name for name in COMMANDS if name in opts.commands.split(",")]
    if opts.messages < 10 or not names:
        parser.error("--messages must be at least 10 (the commands name messages 1 to 10), "
                     "and --commands must name at least one kind")
    outcomes = [run_peer(peer, opts, names) for peer in opts.peers.split(",")]
    report(outcomes, names, opts)
    return 1 if any(o.failure for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
