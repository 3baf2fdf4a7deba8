"""Load generator: mailforge against the peer servers, one after another, in one run.

    python -m bench.load smtp --clients 50 --messages 20000 --size 1024 [--reuse N]
                              [--peers mailforge,mailforge-pure,aiosmtpd,postfix] [--workers 2]
                              [--count-delivered] [--timeout S] [--anchors DIR]
    python -m bench.load relay --clients 50 --messages 20000 --size 1024 [--reuse N]
                               [--peers mailforge,mailforge-pure,postfix] [--workers 2]
                               [--deliver-timeout S] [--timeout S] [--anchors DIR]
    python -m bench.load pop3 --clients 20 --sessions 2000 --messages 20 --size 1024
                              [--peers mailforge,mailforge-pure,dovecot] [--workers 2]
                              [--timeout S] [--anchors DIR]
    python -m bench.load imap --clients 20 --ops 20000 --messages 200 --size 2048
                              [--peers mailforge,mailforge-pure,dovecot] [--workers 2]
                              [--timeout S] [--anchors DIR]

The client is raw asyncio streams on uvloop (not smtplib or poplib) so that it stays cheaper
than the servers it drives; it pipelines MAIL/RCPT/DATA when the server offers PIPELINING. Each
peer is started in a temp dir, loaded, and stopped by pid before the next one starts. Compare
ratios from one run, never absolute figures from different runs: these machines are noisy.

`relay` sends to a domain no peer hosts; each peer relays it to a counting sink (bench/sink.py,
started afresh for each peer) and the figure that matters is end to end: messages at the sink
per second from the start of the load.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field

from bench import imap_load, peers, remote
from bench.wire import ProtocolError, expect, pop3_ok, read_reply
from bench.latency import summary

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
# One SMTP transaction (connect to 250), or one POP3 session, that takes longer counts as an error.
OP_TIMEOUT = 30.0
PROGRESS_INTERVAL = 0.25
# Without a terminal, a progress line this often is enough for a log.
PLAIN_PROGRESS_EVERY = 5.0
DELIVERY_POLL = 0.1
DEFAULT_PEERS = {"smtp": "mailforge,aiosmtpd,postfix", "pop3": "mailforge,dovecot",
                 "imap": "mailforge,dovecot", "relay": "mailforge,postfix"}
KNOWN_PEERS = {"smtp": {"mailforge", "mailforge-pure", "aiosmtpd", "postfix"},
               "pop3": {"mailforge", "mailforge-pure", "dovecot"},
               "imap": {"mailforge", "mailforge-pure", "dovecot"},
               "relay": {"mailforge", "mailforge-pure", "postfix"}}
# What each command counts, and its rate: (column, rate, one of them in words).
UNITS = {"msg": ("accepted", "msg/s", "accepted message"),
         "session": ("sessions", "sessions/s", "session"),
         "op": ("ops", "ops/s", "IMAP command")}
# A multi-line POP3 answer ends with a line holding one dot (RFC 1939 3).
POP3_END = b"\r\n.\r\n"

# Starts a peer on entry, stops it on exit.
Runner = Callable[[], contextlib.AbstractContextManager[peers.Target]]


@dataclass
class Stats:
    # Messages the server took (smtp), or sessions that ran to QUIT's +OK (pop3).
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
        kind = (str(exc) if isinstance(exc, (ProtocolError, imap_load.IMAPError))
                else type(exc).__name__)
        self.error_kinds[kind] += 1

    @classmethod
    def merged(cls, parts: list[Stats]) -> Stats:
        """The load of several client processes as one (perf_counter is CLOCK_MONOTONIC, the
        same clock in every process)."""
        whole = cls()
        for part in parts:
            whole.accepted += part.accepted
            whole.errors += part.errors
            whole.latencies += part.latencies
            whole.error_kinds += part.error_kinds
            whole.cpu += part.cpu
            whole.timed_out |= part.timed_out
        if parts:
            whole.started = min(p.started for p in parts)
            whole.wall = max(p.started + p.wall for p in parts) - whole.started
        return whole


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


async def transaction(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rcpt: bytes,
                      data: bytes, pipelining: bool, sender: bytes = SENDER.encode()) -> None:
    """MAIL, RCPT, DATA and the message; returns once the server answered 250 for it."""
    steps = ((b"MAIL FROM:<%s>\r\n" % sender, 250, "MAIL"),
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
                     reuse: int, rcpts: Iterator[bytes]) -> None:
    """One connection, up to `reuse` messages, each to the next of `rcpts`; the caller already
    holds the first ticket.

    A message's latency runs from when its ticket was taken to its 250, so with a new
    connection per message it includes connect, greeting and EHLO.
    """
    writer = None
    start = time.perf_counter()
    try:
        async with asyncio.timeout(OP_TIMEOUT):
            reader, writer = await remote.open_stream(target)
            await expect(reader, 220, "greeting")
            writer.write(b"EHLO %s\r\n" % CLIENT_NAME)
            ehlo = await remote.smtp_prepare(reader, writer, target,
                                             await expect(reader, 250, "EHLO"), CLIENT_NAME)
        pipelining = any(line[4:].upper().startswith(b"PIPELINING") for line in ehlo)
        for sent in range(reuse):
            if sent and not tickets.take():
                break
            async with asyncio.timeout(OP_TIMEOUT):
                await transaction(reader, writer, next(rcpts), body.message(), pipelining,
                                  remote.sender(target, SENDER))
            stats.accept(time.perf_counter() - start)
            start = time.perf_counter()
        await quit_politely(reader, writer)
    except (OSError, ProtocolError, TimeoutError, ValueError) as exc:
        stats.fail(exc)
    finally:
        if writer is not None:
            writer.close()


async def quit_politely(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # The messages are already accepted; a server that drops the line at QUIT costs nothing.
    with contextlib.suppress(OSError, ProtocolError, TimeoutError, ValueError):
        async with asyncio.timeout(OP_TIMEOUT):
            writer.write(b"QUIT\r\n")
            await read_reply(reader)


async def client(target: peers.Target, body: Body, tickets: Tickets, stats: Stats,
                 reuse: int, rcpts: Iterator[bytes]) -> None:
    while tickets.take():
        await connection(target, body, tickets, stats, reuse, rcpts)


async def load(target: peers.Target, opts: argparse.Namespace, deadline: float,
               show_progress: bool = True) -> Stats:
    """SMTP: `opts.messages` messages over `opts.clients` connections at a time, to the
    target's recipients in turn."""
    body = Body(opts.size, target.rcpt)
    rcpts = itertools.cycle([rcpt.encode() for rcpt in target.recipients()])
    tickets, stats = Tickets(opts.messages, deadline), Stats()
    clients = [client(target, body, tickets, stats, opts.reuse, rcpts)
               for _ in range(opts.clients)]
    return await drive(target.name, clients, stats, opts.messages, deadline, show_progress)


def load_in_processes(target: peers.Target, opts: argparse.Namespace, deadline: float) -> Stats:
    """The SMTP load split over `opts.client_processes` forked clients, each with its share of
    the messages and connections: one process stops near one core's worth of new connections
    a second, less than a many-core server takes."""
    processes = opts.client_processes
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    children = [context.Process(target=_client_process,
                                args=(target, opts, deadline, n, processes, results))
                for n in range(processes)]
    print(f"{target.name}: {opts.messages} messages from {processes} client processes",
          file=sys.stderr, flush=True)
    for child in children:
        child.start()
    parts = [results.get(timeout=max(0.0, deadline - time.monotonic()) + 2 * OP_TIMEOUT)
             for _ in children]
    for child in children:
        child.join()
    return Stats.merged(parts)


def _client_process(target: peers.Target, opts: argparse.Namespace, deadline: float, n: int,
                    processes: int, results: multiprocessing.Queue) -> None:
    share = argparse.Namespace(**vars(opts))
    # The remainders go to the first processes, so the shares add up to the whole.
    share.messages = opts.messages // processes + (n < opts.messages % processes)
    share.clients = max(1, opts.clients // processes + (n < opts.clients % processes))
    results.put(run_async(load(target, share, deadline, show_progress=False)))


async def drive(name: str, clients: list[Coroutine[None, None, None]], stats: Stats, total: int,
                deadline: float, show_progress: bool = True) -> Stats:
    """Run the clients, which take Tickets and count into `stats`, to the end or the deadline."""
    stop = asyncio.Event()
    reporter = asyncio.create_task(progress(name, stats, total, stop) if show_progress
                                   else stop.wait())
    cpu0 = time.process_time()
    stats.started = time.perf_counter()
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
    stats.timed_out = stats.timed_out or stats.accepted + stats.errors < total
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


# --- POP3 ---------------------------------------------------------------------------------------

def maildir_message(serial: int, size: int) -> bytes:
    """A message of exactly `size` bytes with LF line ends, as a Maildir file holds it."""
    head = (f"From: <{SENDER}>\nTo: <bench@bench.test>\nSubject: bench pop3 {serial}\n"
            f"Message-ID: <{serial}.{os.getpid()}@client.bench.test>\n"
            "Date: Wed, 25 Nov 2026 12:00:00 +0000\n\n").encode()
    # 76 letters per line: no line starts with a dot, so the server has nothing to dot-stuff.
    line = b"x" * 76 + b"\n"
    fill = max(0, size - len(head))
    rest = fill % len(line)
    return head + line * (fill // len(line)) + (b"y" * (rest - 1) + b"\n" if rest else b"")


def mailbox(count: int, size: int) -> list[bytes]:
    return [maildir_message(serial, size) for serial in range(count)]


async def pop3_retr(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> int:
    """RETR one message; the octets it had (its CRLF form, as STAT counts them)."""
    writer.write(b"RETR %d\r\n" % number)
    await pop3_ok(reader, "RETR")
    # One read to the terminator instead of a readline per line. Every bench message has
    # several lines, so the CRLF before the final dot is the last body line's own.
    body = await reader.readuntil(POP3_END)
    return len(body) - 3


async def pop3_session(target: peers.Target, user: str, messages: int, stats: Stats,
                       limit: int) -> None:
    """Log in, STAT, RETR every message, QUIT; counted once QUIT answered +OK.

    Commands go one at a time, as poplib and most mail clients send them. The latency runs
    from the connect to QUIT's +OK.
    """
    writer = None
    start = time.perf_counter()
    try:
        async with asyncio.timeout(OP_TIMEOUT):
            reader, writer = await remote.open_stream(target, limit)
            await pop3_ok(reader, "greeting")
            await remote.pop3_prepare(reader, writer, target)
            writer.write(b"USER %s\r\n" % user.encode())
            await pop3_ok(reader, "USER")
            writer.write(b"PASS %s\r\n" % target.password.encode())
            await pop3_ok(reader, "PASS")
            writer.write(b"STAT\r\n")
            _, count, octets = (await pop3_ok(reader, "STAT")).split()[:3]
            if int(count) != messages:
                raise ProtocolError(f"STAT {int(count)} messages, not {messages}")
            received = 0
            for number in range(1, messages + 1):
                received += await pop3_retr(reader, writer, number)
            if received != int(octets):
                raise ProtocolError("RETR octets differ from STAT")
            writer.write(b"QUIT\r\n")
            await pop3_ok(reader, "QUIT")
        stats.accept(time.perf_counter() - start)
    except (OSError, ProtocolError, TimeoutError, ValueError, asyncio.IncompleteReadError,
            asyncio.LimitOverrunError) as exc:
        stats.fail(exc)
    finally:
        if writer is not None:
            writer.close()


async def pop3_client(target: peers.Target, user: str, tickets: Tickets, stats: Stats,
                      opts: argparse.Namespace) -> None:
    # A whole message must fit the reader's buffer for readuntil; its CRLF form is at most
    # twice the LF one.
    limit = max(2 ** 16, 2 * opts.size + 1024)
    while tickets.take():
        await pop3_session(target, user, opts.messages, stats, limit)


async def load_pop3(target: peers.Target, opts: argparse.Namespace, deadline: float) -> Stats:
    """`opts.sessions` sessions over `opts.clients` clients, each client always as its own user:
    a POP3 server locks a maildrop per session, and one user per client keeps that lock out
    of the measure."""
    tickets, stats = Tickets(opts.sessions, deadline), Stats()
    clients = [pop3_client(target, user, tickets, stats, opts) for user in target.users[:opts.clients]]
    return await drive(target.name, clients, stats, opts.sessions, deadline)


async def load_imap(target: peers.Target, opts: argparse.Namespace, deadline: float) -> Stats:
    """`opts.ops` IMAP commands over `opts.clients` logged-in clients, each as its own user
    (so that every client's EXPUNGEs and sequence numbers are its own)."""
    tickets, stats = Tickets(opts.ops, deadline), Stats()
    message = maildir_message(10**6, opts.size).replace(b"\n", b"\r\n")
    clients = [imap_load.imap_client(target, user, tickets, stats, message, seed)
               for seed, user in enumerate(target.users[:opts.clients])]
    return await drive(target.name, clients, stats, opts.ops, deadline)


def run_async(coro):
    factory = uvloop.new_event_loop if uvloop is not None else None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def delivered_count(target: peers.Target) -> int:
    """Messages the peer has delivered: into its Maildir, or (relay) to the sink."""
    if target.relayed is not None:
        return target.relayed()
    return sum(peers.count_files(directory) for directory in target.delivered_dirs())


def wait_delivered(target: peers.Target, baseline: int, accepted: int, started: float,
                   deadline: float) -> tuple[int, float]:
    """Poll until `accepted` more messages are delivered, or the deadline.

    Returns how many arrived and the seconds from the load's start to the last one seen.
    """
    seen_at = time.perf_counter()
    delivered = delivered_count(target) - baseline
    while delivered < accepted and time.monotonic() < deadline:
        time.sleep(DELIVERY_POLL)
        now = delivered_count(target) - baseline
        if now != delivered:
            delivered, seen_at = now, time.perf_counter()
    return delivered, seen_at - started


def measure(name: str, runner: Runner, opts: argparse.Namespace, deadline: float) -> PeerResult:
    result = PeerResult(name)
    if time.monotonic() >= deadline:
        result.note = "skipped: the run's --timeout was reached before it"
        return result
    drive_load = {"pop3": load_pop3, "imap": load_imap}.get(opts.command, load)
    try:
        with runner() as target:
            result.info = target.info
            baseline = delivered_count(target)
            cpu0 = peers.tree_cpu_seconds(target.pid)
            if opts.command == "smtp" and opts.client_processes > 1:
                result.stats = load_in_processes(target, opts, deadline)
            else:
                result.stats = run_async(drive_load(target, opts, deadline))
            counted = opts.command == "relay" or (opts.command == "smtp" and opts.count_delivered
                                                  and bool(target.delivered_dirs()))
            if counted:
                result.delivered, result.delivered_wall = wait_delivered(
                    target, baseline, result.stats.accepted, result.stats.started,
                    min(deadline, time.monotonic() + opts.deliver_timeout))
            if target.pid:  # a server we did not start has no process tree here to read
                result.server_cpu = peers.tree_cpu_seconds(target.pid) - cpu0
    except peers.PeerUnavailable as exc:
        result.note = f"skipped: {exc}"
    except Exception as exc:  # one broken peer must not cost the others' figures
        result.note = f"failed: {type(exc).__name__}: {exc}"
    return result


def with_sink(start: Callable[[tuple[int, Callable[[], int]]], contextlib.AbstractContextManager[peers.Target]]
              ) -> Runner:
    """A runner that starts a fresh counting sink, then the peer relaying to it."""
    @contextlib.contextmanager
    def runner() -> Iterator[peers.Target]:
        with peers.run_sink() as sink, start(sink) as target:
            yield target
    return runner


def runners(opts: argparse.Namespace) -> dict[str, Runner]:
    anchors = peers.anchors_dir(opts.anchors)
    # Every client connects from 127.0.0.1, so the per-IP cap must hold them all.
    max_conn = max(1000, 2 * opts.clients)
    if opts.command == "relay":
        return {
            "mailforge": with_sink(lambda sink: peers.run_mailforge(opts.workers, max_conn,
                                                                    relay_to=sink)),
            "mailforge-pure": with_sink(lambda sink: peers.run_mailforge(
                opts.workers, max_conn, pure_python=True, relay_to=sink)),
            "postfix": with_sink(lambda sink: peers.run_postfix(anchors, relay_to=sink)),
        }
    if opts.command in ("pop3", "imap"):
        # One user per client (see load_pop3), every one with the same mailbox.
        users = [f"bench{n}@{peers.BENCH_DOMAIN}" for n in range(1, opts.clients + 1)]
        box = mailbox(opts.messages, opts.size)
        service = opts.command
        return {
            "mailforge": lambda: peers.run_mailforge(opts.workers, max_conn, service=service,
                                                     users=users, mailbox=box),
            "mailforge-pure": lambda: peers.run_mailforge(opts.workers, max_conn, pure_python=True,
                                                          service=service, users=users, mailbox=box),
            "dovecot": lambda: peers.dovecot_in(opts.data_dir, peers.run_dovecot(
                anchors, opts.clients, box, service, opts.dovecot_passwords)),
        }
    users = peers.bench_users(opts.mailboxes)
    return {
        "mailforge": lambda: peers.run_mailforge(workers=opts.workers, max_connections=max_conn,
                                                 users=users,
                                                 delivery_workers=opts.delivery_workers),
        # The same server on the pure-Python twins: what the Cython core buys (issue 3).
        "mailforge-pure": lambda: peers.run_mailforge(workers=opts.workers, max_connections=max_conn,
                                                      pure_python=True, users=users,
                                                      delivery_workers=opts.delivery_workers),
        "aiosmtpd": lambda: peers.run_aiosmtpd(anchors),
        "postfix": lambda: peers.run_postfix(anchors),
    }


def headers(unit: str, delivery: bool) -> tuple[str, ...]:
    """The table's columns: `unit` is what the peers are rated in (msg, session)."""
    done, rate, _ = UNITS[unit]
    return (("peer", done, "errors", rate, "p50 ms", "p90 ms", "p99 ms", "max ms", "× mailforge")
            + (("delivered", "deliv msg/s") if delivery else ())
            + (f"server CPU ms/{unit}", "client CPU"))


def table_rows(results: list[PeerResult], delivery: bool = True) -> list[tuple[str, ...]]:
    """One row per peer; the delivery columns only for SMTP."""
    width = len(headers("msg", delivery))
    base = next((r.rate for r in results if r.name == "mailforge"), None)
    rows = []
    for r in results:
        if r.stats is None:
            rows.append((r.name,) + ("-",) * (width - 1))
            continue
        s = r.stats
        lat = summary(s.latencies)
        ratio = f"{r.rate / base:.2f}" if base and r.rate is not None else "-"
        cpu_per_unit = (f"{r.server_cpu * 1000 / s.accepted:.2f}"
                        if r.server_cpu is not None and s.accepted else "-")
        delivered: tuple[str, ...] = ()
        if delivery:
            deliv_rate = (f"{r.delivered / r.delivered_wall:,.0f}"
                          if r.delivered and r.delivered_wall else "-")
            delivered = ("-" if r.delivered is None else f"{r.delivered:,}", deliv_rate)
        rows.append((r.name, f"{s.accepted:,}", f"{s.errors:,}", f"{r.rate:,.0f}",
                     *(f"{lat[k] * 1000:.1f}" if lat else "-" for k in ("p50", "p90", "p99", "max")),
                     ratio, *delivered, cpu_per_unit, f"{s.cpu / s.wall:.0%}" if s.wall else "-"))
    return rows


def notes(results: list[PeerResult], unit: str = "msg") -> Iterator[str]:
    _, rate, what = UNITS[unit]
    for r in results:
        if r.info:
            yield f"{r.name}: {r.info}"
        if r.note:
            yield f"{r.name}: {r.note}"
        if r.stats and r.stats.error_kinds:
            kinds = ", ".join(f"{k} ×{n}" for k, n in r.stats.error_kinds.most_common(5))
            yield f"{r.name}: errors: {kinds}"
        if r.stats and r.stats.timed_out:
            yield f"{r.name}: stopped by --timeout before every {what} was done"
    waits = " (delivery wait included)" if unit == "msg" else ""
    yield (f"× mailforge: the peer's {rate} over mailforge's in this run. server CPU: its whole "
           f"process tree's CPU time per {what}{waits}. client CPU: the load generator's share "
           "of one core; near 100% means it, not the server, set the pace.")


def print_report(results: list[PeerResult], opts: argparse.Namespace) -> None:
    if opts.command == "imap":
        unit, delivery = "op", False
        title = (f"IMAP: {opts.ops:,} commands (SELECT, FETCH 1:* FLAGS, FETCH BODY.PEEK[], STORE, "
                 f"SEARCH, APPEND, EXPUNGE), {opts.clients} logged-in clients, {opts.messages} × "
                 f"{opts.size} B each, mailforge workers {opts.workers}")
    elif opts.command == "pop3":
        unit, delivery = "session", False
        title = (f"POP3: {opts.sessions:,} sessions (login, STAT, RETR {opts.messages} × "
                 f"{opts.size} B, QUIT), {opts.clients} clients, mailforge workers {opts.workers}")
    else:
        unit, delivery = "msg", True
        kind = "relay, SMTP in → loopback sink out" if opts.command == "relay" else "SMTP"
        title = (f"{kind}: {opts.messages:,} × {opts.size} B, {opts.clients} clients, "
                 f"{opts.reuse} msg/connection, mailforge workers {opts.workers}")
        if opts.command == "smtp":
            title += (f", delivery workers {opts.delivery_workers or 'default'}, "
                      f"{opts.mailboxes:,} mailbox{'es' if opts.mailboxes > 1 else ''}")
    columns = headers(unit, delivery)
    rows = table_rows(results, delivery)
    if Console is not None:
        table = Table(title=title)
        for i, header in enumerate(columns):
            table.add_column(header, justify="left" if i == 0 else "right", no_wrap=True)
        for row in rows:
            table.add_row(*row)
        console = Console()
        # Piped into a file, rich would squeeze the table into 80 columns and cut the cells.
        Console(width=max(console.width, 160)).print(table)
    else:
        widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(columns)]
        print(title)
        for row in (columns, *rows):
            print("  ".join(cell.rjust(w) for cell, w in zip(row, widths)))
    for line in notes(results, unit):
        print(line)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    smtp = sub.add_parser("smtp", help="SMTP submission load, a new connection per message")
    smtp.add_argument("--clients", type=int, default=50, help="concurrent connections")
    smtp.add_argument("--messages", type=int, default=20000)
    smtp.add_argument("--size", type=int, default=1024, help="message size in bytes")
    smtp.add_argument("--reuse", type=int, default=1, help="messages per connection")
    smtp.add_argument("--count-delivered", action="store_true",
                      help="after the run, wait for the Maildir to hold every accepted message")
    smtp.add_argument("--deliver-timeout", type=float, default=120.0,
                      help="seconds to wait for delivery after the load (with --count-delivered)")
    smtp.add_argument("--mailboxes", type=int, default=1,
                      help="mailforge: spread the recipients over this many local mailboxes "
                           "(delivery is then counted, over all of them)")
    smtp.add_argument("--delivery-workers", type=int, default=None,
                      help="mailforge [delivery] workers (default: its config's default)")
    smtp.add_argument("--client-processes", type=int, default=1,
                      help="split the load over this many client processes (many-core servers)")
    relay = sub.add_parser("relay", help="SMTP in for a remote domain, relayed to a loopback sink")
    relay.add_argument("--clients", type=int, default=50, help="concurrent connections")
    relay.add_argument("--messages", type=int, default=20000)
    relay.add_argument("--size", type=int, default=1024, help="message size in bytes")
    relay.add_argument("--reuse", type=int, default=1, help="messages per connection")
    relay.add_argument("--deliver-timeout", type=float, default=300.0,
                       help="seconds to wait, after the load, for the sink to get every message")
    relay.set_defaults(count_delivered=True)
    pop3 = sub.add_parser("pop3", help="POP3 sessions: login, STAT, RETR every message, QUIT")
    pop3.add_argument("--clients", type=int, default=20,
                      help=f"concurrent sessions, each as its own user (at most {peers.DOVECOT_USERS})")
    pop3.add_argument("--sessions", type=int, default=2000)
    pop3.add_argument("--messages", type=int, default=20, help="messages in every mailbox")
    pop3.add_argument("--size", type=int, default=1024, help="bytes of every message (LF form)")
    imap = sub.add_parser("imap", help="IMAP: logged-in clients running a mixed command cycle")
    imap.add_argument("--clients", type=int, default=20,
                      help=f"concurrent clients, each as its own user (at most {peers.DOVECOT_USERS})")
    imap.add_argument("--ops", type=int, default=20000, help="IMAP commands in all")
    imap.add_argument("--messages", type=int, default=200, help="messages in every mailbox")
    imap.add_argument("--size", type=int, default=2048, help="bytes of every message (LF form)")
    for parser in (pop3, imap):
        parser.add_argument("--dovecot-passwords", choices=sorted(peers.DOVECOT_SCHEMES),
                            default="sha512-crypt",
                            help="how the Dovecot anchor stores passwords (default sha512-crypt, "
                                 "a check about as costly as mailforge's scrypt)")
        peers.add_data_dir_option(parser)
    for command, parser in (("smtp", smtp), ("relay", relay), ("pop3", pop3), ("imap", imap)):
        parser.add_argument("--peers", default=DEFAULT_PEERS[command],
                            help=f"comma list (default {DEFAULT_PEERS[command]})")
        parser.add_argument("--workers", type=int, default=2,
                            help=f"mailforge {command.upper()} workers")
        parser.add_argument("--timeout", type=float, default=900.0, help="seconds for the whole run")
        parser.add_argument("--anchors",
                            help="peer scripts (default $MAILFORGE_ANCHORS or ../shared/anchors)")
        remote.add_options(parser)
    opts = ap.parse_args(argv)
    if opts.command in KNOWN_PEERS:
        remote.check(opts, ap)
        counts = ("clients", "messages", "size", "workers",
                  *{"smtp": ("reuse", "mailboxes", "client_processes"), "relay": ("reuse",),
                     "pop3": ("sessions",),
                     "imap": ("ops",)}[opts.command])
        for flag in counts:
            if getattr(opts, flag) < 1:
                ap.error(f"--{flag.replace('_', '-')} must be at least 1")
        if opts.command == "smtp" and opts.delivery_workers is not None and opts.delivery_workers < 1:
            ap.error("--delivery-workers must be at least 1")
        if opts.command == "smtp" and opts.mailboxes > 1:
            opts.count_delivered = True  # what the spread is for
        if opts.command in ("pop3", "imap") and opts.clients > peers.DOVECOT_USERS:
            # The Dovecot anchor has that many users, and every client needs its own.
            ap.error(f"--clients must be at most {peers.DOVECOT_USERS}")
        opts.peer_names = [p.strip() for p in opts.peers.split(",") if p.strip()]
        unknown = set(opts.peer_names) - KNOWN_PEERS[opts.command]
        if unknown:
            ap.error(f"unknown peer(s): {', '.join(sorted(unknown))}")
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    deadline = time.monotonic() + opts.timeout
    if opts.command in ("pop3", "imap"):
        opts.data_dir = peers.keep_mail_in(opts.data_dir)
    peers.raise_nofile(4 * opts.clients + 256)
    available = {opts.host: remote.runner(opts)} if opts.host else runners(opts)
    names = [opts.host] if opts.host else opts.peer_names
    results = [measure(name, available[name], opts, deadline) for name in names]
    print_report(results, opts)
    return 0 if any(r.stats and r.stats.accepted for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
