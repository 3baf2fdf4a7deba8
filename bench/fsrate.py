"""The file system's own limit for Maildir delivery, and mailforge's delivery rate against it.

    python -m bench.fsrate [--writers 1,2,4,8] [--seconds 5] [--dir PATH] [--size 1024]
                           [--mailforge] [--messages 5000] [--mailboxes 1000] [--clients 50]
                           [--smtp-workers 2]

Each writer is a process that, for --seconds, creates a file in tmp/, writes --size bytes,
fdatasyncs it and renames it into new/: a Maildir delivery without the directory fsync, which
mailforge shares among a batch. With W writers in ONE directory (one mailbox: every rename
takes the same directory's lock) and in MANY (a tmp/ and new/ of its own per writer), as a
table of files per second.

--mailforge then runs `bench.load smtp` with W delivery workers for each W: one mailbox
against the ONE rate, --mailboxes mailboxes against the MANY rate, and reports mailforge's
delivered msg/s as a fraction of it. That figure runs from the load's start to the last
message delivered, so it is bounded by acceptance too: compare accepted msg/s beside it.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import load, peers
from bench.tune import counts

LAYOUTS = ("one", "many")
# Writers wait for each other at a barrier so that every one runs for the whole window.
START_TIMEOUT = 30.0


@dataclass
class Rate:
    layout: str
    writers: int
    files: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.files / self.seconds if self.seconds > 0 else 0.0


def writer(maildir: Path, tag: str, size: int, seconds: float, start: multiprocessing.Barrier,
           done: multiprocessing.Queue) -> None:
    """create + write + fdatasync + rename into new/ until the time is up; reports the count."""
    data = b"x" * size
    start.wait(START_TIMEOUT)
    until = time.perf_counter() + seconds
    made = 0
    while time.perf_counter() < until:
        name = f"{tag}.{made}"
        tmp = maildir / "tmp" / name
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
            os.fdatasync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, maildir / "new" / name)
        made += 1
    done.put(made)


def measure(base: Path, layout: str, writers: int, size: int, seconds: float) -> Rate:
    """`writers` processes into one Maildir, or into one Maildir each; removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix=f"fsrate-{layout}-{writers}-", dir=base))
    try:
        dirs = [root / (f"w{n}" if layout == "many" else "shared") for n in range(writers)]
        for maildir in set(dirs):
            for sub in ("tmp", "new"):
                (maildir / sub).mkdir(parents=True)
        context = multiprocessing.get_context("fork")
        start, done = context.Barrier(writers + 1), context.Queue()
        procs = [context.Process(target=writer, args=(d, f"w{n}", size, seconds, start, done))
                 for n, d in enumerate(dirs)]
        for proc in procs:
            proc.start()
        start.wait(START_TIMEOUT)
        began = time.perf_counter()
        total = sum(done.get(timeout=seconds + START_TIMEOUT) for _ in procs)
        elapsed = time.perf_counter() - began
        for proc in procs:
            proc.join()
        return Rate(layout, writers, total, elapsed)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def delivered_rate(opts: argparse.Namespace, delivery_workers: int, mailboxes: int) -> tuple[
        float | None, float | None, str]:
    """mailforge's (accepted, delivered) msg/s with these delivery workers and mailboxes."""
    load_opts = load.parse_args(["smtp", "--peers", "mailforge", "--clients", str(opts.clients),
                                 "--messages", str(opts.messages), "--count-delivered",
                                 "--workers", str(opts.smtp_workers),
                                 "--delivery-workers", str(delivery_workers),
                                 "--mailboxes", str(mailboxes)])
    users = peers.bench_users(mailboxes)
    max_conn = max(1000, 2 * opts.clients)
    result = load.measure("mailforge", lambda: peers.run_mailforge(
        opts.smtp_workers, max_conn, users=users, delivery_workers=delivery_workers),
        load_opts, time.monotonic() + opts.timeout)
    delivered = (result.delivered / result.delivered_wall
                 if result.delivered and result.delivered_wall else None)
    return result.rate, delivered, result.note


def print_rows(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    for row in (headers, *rows):
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths)).rstrip())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.fsrate", description=__doc__.split("\n")[0])
    ap.add_argument("--writers", default="1,2,4,8", help="parallel writer processes (comma list)")
    ap.add_argument("--seconds", type=float, default=5.0, help="seconds per measurement")
    ap.add_argument("--dir", type=Path, default=None,
                    help="where to write (default: the system temp dir); put it on the file "
                         "system mailforge's data dir is on")
    ap.add_argument("--size", type=int, default=1024, help="bytes per file")
    ap.add_argument("--mailforge", action="store_true",
                    help="also measure mailforge's delivery with as many delivery workers")
    ap.add_argument("--messages", type=int, default=5000, help="SMTP messages per mailforge load")
    ap.add_argument("--mailboxes", type=int, default=1000,
                    help="mailboxes of the mailforge load compared with MANY directories")
    ap.add_argument("--clients", type=int, default=50, help="SMTP clients of the mailforge load")
    ap.add_argument("--smtp-workers", type=int, default=2, help="mailforge SMTP workers")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per mailforge load")
    opts = ap.parse_args(argv)
    opts.writer_counts = counts(opts.writers, "--writers", ap)
    for flag in ("seconds", "size", "messages", "mailboxes", "clients", "smtp_workers"):
        if getattr(opts, flag) <= 0:
            ap.error(f"--{flag.replace('_', '-')} must be positive")
    if opts.dir is not None and not opts.dir.is_dir():
        ap.error(f"--dir {opts.dir}: no such directory")
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    base = opts.dir or Path(tempfile.gettempdir())
    rates: dict[tuple[str, int], Rate] = {}
    for writers in opts.writer_counts:
        for layout in LAYOUTS:
            rate = measure(base, layout, writers, opts.size, opts.seconds)
            rates[layout, writers] = rate
            print(f"{layout} directory, {writers} writers: {rate.per_second:,.0f} files/s",
                  file=sys.stderr, flush=True)
    print(f"create + write {opts.size} B + fdatasync + rename into new/, files/s, under {base}")
    print_rows(("writers", "ONE directory", "MANY directories"),
               [(str(w), f"{rates['one', w].per_second:,.0f}", f"{rates['many', w].per_second:,.0f}")
                for w in opts.writer_counts])
    if not opts.mailforge:
        return 0
    peers.raise_nofile(4 * opts.clients + 256)
    rows = []
    for workers in opts.writer_counts:
        for mailboxes, layout in ((1, "one"), (opts.mailboxes, "many")):
            accepted, delivered, note = delivered_rate(opts, workers, mailboxes)
            fs = rates[layout, workers].per_second
            rows.append((str(workers), f"{mailboxes:,}", f"{fs:,.0f}",
                         "-" if accepted is None else f"{accepted:,.0f}",
                         "-" if delivered is None else f"{delivered:,.0f}",
                         "-" if delivered is None or not fs else f"{delivered / fs:.2f}", note))
            print(f"mailforge, {workers} delivery workers, {mailboxes} mailboxes: "
                  f"{rows[-1][4]} delivered msg/s", file=sys.stderr, flush=True)
    print(f"\nmailforge ({opts.smtp_workers} SMTP workers, {opts.messages:,} × 1 KiB, "
          f"{opts.clients} clients) against the matching file system rate")
    print_rows(("delivery workers", "mailboxes", "fs files/s", "accepted msg/s",
                "delivered msg/s", "delivered / fs", "note"), rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
