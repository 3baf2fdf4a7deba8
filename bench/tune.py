"""Tuning report: mailforge under the `bench.load` workloads at several worker counts and
thread-pool sizes, as a table and a PNG plot of throughput and p99 latency against workers.

    python -m bench.tune [--workers 1,2,4,8] [--threads 2,8,32] [--clients 50]
                         [--messages 3000] [--ops 3000] [--out bench/tuning.png]
                         [--delivery-workers 2,4,8] [--mailboxes 1,1000]
                         [--client-processes N] [--protocols smtp,imap]
                         [--timeout 1800] [--quick] [--report DIR]

SMTP always (unless --protocols leaves it out); IMAP when `bench.load` has an imap mode (it
says so and skips it otherwise). Every point starts its own mailforge (`[smtp]`/`[imap]`
`workers` and `max_threads` set, and for SMTP `[delivery] workers`), loads it, and stops it
by pid before the next one. An SMTP point waits for delivery too: its row gives accepted and
delivered msg/s, and their ratio. The run as a whole is bounded by --timeout; points it has
no time left for are reported as skipped.

The table and the plot are also saved as a report (mailforge/tuning_report.py) that the web
console's Tuning page shows: in --report DIR, else in the data dir's tuning/ when a mailforge
config is found ($MAILFORGE_CONFIG or var/mailforge.toml, as the `mailforge` command finds it).
"""

from __future__ import annotations

import argparse
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench import load, peers
from bench.latency import summary
from mailforge import config as configuration, tuning_report
from mailforge.errors import MailforgeError

DEFAULT_OUT = Path(__file__).resolve().parent / "tuning.png"
# Small enough for a test to run end to end in well under a minute on a busy 2-core machine.
QUICK = {"threads": "4", "clients": 4, "messages": 40, "ops": 40, "timeout": 50.0}
# As bench.load imap's defaults (a mailbox of 50 made mailforge's IMAP stall with 2+ workers).
IMAP_MESSAGES, IMAP_SIZE = 200, 2048
DEFAULT_WORKERS, QUICK_WORKERS = "1,2,4,8", "1,2"
HEADERS = ("protocol", "workers", "max_threads", "done", "errors", "per s", "p50 ms", "p99 ms",
           "delivery", "mailboxes", "delivered/s", "deliv/acc", "note")


@dataclass
class Point:
    protocol: str
    workers: int
    max_threads: int
    done: int = 0
    errors: int = 0
    rate: float | None = None
    p50: float | None = None
    p99: float | None = None
    note: str = ""
    delivery_workers: int | None = None  # SMTP: [delivery] workers; None: the config's default
    mailboxes: int = 1  # SMTP: recipients spread over this many mailboxes
    delivered: float | None = None  # SMTP: msg/s into the Maildirs, from the load's start


def protocols(wanted: list[str]) -> tuple[list[str], list[str]]:
    """The workloads to run, and notes on the ones this `bench.load` cannot run."""
    if "imap" in wanted and "imap" not in getattr(load, "KNOWN_PEERS", {}):
        return [p for p in wanted if p != "imap"], ["imap: skipped, this bench.load has no imap mode yet"]
    return wanted, []


def load_options(protocol: str, opts: argparse.Namespace, workers: int,
                 delivery_workers: int | None = None, mailboxes: int = 1) -> argparse.Namespace:
    """What `bench.load` would parse for this point, mailforge alone."""
    common = ["--clients", str(opts.clients), "--peers", "mailforge", "--workers", str(workers),
              "--timeout", str(opts.timeout)]
    if protocol == "imap":
        return load.parse_args(["imap", "--ops", str(opts.ops), "--messages", str(IMAP_MESSAGES),
                                "--size", str(IMAP_SIZE), *common])
    delivery = ["--delivery-workers", str(delivery_workers)] if delivery_workers else []
    return load.parse_args(["smtp", "--messages", str(opts.messages), "--count-delivered",
                            "--deliver-timeout", str(opts.deliver_timeout),
                            "--mailboxes", str(mailboxes), "--client-processes",
                            str(opts.client_processes), *delivery, *common])


def runner(protocol: str, load_opts: argparse.Namespace, max_threads: int) -> load.Runner:
    max_conn = max(1000, 2 * load_opts.clients)
    if protocol == "smtp":
        users = peers.bench_users(load_opts.mailboxes)
        return lambda: peers.run_mailforge(load_opts.workers, max_conn, max_threads=max_threads,
                                           users=users,
                                           delivery_workers=load_opts.delivery_workers,
                                           extra=load_opts.settings)
    # As bench.load's own runners: one user per client, every one with the same mailbox.
    users = [f"bench{n}@{peers.BENCH_DOMAIN}" for n in range(1, load_opts.clients + 1)]
    box = load.mailbox(load_opts.messages, load_opts.size)
    return lambda: peers.run_mailforge(load_opts.workers, max_conn, service=protocol, users=users,
                                       mailbox=box, max_threads=max_threads,
                                       extra=load_opts.settings)


def measure(protocol: str, workers: int, max_threads: int, opts: argparse.Namespace,
            deadline: float, delivery_workers: int | None = None, mailboxes: int = 1) -> Point:
    point = Point(protocol, workers, max_threads, delivery_workers=delivery_workers,
                  mailboxes=mailboxes)
    load_opts = load_options(protocol, opts, workers, delivery_workers, mailboxes)
    load_opts.settings = opts.settings
    result = load.measure("mailforge", runner(protocol, load_opts, max_threads), load_opts, deadline)
    point.note = result.note
    if result.delivered and result.delivered_wall:
        point.delivered = result.delivered / result.delivered_wall
    if result.stats is not None:
        figures = summary(result.stats.latencies)
        point.done, point.errors, point.rate = result.stats.accepted, result.stats.errors, result.rate
        point.p50, point.p99 = figures.get("p50"), figures.get("p99")
        if result.stats.timed_out:
            point.note = point.note or "stopped by --timeout"
    return point


def sweep(opts: argparse.Namespace, chosen: list[str]) -> Iterator[Point]:
    deadline = time.monotonic() + opts.timeout
    for protocol in chosen:
        for max_threads in opts.thread_counts:
            if protocol != "smtp":
                for workers in opts.worker_counts:
                    yield measure(protocol, workers, max_threads, opts, deadline)
                continue
            # Mailbox counts innermost: a run cut short by --timeout still has every one of
            # them for the points it reached.
            for delivery_workers in opts.delivery_counts:
                for workers in opts.worker_counts:
                    for mailboxes in opts.mailbox_counts:
                        yield measure(protocol, workers, max_threads, opts, deadline,
                                      delivery_workers, mailboxes)


def table_rows(points: list[Point]) -> list[tuple[str, ...]]:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:.1f}"

    def delivery(p: Point) -> tuple[str, ...]:
        if p.protocol != "smtp":
            return ("-", "-", "-", "-")
        ratio = f"{p.delivered / p.rate:.2f}" if p.delivered and p.rate else "-"
        return (str(p.delivery_workers or "default"), f"{p.mailboxes:,}",
                "-" if p.delivered is None else f"{p.delivered:,.0f}", ratio)

    return [(p.protocol, str(p.workers), str(p.max_threads), f"{p.done:,}", f"{p.errors:,}",
             "-" if p.rate is None else f"{p.rate:,.0f}", ms(p.p50), ms(p.p99), *delivery(p),
             p.note)
            for p in points]


def print_table(points: list[Point], notes: list[str]) -> None:
    rows = table_rows(points)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADERS)]
    for row in (HEADERS, *rows):
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths)).rstrip())
    for line in (*notes, LEGEND):
        print(line)


LEGEND = ("per s: SMTP messages accepted (fsynced) or IMAP commands answered per second; "
          "p99: nearest-rank latency of one message or command; delivered/s: SMTP messages in "
          "the Maildirs per second from the load's start to the last one; deliv/acc: their "
          "ratio to accepted.")


def plot(points: list[Point], out: Path, title: str) -> None:
    """Two panels against worker count, one line per protocol and max_threads."""
    import matplotlib
    matplotlib.use("Agg")  # files only: no display on a server
    from matplotlib import pyplot

    figure, (rate_ax, p99_ax) = pyplot.subplots(1, 2, figsize=(11, 4.2))
    def series(p: Point) -> tuple[object, ...]:
        return p.protocol, p.max_threads, p.delivery_workers, p.mailboxes

    for key in dict.fromkeys(series(p) for p in points):
        protocol, max_threads, delivery_workers, mailboxes = key
        line = sorted((p for p in points if series(p) == key and p.rate is not None),
                      key=lambda p: p.workers)
        if not line:
            continue
        label = f"{protocol.upper()}, max_threads {max_threads}"
        if protocol == "smtp" and (delivery_workers is not None or mailboxes > 1):
            label += f", delivery {delivery_workers or 'default'}, {mailboxes} mailboxes"
        style = "-o" if protocol == "smtp" else "--s"
        rate_ax.plot([p.workers for p in line], [p.rate for p in line], style, label=label)
        p99_ax.plot([p.workers for p in line], [(p.p99 or 0) * 1000 for p in line], style, label=label)
    for ax, ylabel in ((rate_ax, "throughput (msg/s or cmd/s)"), (p99_ax, "p99 latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({p.workers for p in points}), labels=None)
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("workers")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    rate_ax.legend(fontsize="small")
    figure.suptitle(title, fontsize="medium")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    pyplot.close(figure)


def settings(assignments: list[str], ap: argparse.ArgumentParser) -> dict[str, dict[str, object]]:
    """--set SECTION.KEY=VALUE (VALUE in TOML) as {section: {key: value}}."""
    chosen: dict[str, dict[str, object]] = {}
    for assignment in assignments:
        name, _, value = assignment.partition("=")
        section, _, key = name.partition(".")
        try:
            parsed = tomllib.loads(f"value = {value}")["value"]
        except tomllib.TOMLDecodeError:
            ap.error(f"--set {assignment!r}: the value is not TOML (quote strings)")
        if not (section and key):
            ap.error(f"--set {assignment!r}: expected SECTION.KEY=VALUE")
        chosen.setdefault(section, {})[key] = parsed
    return chosen


def counts(text: str, flag: str, ap: argparse.ArgumentParser) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        ap.error(f"{flag} takes a comma list of whole numbers, not {text!r}")
    if not values or min(values) < 1:
        ap.error(f"{flag} needs at least one value, every one at least 1")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.tune", description=__doc__.split("\n")[0])
    ap.add_argument("--workers", help=f"worker counts (comma list; default {DEFAULT_WORKERS}, "
                                      f"{QUICK_WORKERS} with --quick)")
    ap.add_argument("--threads", default="2,8,32", help="max_threads values (comma list)")
    ap.add_argument("--clients", type=int, default=50, help="concurrent clients per point")
    ap.add_argument("--messages", type=int, default=3000, help="SMTP messages per point")
    ap.add_argument("--ops", type=int, default=3000, help="IMAP commands per point")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the PNG plot")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds for the whole run")
    ap.add_argument("--delivery-workers", default="",
                    help="SMTP: [delivery] workers values (comma list; default: the config's)")
    ap.add_argument("--mailboxes", default="1",
                    help="SMTP: spread the recipients over this many mailboxes (comma list)")
    ap.add_argument("--client-processes", type=int, default=1,
                    help="SMTP: load client processes (a many-core server outruns one)")
    ap.add_argument("--deliver-timeout", type=float, default=120.0,
                    help="SMTP: seconds a point waits for delivery after its load")
    ap.add_argument("--protocols", default="smtp,imap", help="workloads to run (comma list)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="a mailforge setting for every point, the value in TOML "
                         "(e.g. queue.in_flow_delay=0); repeatable")
    ap.add_argument("--quick", action="store_true",
                    help="a few seconds per point, workers 1 and 2 unless --workers (for tests)")
    ap.add_argument("--report", type=Path,
                    help="save the report here for the console's Tuning page (default: the "
                         "data dir's tuning/ when a mailforge config is found)")
    opts = ap.parse_args(argv)
    if opts.quick:
        for key, value in QUICK.items():
            setattr(opts, key, value)
    if opts.workers is None:
        opts.workers = QUICK_WORKERS if opts.quick else DEFAULT_WORKERS
    opts.report = opts.report or default_report_dir()
    for flag in ("clients", "messages", "ops"):
        if getattr(opts, flag) < 1:
            ap.error(f"--{flag} must be at least 1")
    if "imap" in opts.protocols.split(",") and opts.clients > peers.DOVECOT_USERS:
        # bench.load caps IMAP clients (one user each) at the Dovecot anchor's users.
        ap.error(f"--clients must be at most {peers.DOVECOT_USERS}")
    opts.settings = settings(opts.set, ap)
    opts.worker_counts = counts(opts.workers, "--workers", ap)
    opts.thread_counts = counts(opts.threads, "--threads", ap)
    opts.mailbox_counts = counts(opts.mailboxes, "--mailboxes", ap)
    opts.delivery_counts = (counts(opts.delivery_workers, "--delivery-workers", ap)
                            if opts.delivery_workers else [None])
    opts.protocol_names = [p.strip() for p in opts.protocols.split(",") if p.strip()]
    if not opts.protocol_names or set(opts.protocol_names) - {"smtp", "imap"}:
        ap.error("--protocols takes smtp, imap or both")
    if opts.client_processes < 1:
        ap.error("--client-processes must be at least 1")
    return opts


def default_report_dir() -> Path | None:
    """<data_dir>/tuning of the config the `mailforge` command would use, if there is one."""
    path = configuration.config_path(None)
    if not path.is_file():
        return None
    try:
        return tuning_report.report_dir(configuration.load(path))
    except MailforgeError as exc:
        print(f"no report saved: {exc}", file=sys.stderr)
        return None


def save_report(opts: argparse.Namespace, title: str, points: list[Point], notes: list[str],
                plotted: bool) -> None:
    if opts.report is None:
        print("no report saved for the console: no mailforge config found (--report DIR)")
        return
    try:
        tuning_report.save(opts.report, title, list(HEADERS),
                           [list(row) for row in table_rows(points)], [*notes, LEGEND],
                           opts.out.read_bytes() if plotted else None)
    except OSError as exc:  # a data dir only the service account may write in
        print(f"no report saved in {opts.report}: {exc.strerror or exc}", file=sys.stderr)
    else:
        print(f"report: {opts.report}")


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    chosen, notes = protocols(opts.protocol_names)
    peers.raise_nofile(4 * opts.clients + 256)
    points = []
    for point in sweep(opts, chosen):
        print(f"{point.protocol} workers {point.workers} max_threads {point.max_threads}: "
              f"{table_rows([point])[0][5]}/s {point.note}".rstrip(), file=sys.stderr, flush=True)
        points.append(point)
    print_table(points, notes)
    title = (f"mailforge, {opts.clients} clients, SMTP {opts.messages} × 1 KiB"
             + (f", IMAP {opts.ops} commands" if "imap" in chosen else ""))
    try:
        plot(points, opts.out, title)
    except ImportError:
        print("no plot: matplotlib is not installed (pip install '.[dev]')", file=sys.stderr)
        plotted = False
    else:
        print(f"plot: {opts.out}")
        plotted = True
    save_report(opts, title, points, notes, plotted)
    return 0 if any(p.done for p in points) else 1


if __name__ == "__main__":
    sys.exit(main())
