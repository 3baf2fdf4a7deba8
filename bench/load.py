"""Load generator: mailforge against the peer servers, one after another, in one run.

    python -m bench.load smtp --clients 50 --messages 20000 --size 1024 [--reuse N]
                              [--peers mailforge,mailforge-pure,aiosmtpd,postfix] [--workers 2]
                              [--count-delivered] [--timeout S] [--anchors DIR]

The client is raw asyncio streams on uvloop (not smtplib) so that it stays cheaper than the
servers it drives; it pipelines MAIL/RCPT/DATA when the server offers PIPELINING. Each peer is
started in a temp dir, loaded, and stopped by pid before the next one starts. Compare ratios
from one run, never absolute figures from different runs: these machines are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from bench import peers

try:
    import uvloop
except ImportError:  # the bench still runs, on the slower default loop
    uvloop = None
try:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table
except ImportError:  # rich is optional: plain progress lines and a plain table instead
    Console = None

SENDER = "load@client.bench.test"
CLIENT_NAME = b"client.bench.test"
# One SMTP transaction (connect to 250) that takes longer than this counts as an error.
OP_TIMEOUT = 30.0
PROGRESS_INTERVAL = 0.25
# Without a terminal, a progress line this often is enough for a log.
PLAIN_PROGRESS_EVERY = 5.0
DELIVERY_POLL = 0.1
PENDING_SUBCOMMANDS = ("pop3", "imap", "relay")
DEFAULT_PEERS = "mailforge,aiosmtpd,postfix"

# Starts a peer on entry, stops it on exit.
Runner = Callable[[], contextlib.AbstractContextManager[peers.Target]]


class SmtpError(Exception):
    """The server answered something other than what the transaction needs."""


@dataclass
class Stats:
    accepted: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    error_kinds: collections.Counter = field(default_factory=collections.Counter)
    started: float = 0.0
    wall: float = 0.0
    cpu: float = 0.0
    timed_out: bool = False

    def accept(self, latency: float) -> None:
        self.accepted += 1
        self.latencies.append(latency)

    def fail(self, exc: BaseException) -> None:
        self.errors += 1
        kind = str(exc) if isinstance(exc, SmtpError) else type(exc).__name__
        self.error_kinds[kind] += 1


@dataclass
class PeerResult:
    name: str
    stats: Stats | None = None
    delivered: int | None = None
    delivered_wall: float | None = None
    note: str = ""
    info: str = ""
    server_cpu: float | None = None

    @property
    def rate(self) -> float | None:
        if self.stats is None or self.stats.wall <= 0:
            return None
        return self.stats.accepted / self.stats.wall


class Tickets:
    """Messages left to send, shared by all clients; none are handed out past the deadline."""

    def __init__(self, total: int, deadline: float):
        self.left = total
        self.deadline = deadline

    def take(self) -> bool:
        if self.left <= 0 or time.monotonic() >= self.deadline:
            return False
        self.left -= 1
        return True


class Body:
    """A message of about `size` bytes, built once; each copy only gets its own Message-ID."""

    def __init__(self, size: int, rcpt: str):
        head = (f"From: <{SENDER}>\r\nTo: <{rcpt}>\r\nSubject: bench load\r\n"
                "Date: Wed, 25 Nov 2026 12:00:00 +0000\r\n\r\n").encode()
        # 76 letters per line: no line starts with a dot, so no dot-stuffing is needed.
        line = b"x" * 76 + b"\r\n"
        fill = max(0, size - len(head))
        self.tail = head + line * (fill // len(line)) + b"y" * (fill % len(line)) + b"\r\n.\r\n"
        self.pid = os.getpid()
        self.serial = itertools.count()

    def message(self) -> bytes:
        return b"Message-ID: <%d.%d@client.bench.test>\r\n" % (next(self.serial), self.pid) + self.tail


async def read_reply(reader: asyncio.StreamReader) -> tuple[int, list[bytes]]:
    lines = []
    while True:
        line = await reader.readline()
        if not line.endswith(b"\n"):
            raise ConnectionResetError("connection closed")
        lines.append(line)
        if line[3:4] != b"-":
            try:
                return int(line[:3]), lines
            except ValueError:
                raise SmtpError("garbled reply") from None


async def expect(reader: asyncio.StreamReader, code: int, step: str) -> list[bytes]:
    got, lines = await read_reply(reader)
    if got != code:
        raise SmtpError(f"{step} {got}")
    return lines


async def transaction(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rcpt: bytes,
                      data: bytes, pipelining: bool) -> None:
    """MAIL, RCPT, DATA and the message; returns once the server answered 250 for it."""
    steps = ((b"MAIL FROM:<%s>\r\n" % SENDER.encode(), 250, "MAIL"),
             (b"RCPT TO:<%s>\r\n" % rcpt, 250, "RCPT"),
             (b"DATA\r\n", 354, "DATA"))
    if pipelining:
        writer.write(b"".join(cmd for cmd, _, _ in steps))
        for _, code, step in steps:
            await expect(reader, code, step)
    else:
        for cmd, code, step in steps:
            writer.write(cmd)
            await expect(reader, code, step)
    writer.write(data)
    await expect(reader, 250, "end of data")


async def connection(target: peers.Target, body: Body, tickets: Tickets, stats: Stats,
                     reuse: int) -> None:
    """One connection, up to `reuse` messages; the caller already holds the first ticket.

    A message's latency runs from when its ticket was taken to its 250, so with a new
    connection per message it includes connect, greeting and EHLO.
    """
    rcpt = target.rcpt.encode()
    writer = None
    start = time.perf_counter()
    try:
        async with asyncio.timeout(OP_TIMEOUT):
            reader, writer = await asyncio.open_connection(target.host, target.port)
            await expect(reader, 220, "greeting")
            writer.write(b"EHLO %s\r\n" % CLIENT_NAME)
            ehlo = await expect(reader, 250, "EHLO")
        pipelining = any(line[4:].upper().startswith(b"PIPELINING") for line in ehlo)
        for sent in range(reuse):
            if sent and not tickets.take():
                break
            async with asyncio.timeout(OP_TIMEOUT):
                await transaction(reader, writer, rcpt, body.message(), pipelining)
            stats.accept(time.perf_counter() - start)
            start = time.perf_counter()
        await quit_politely(reader, writer)
    except (OSError, SmtpError, TimeoutError, ValueError) as exc:
        stats.fail(exc)
    finally:
        if writer is not None:
            writer.close()


async def quit_politely(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # The messages are already accepted; a server that drops the line at QUIT costs nothing.
    with contextlib.suppress(OSError, SmtpError, TimeoutError, ValueError):
        async with asyncio.timeout(OP_TIMEOUT):
            writer.write(b"QUIT\r\n")
            await read_reply(reader)


async def client(target: peers.Target, body: Body, tickets: Tickets, stats: Stats,
                 reuse: int) -> None:
    while tickets.take():
        await connection(target, body, tickets, stats, reuse)


async def load(target: peers.Target, opts: argparse.Namespace, deadline: float) -> Stats:
    stats = Stats()
    tickets = Tickets(opts.messages, deadline)
    body = Body(opts.size, target.rcpt)
    stop = asyncio.Event()
    reporter = asyncio.create_task(progress(target.name, stats, opts.messages, stop))
    cpu0 = time.process_time()
    stats.started = time.perf_counter()
    clients = [client(target, body, tickets, stats, opts.reuse) for _ in range(opts.clients)]
    try:
        # Tickets stop at the deadline; this also ends transactions still in flight past it.
        async with asyncio.timeout(max(0.0, deadline - time.monotonic()) + OP_TIMEOUT):
            await asyncio.gather(*clients)
    except TimeoutError:
        stats.timed_out = True
    stats.wall = time.perf_counter() - stats.started
    stats.cpu = time.process_time() - cpu0
    stop.set()
    await reporter
    stats.timed_out = stats.timed_out or stats.accepted + stats.errors < opts.messages
    return stats


async def progress(name: str, stats: Stats, total: int, stop: asyncio.Event) -> None:
    if Console is not None and sys.stderr.isatty():
        await _rich_progress(name, stats, total, stop)
    else:
        await _plain_progress(name, stats, total, stop)


async def _rich_progress(name: str, stats: Stats, total: int, stop: asyncio.Event) -> None:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("errors {task.fields[errors]}"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(name, total=total, errors=0)
        while not stop.is_set():
            bar.update(task, completed=stats.accepted + stats.errors, errors=stats.errors)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), PROGRESS_INTERVAL)


async def _plain_progress(name: str, stats: Stats, total: int, stop: asyncio.Event) -> None:
    tty = sys.stderr.isatty()
    interval = PROGRESS_INTERVAL if tty else PLAIN_PROGRESS_EVERY
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
        done = stats.accepted + stats.errors
        line = f"{name}: {done}/{total} ({stats.errors} errors)"
        print(f"\r{line}" if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)
    if tty:
        print(file=sys.stderr)


def run_async(coro):
    factory = uvloop.new_event_loop if uvloop is not None else None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def wait_delivered(target: peers.Target, baseline: int, accepted: int, started: float,
                   deadline: float) -> tuple[int, float]:
    """Poll the peer's Maildir new/ until it holds `accepted` more messages, or the deadline.

    Returns how many arrived and the seconds from the load's start to the last one seen.
    """
    seen_at = time.perf_counter()
    delivered = peers.count_files(target.maildir_new) - baseline
    while delivered < accepted and time.monotonic() < deadline:
        time.sleep(DELIVERY_POLL)
        now = peers.count_files(target.maildir_new) - baseline
        if now != delivered:
            delivered, seen_at = now, time.perf_counter()
    return delivered, seen_at - started


def measure(name: str, runner: Runner, opts: argparse.Namespace, deadline: float) -> PeerResult:
    result = PeerResult(name)
    if time.monotonic() >= deadline:
        result.note = "skipped: the run's --timeout was reached before it"
        return result
    try:
        with runner() as target:
            result.info = target.info
            baseline = peers.count_files(target.maildir_new)
            cpu0 = peers.tree_cpu_seconds(target.pid)
            result.stats = run_async(load(target, opts, deadline))
            if opts.count_delivered and target.maildir_new is not None:
                result.delivered, result.delivered_wall = wait_delivered(
                    target, baseline, result.stats.accepted, result.stats.started,
                    min(deadline, time.monotonic() + opts.deliver_timeout))
            result.server_cpu = peers.tree_cpu_seconds(target.pid) - cpu0
    except peers.PeerUnavailable as exc:
        result.note = f"skipped: {exc}"
    except Exception as exc:  # one broken peer must not cost the others' figures
        result.note = f"failed: {type(exc).__name__}: {exc}"
    return result


def runners(opts: argparse.Namespace) -> dict[str, Runner]:
    anchors = peers.anchors_dir(opts.anchors)
    # Every client connects from 127.0.0.1, so the per-IP cap must hold them all.
    max_conn = max(1000, 2 * opts.clients)
    return {
        "mailforge": lambda: peers.run_mailforge(workers=opts.workers, max_connections=max_conn),
        # The same server on the pure-Python twins: what the Cython core buys (issue 3).
        "mailforge-pure": lambda: peers.run_mailforge(workers=opts.workers, max_connections=max_conn,
                                                      pure_python=True),
        "aiosmtpd": lambda: peers.run_aiosmtpd(anchors),
        "postfix": lambda: peers.run_postfix(anchors),
    }


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


HEADERS = ("peer", "accepted", "errors", "msg/s", "p50 ms", "p99 ms", "× mailforge",
           "delivered", "deliv msg/s", "server CPU ms/msg", "client CPU")


def table_rows(results: list[PeerResult]) -> list[tuple[str, ...]]:
    base = next((r.rate for r in results if r.name == "mailforge"), None)
    rows = []
    for r in results:
        if r.stats is None:
            rows.append((r.name,) + ("-",) * (len(HEADERS) - 1))
            continue
        s = r.stats
        lat = s.latencies
        ratio = f"{r.rate / base:.2f}" if base and r.rate is not None else "-"
        deliv_rate = (f"{r.delivered / r.delivered_wall:,.0f}"
                      if r.delivered and r.delivered_wall else "-")
        cpu_per_msg = (f"{r.server_cpu * 1000 / s.accepted:.2f}"
                       if r.server_cpu is not None and s.accepted else "-")
        rows.append((r.name, f"{s.accepted:,}", f"{s.errors:,}", f"{r.rate:,.0f}",
                     f"{percentile(lat, 0.5) * 1000:.1f}" if lat else "-",
                     f"{percentile(lat, 0.99) * 1000:.1f}" if lat else "-",
                     ratio, "-" if r.delivered is None else f"{r.delivered:,}", deliv_rate,
                     cpu_per_msg, f"{s.cpu / s.wall:.0%}" if s.wall else "-"))
    return rows


def notes(results: list[PeerResult]) -> Iterator[str]:
    for r in results:
        if r.info:
            yield f"{r.name}: {r.info}"
        if r.note:
            yield f"{r.name}: {r.note}"
        if r.stats and r.stats.error_kinds:
            kinds = ", ".join(f"{k} ×{n}" for k, n in r.stats.error_kinds.most_common(5))
            yield f"{r.name}: errors: {kinds}"
        if r.stats and r.stats.timed_out:
            yield f"{r.name}: stopped by --timeout before every message was sent"
    yield ("× mailforge: the peer's msg/s over mailforge's in this run. server CPU: its whole "
           "process tree's CPU time per accepted message (delivery wait included). client CPU: "
           "the load generator's share of one core; near 100% means it, not the server, set the pace.")


def print_report(results: list[PeerResult], opts: argparse.Namespace) -> None:
    title = (f"SMTP: {opts.messages:,} × {opts.size} B, {opts.clients} clients, "
             f"{opts.reuse} msg/connection, mailforge workers {opts.workers}")
    rows = table_rows(results)
    if Console is not None:
        table = Table(title=title)
        for i, header in enumerate(HEADERS):
            table.add_column(header, justify="left" if i == 0 else "right", no_wrap=True)
        for row in rows:
            table.add_row(*row)
        console = Console()
        # Piped into a file, rich would squeeze the table into 80 columns and cut the cells.
        Console(width=max(console.width, 160)).print(table)
    else:
        widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(HEADERS)]
        print(title)
        for row in (HEADERS, *rows):
            print("  ".join(cell.rjust(w) for cell, w in zip(row, widths)))
    for line in notes(results):
        print(line)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    smtp = sub.add_parser("smtp", help="SMTP submission load, a new connection per message")
    smtp.add_argument("--clients", type=int, default=50, help="concurrent connections")
    smtp.add_argument("--messages", type=int, default=20000)
    smtp.add_argument("--size", type=int, default=1024, help="message size in bytes")
    smtp.add_argument("--reuse", type=int, default=1, help="messages per connection")
    smtp.add_argument("--peers", default=DEFAULT_PEERS, help=f"comma list (default {DEFAULT_PEERS})")
    smtp.add_argument("--workers", type=int, default=2, help="mailforge SMTP workers")
    smtp.add_argument("--count-delivered", action="store_true",
                      help="after the run, wait for the Maildir to hold every accepted message")
    smtp.add_argument("--deliver-timeout", type=float, default=120.0,
                      help="seconds to wait for delivery after the load (with --count-delivered)")
    smtp.add_argument("--timeout", type=float, default=900.0, help="seconds for the whole run")
    smtp.add_argument("--anchors", help="peer scripts (default $MAILFORGE_ANCHORS or ../shared/anchors)")
    for name in PENDING_SUBCOMMANDS:
        sub.add_parser(name, help="not implemented yet").add_argument("rest", nargs="*")
    opts = ap.parse_args(argv)
    if opts.command == "smtp":
        for flag in ("clients", "messages", "size", "reuse", "workers"):
            if getattr(opts, flag) < 1:
                ap.error(f"--{flag} must be at least 1")
        opts.peer_names = [p.strip() for p in opts.peers.split(",") if p.strip()]
        unknown = set(opts.peer_names) - {"mailforge", "mailforge-pure", "aiosmtpd", "postfix"}
        if unknown:
            ap.error(f"unknown peer(s): {', '.join(sorted(unknown))}")
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    if opts.command in PENDING_SUBCOMMANDS:
        print(f"bench.load {opts.command}: not implemented yet (a later issue adds it)", file=sys.stderr)
        return 2
    deadline = time.monotonic() + opts.timeout
    peers.raise_nofile(4 * opts.clients + 256)
    available = runners(opts)
    results = [measure(name, available[name], opts, deadline) for name in opts.peer_names]
    print_report(results, opts)
    return 0 if any(r.stats and r.stats.accepted for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
