"""Idle connections: how much resident memory a mailforge SMTP worker gains per connection.

    python -m bench.idle --connections 10000 [--workers 1] [--timeout 300]

Starts mailforge in a temp dir with one SMTP worker (caps and idle timeout raised so nothing is
refused or dropped), opens N connections that each read the 220 greeting and then say nothing,
and reads the worker's VmRSS from /proc before and after. Target: growth under 100 MB for
10,000 connections. The connections come from several loopback addresses (127.0.0.2, .3, …)
so one address's ephemeral ports never run out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import peers
from bench.load import run_async

TARGET_MB = 100.0
# Connects in flight at once: enough to be quick, few enough not to overflow the listen backlog.
OPEN_CONCURRENCY = 200
# Connections per loopback source address, far below one address's ~28,000 ephemeral ports.
PER_SOURCE = 5000
CONNECT_TIMEOUT = 15.0
# Warm-up connections first, so imports and caches paid once are not charged to the idle ones.
WARMUP = 20
# Time for the server to finish allocating for the last connections before RSS is read.
SETTLE = 2.0
# A process whose descriptors grew by this share of the connections is one holding them.
HOLDER_SHARE = 0.1


@dataclass
class Idle:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


@dataclass
class Snapshot:
    rss_kb: dict[int, int] = field(default_factory=dict)
    fds: dict[int, int] = field(default_factory=dict)


def snapshot(pids: list[int]) -> Snapshot:
    snap = Snapshot()
    for pid in pids:
        with contextlib.suppress(OSError):
            snap.rss_kb[pid] = vm_rss_kb(pid)
            snap.fds[pid] = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    return snap


def vm_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise OSError(f"no VmRSS for pid {pid}")


def source_address(index: int) -> str:
    return f"127.0.0.{2 + index // PER_SOURCE}"


async def open_idle(port: int, index: int, gate: asyncio.Semaphore) -> Idle:
    """One connection that has read its greeting; it then stays silent until closed."""
    async with gate, asyncio.timeout(CONNECT_TIMEOUT):
        reader, writer = await asyncio.open_connection(
            peers.LOOPBACK, port, local_addr=(source_address(index), 0))
        greeting = await reader.readline()
        if not greeting.startswith(b"220"):
            writer.close()
            raise ConnectionRefusedError(greeting.decode(errors="replace").strip() or "closed")
        return Idle(reader, writer)


async def hold(port: int, count: int,
               measure_after: Callable[[], Snapshot]) -> tuple[int, Counter, Snapshot]:
    """Open `count` idle connections, call `measure_after()` while they are open, close them.

    Returns how many were still open at measuring time, failures by kind, and the measurement.
    """
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)
    outcomes = await asyncio.gather(*(open_idle(port, i, gate) for i in range(count)),
                                    return_exceptions=True)
    idle = [o for o in outcomes if isinstance(o, Idle)]
    failures = Counter(f"{type(o).__name__} {o}".strip()
                       for o in outcomes if isinstance(o, BaseException))
    await asyncio.sleep(SETTLE)
    measured = measure_after()
    # One the server closed meanwhile was not held when RSS was read.
    open_now = sum(1 for conn in idle if not conn.reader.at_eof())
    for conn in idle:
        conn.writer.close()
    return open_now, failures, measured


async def warm_up(port: int) -> None:
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)
    outcomes = await asyncio.gather(*(open_idle(port, i, gate) for i in range(WARMUP)),
                                    return_exceptions=True)
    for conn in outcomes:
        if isinstance(conn, Idle):
            conn.writer.close()
    await asyncio.sleep(0.5)


def holders(before: Snapshot, after: Snapshot, connections: int) -> list[int]:
    """The processes whose descriptor count grew with the connections.

    `mailforge status` names the SMTP workers too, but this is what proves which process
    actually holds the connections whose cost is being measured.
    """
    floor = max(1, int(connections * HOLDER_SHARE))
    return [pid for pid in after.fds if after.fds[pid] - before.fds.get(pid, 0) >= floor]


def report(before: Snapshot, after: Snapshot, held: int, failures: Counter,
           target: peers.Target, target_mb: float) -> bool:
    workers = holders(before, after, held)
    supervisor = target.pid
    if target.info:
        print(f"mailforge: {target.info}")
    failed = f"; failed: {dict(failures.most_common(5))}" if failures else ""
    print(f"idle connections held: {held:,}{failed}")
    for pid in sorted(after.rss_kb):
        role = ("supervisor" if pid == supervisor else "SMTP worker (holds the connections)"
                if pid in workers else "other child")
        print(f"  pid {pid:>7} {role:<36} RSS {before.rss_kb.get(pid, 0) / 1024:7.1f} → "
              f"{after.rss_kb[pid] / 1024:7.1f} MB  fds {before.fds.get(pid, 0)} → {after.fds[pid]}")
    if not workers or not held:
        print("no process gained the connections' descriptors: nothing to measure")
        return False
    growth_kb = sum(after.rss_kb[p] - before.rss_kb.get(p, after.rss_kb[p]) for p in workers)
    total_kb = sum(after.rss_kb.values()) - sum(before.rss_kb.get(p, 0) for p in after.rss_kb)
    ok = growth_kb / 1024 < target_mb
    print(f"SMTP worker RSS growth: {growth_kb / 1024:.1f} MB for {held:,} connections = "
          f"{growth_kb / held:.2f} KB per connection (whole process tree: {total_kb / 1024:.1f} MB)")
    print(f"target: < {target_mb:.0f} MB → {'met' if ok else 'MISSED'}")
    return ok


def measure(opts: argparse.Namespace) -> bool:
    # Leave room for the server's own files; children inherit the raised limit.
    limit = peers.raise_nofile(opts.connections + 1024)
    if limit < opts.connections + 64:
        print(f"warning: open-file limit is {limit}; connections may fail", file=sys.stderr)
    deadline = time.monotonic() + opts.timeout
    with peers.run_mailforge(workers=opts.workers, max_connections=opts.connections + 100,
                             idle_timeout=max(3600.0, opts.timeout * 2)) as target:
        pids = [target.pid, *peers.descendants(target.pid)]
        run_async(asyncio.wait_for(warm_up(target.port), max(1.0, deadline - time.monotonic())))
        before = snapshot(pids)
        held, failures, after = run_async(asyncio.wait_for(
            hold(target.port, opts.connections, lambda: snapshot(pids)),
            max(1.0, deadline - time.monotonic())))
        return report(before, after, held, failures, target, opts.target_mb)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.idle", description=__doc__.split("\n")[0])
    ap.add_argument("--connections", type=int, default=10000)
    ap.add_argument("--workers", type=int, default=1, help="mailforge SMTP workers")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds for the whole measurement")
    ap.add_argument("--target-mb", type=float, default=TARGET_MB)
    opts = ap.parse_args(argv)
    if opts.connections < 1 or opts.workers < 1:
        ap.error("--connections and --workers must be at least 1")
    try:
        return 0 if measure(opts) else 1
    except (peers.PeerUnavailable, RuntimeError, TimeoutError) as exc:
        print(f"bench.idle: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
