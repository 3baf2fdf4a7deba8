"""Dovecot's imaptest stress load against mailforge and Dovecot, side by side in one run.

    python -m bench.imaptest --imaptest /tmp/imaptest/src/imaptest --secs 60 [--logout0]
        [--users 50] [--clients 50] [--messages 200] [--workers 2] [--shared-socket]
        [--peers mailforge,dovecot] [--rounds N] [--data-dir DIR] [COMMAND=PERCENT ...]

imaptest is Dovecot's code and stays out of the repository (bench/README.md says how to build
it). Each peer gets the same users (bench1..benchN@bench.test) with empty mailboxes and the
same mbox for imaptest to APPEND from; imaptest then runs its default stress profile for
`--secs` seconds (`logout=0`: the clients stay logged in, and the commands and CPU counted
are those from the second every client has logged in; COMMAND=PERCENT words are imaptest's
own probabilities, `list=0 status=0` say, to load a part of it). The table shows imaptest's own
command totals per second, its error lines (state tracking: any is a bug) and the peer's
ops/s over mailforge's. mailforge's IMAP runs with `reuse_port` (each worker its own
listening socket): imaptest connects its clients at once, and on one shared socket one
worker often takes most of them (`--shared-socket` shows it). `--rounds N` runs the peers N
times in alternating order (A B, B A, ...) and gives each peer's ratio per round and its
median. `--data-dir DIR` keeps both peers' mail under DIR: on this sandbox's root file
system (ext4 without a journal) creating a file costs whatever the inodes deleted in the last
minutes make it cost, 15 µs to 700 µs of CPU, set by what ran before; a journaled ext4 (a
loop mount, bench/README.md) is a mail server's usual ground and gives runs that agree.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench import peers
from bench.load import maildir_message

DEFAULT_IMAPTEST = Path("/tmp/imaptest/src/imaptest")
DOVECOT_LIBRARIES = "/usr/lib/dovecot"
ERROR_LINE = re.compile(r"^(Error|Panic|Fatal)[:(]", re.MULTILINE)
# One of imaptest's command probabilities, and optionally how often it is done again.
PROBABILITY = re.compile(r"[a-z0-9]+=[0-9]+(,[0-9]+)?")
# One of imaptest's per-second lines: each command's count, then logged-in/connected clients.
PER_SECOND = re.compile(r"^\s*(\d+\s+)+\d+/\s*\d+(\s.*)?$")
# What #14 asks of our own log under stress: no ERROR or traceback (and a worker the supervisor
# replaced says so at WARNING). The level follows the date, time and logger[pid].
SERVER_TROUBLE = re.compile(r"^\S+ \S+ \S+ (WARNING|ERROR|CRITICAL) |^Traceback ")


@dataclass
class Outcome:
    peer: str
    round: int = 1
    commands: int = 0
    seconds: float = 0.0
    errors: list[str] | None = None
    cpu_seconds: float = 0.0
    # Of cpu_seconds, the user time: Dovecot and mailforge spend about the same system time
    # per command, so the gap between them shows here. (A sandboxed kernel may count much of
    # a system call's work as user time: bench/README.md.)
    user_seconds: float = 0.0
    # mailforge: each IMAP worker's share of their CPU, in %. On a shared listening socket
    # (--shared-socket) one worker may take most of imaptest's clients, which connect at once:
    # a run split far from even says little about the code.
    worker_split: list[int] | None = None
    # mailforge: the WARNING or worse lines and tracebacks of its log during the run.
    server_trouble: list[str] | None = None
    failure: str = ""

    @classmethod
    def of_output(cls, peer: str, output: str, seconds: float) -> Outcome:
        """A run as imaptest's output tells it: its command totals and its error lines."""
        return cls(peer, commands=totals(output), seconds=seconds,
                   errors=[line for line in output.splitlines() if ERROR_LINE.match(line)])

    @property
    def rate(self) -> float:
        return self.commands / self.seconds if self.seconds else 0.0


def write_mbox(path: Path, count: int, size: int) -> None:
    """`count` messages of `size` bytes in mbox form, each with its own Message-ID."""
    with path.open("wb") as out:
        for serial in range(count):
            out.write(b"From bench@bench.test Wed Nov 25 12:00:00 2026\n")
            out.write(maildir_message(serial, size))
            out.write(b"\n")


def totals(output: str) -> int:
    """The sum of imaptest's "Totals:" row (commands of every kind over the run)."""
    _, _, tail = output.rpartition("Totals:")
    numbers = []
    for line in tail.splitlines():
        fields = line.split()
        if fields and all(field.isdigit() for field in fields):
            numbers = [int(field) for field in fields]
            break
    return sum(numbers)


@dataclass
class CpuReading:
    """The server's CPU so far (user, system) and each mailforge IMAP worker's."""

    user: float
    system: float
    workers: list[float]

    @classmethod
    def now(cls, target: peers.Target, workers: list[int]) -> CpuReading:
        return cls(*peers.tree_cpu_split(target.pid),
                   [peers.tree_cpu_seconds(pid) for pid in workers])


class SteadyWindow:
    """With logout=0, the part of the run after every client has logged in: the commands of
    imaptest's per-second lines from then on, and the seconds they cover. The logins are
    not what logout=0 measures, and they cost each peer what its password scheme costs
    (mailforge's scrypt ~45 ms of CPU each, SHA512-CRYPT a few): 50 of them are a few
    per cent of a 30 s run's CPU, and its first seconds. A peer may take its time over some
    logins (Dovecot's anchor held 26 of 50 for 11 s in runs of 2026-12-05, its other clients
    working meanwhile): the window waits for them."""

    def __init__(self, clients: int) -> None:
        self.clients = clients
        self.logins_column: int | None = None
        self.logins = 0
        self.commands = 0
        self.seconds = 0
        self.opened = False

    def feed(self, line: str) -> bool:
        """Take one line of imaptest's output; True when it opens the window (all logged in)."""
        if self.logins_column is None:
            fields = line.split()
            if "Logi" in fields:
                self.logins_column = fields.index("Logi")
            return False
        if not PER_SECOND.match(line):
            return False
        # The commands' counts, then the clients connected before the "/".
        counts = [int(field) for field in line.partition("/")[0].split()[:-1]]
        if self.opened:
            self.commands += sum(counts)
            self.seconds += 1
            return False
        self.logins += counts[self.logins_column]
        self.opened = self.logins >= self.clients
        return self.opened


def stress(imaptest: Path, target: peers.Target, opts: argparse.Namespace, mbox: Path) -> Outcome:
    """imaptest's run against `target`. With logout=0 the commands and the CPU are those of
    the steady window (SteadyWindow); else of the whole run, logins in the loop included."""
    user = target.users[0].replace("bench1@", "bench%d@")
    argv = [str(imaptest), f"host={target.host}", f"port={target.port}", f"user={user}",
            f"pass={target.password}", f"users={opts.users}", f"clients={opts.clients}",
            f"secs={opts.secs}", f"mbox={mbox}"]
    if opts.logout0:
        argv.append("logout=0")
    argv += opts.profile
    env = dict(os.environ, LD_LIBRARY_PATH=DOVECOT_LIBRARIES)
    workers = (peers.worker_pids(peers.mailforge_status(target.config), "imap")
               if target.name == "mailforge" else [])
    window = SteadyWindow(opts.clients)
    run_start = CpuReading.now(target, workers)
    window_start = run_start
    # stdbuf: imaptest's per-second lines come as they are printed, not a pipe's buffer later.
    run = subprocess.Popen(["stdbuf", "-oL", *argv], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, errors="replace", env=env)
    watchdog = threading.Timer(opts.secs + 120, run.kill)
    watchdog.start()
    output = []
    try:
        assert run.stdout is not None
        for line in run.stdout:
            output.append(line)
            if opts.logout0 and window.feed(line):
                window_start = CpuReading.now(target, workers)
        run.wait()
    finally:
        watchdog.cancel()
    after = CpuReading.now(target, workers)
    text = "".join(output)
    if run.returncode != 0:
        raise RuntimeError(f"imaptest exited with {run.returncode}: {text[-500:]!r}")
    outcome = Outcome.of_output(target.name, text, float(opts.secs))
    # The window's commands and CPU, or (no whole second after the last login) the run's.
    before = window_start if window.seconds else run_start
    if window.seconds:
        outcome.commands, outcome.seconds = window.commands, float(window.seconds)
    outcome.user_seconds = after.user - before.user
    outcome.cpu_seconds = outcome.user_seconds + after.system - before.system
    used = [late - early for late, early in zip(after.workers, before.workers)]
    if sum(used) > 0:
        outcome.worker_split = [round(100 * part / sum(used)) for part in used]
    if target.name == "mailforge":
        outcome.server_trouble = server_trouble(target.config.parent / "log" / "mailforge.log")
    if opts.verbose:
        print(text[-3000:], file=sys.stderr)
    return outcome


def server_trouble(log: Path) -> list[str]:
    """The lines of mailforge's log at WARNING or worse, and the tracebacks' first lines."""
    with log.open(errors="replace") as lines:
        return [line.rstrip("\n") for line in lines if SERVER_TROUBLE.match(line)]


def run_peer(name: str, opts: argparse.Namespace, mbox: Path) -> Outcome:
    users = tuple(f"bench{n}@{peers.BENCH_DOMAIN}" for n in range(1, opts.users + 1))
    starter: AbstractContextManager[peers.Target]
    if name == "mailforge":
        starter = peers.run_mailforge(workers=opts.workers, service="imap", users=users,
                                      max_threads=opts.threads,
                                      extra={"imap": {"reuse_port": not opts.shared_socket}})
    elif name == "dovecot":
        starter = peers.dovecot_in(opts.data_dir, peers.run_dovecot(
            peers.anchors_dir(opts.anchors), opts.users, (), service="imap"))
    else:
        raise SystemExit(f"unknown peer {name!r}")
    try:
        with starter as target:
            return stress(Path(opts.imaptest), target, opts, mbox)
    except (peers.PeerUnavailable, RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return Outcome(name, failure=f"{exc.__class__.__name__}: {exc}")


def mailforge_rates(outcomes: list[Outcome]) -> dict[int, float]:
    """mailforge's ops/s in each round, the base of that round's ratios."""
    return {o.round: o.rate for o in outcomes if o.peer == "mailforge" and o.rate}


def ratios(outcomes: list[Outcome]) -> dict[str, list[float]]:
    """Each other peer's ops/s over mailforge's of the same round, round by round."""
    base = mailforge_rates(outcomes)
    found: dict[str, list[float]] = {}
    for o in outcomes:
        if o.peer != "mailforge" and o.rate and o.round in base:
            found.setdefault(o.peer, []).append(o.rate / base[o.round])
    return found


def run_rounds(opts: argparse.Namespace, mbox: Path) -> list[Outcome]:
    """Every peer once a round, the order turned round each time (A B, B A, ...)."""
    names = opts.peers.split(",")
    outcomes = []
    for number in range(1, opts.rounds + 1):
        for name in names if number % 2 else names[::-1]:
            outcome = run_peer(name, opts, mbox)
            outcome.round = number
            outcomes.append(outcome)
    return outcomes


def report(outcomes: list[Outcome], opts: argparse.Namespace) -> None:
    base = mailforge_rates(outcomes)
    profile = ("logout=0, counted once every client is logged in" if opts.logout0
               else "default profile (LOGOUT and LOGIN again)")
    table = Table(title=f"imaptest stress, {opts.users} users, {opts.clients} clients, "
                        f"{opts.secs} s, {profile}; mailforge IMAP workers {opts.workers}"
                        f"{' on one shared socket' if opts.shared_socket else ''}")
    for column in ("peer", "round", "commands", "ops/s", "error lines", "our log: warnings+",
                   "server CPU ms/op",
                   "of it, user", "× mailforge", "workers' CPU %"):
        table.add_column(column, justify="left" if column == "peer" else "right")
    for o in outcomes:
        if o.failure:
            table.add_row(o.peer, str(o.round), *["-"] * 8)
            continue
        table.add_row(o.peer, str(o.round), f"{o.commands:,}", f"{o.rate:,.0f}",
                      str(len(o.errors or [])),
                      "-" if o.server_trouble is None else str(len(o.server_trouble)),
                      f"{1000 * o.cpu_seconds / o.commands:.2f}" if o.commands else "-",
                      f"{1000 * o.user_seconds / o.commands:.2f}" if o.commands else "-",
                      f"{o.rate / base[o.round]:.2f}" if o.round in base else "-",
                      "/".join(map(str, o.worker_split)) if o.worker_split else "-")
    console = Console(width=max(Console().width, 110))  # the table whole, even in a log
    console.print(table)
    if opts.rounds > 1:
        for peer, found in ratios(outcomes).items():
            console.print(f"{peer} / mailforge over {len(found)} rounds: median "
                          f"{statistics.median(found):.2f} ({min(found):.2f}–{max(found):.2f})")
    for o in outcomes:
        if o.failure:
            console.print(f"{o.peer}: failed: {o.failure}")
        for line in [*(o.errors or [])[:10], *(o.server_trouble or [])[:10]]:
            console.print(f"{o.peer}: {line}", markup=False)


def probability(word: str) -> str:
    """One of imaptest's probabilities (`fetch=0`, `append=100,5`: the second, of again)."""
    if not PROBABILITY.fullmatch(word):
        raise argparse.ArgumentTypeError(f"{word!r} is not COMMAND=PERCENT (like fetch=0)")
    return word


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.imaptest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--imaptest", default=str(DEFAULT_IMAPTEST),
                        help="the imaptest binary (default %(default)s)")
    parser.add_argument("--secs", type=int, default=60, help="seconds of load per peer")
    parser.add_argument("--logout0", action="store_true",
                        help="logout=0: clients stay logged in (no LOGIN in the loop)")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--messages", type=int, default=200, help="messages in the mbox")
    parser.add_argument("--size", type=int, default=2048, help="bytes per message")
    parser.add_argument("--workers", type=int, default=2, help="mailforge IMAP workers")
    parser.add_argument("--threads", type=int, default=None,
                        help="each mailforge IMAP worker's pool threads (max_threads; "
                             "default: what `mailforge init` writes)")
    parser.add_argument("--shared-socket", action="store_true",
                        help="mailforge's IMAP workers share one listening socket "
                             "(reuse_port = false, the default in a config)")
    parser.add_argument("--peers", default="mailforge,dovecot")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the peers this many times, in alternating order")
    parser.add_argument("--anchors", default=None)
    peers.add_data_dir_option(parser)
    parser.add_argument("--verbose", action="store_true", help="show imaptest's output")
    parser.add_argument("profile", nargs="*", metavar="COMMAND=PERCENT", type=probability,
                        help="imaptest's own probabilities, to load a part of the profile "
                             "(append=0 copy=0 expunge=0 delete=0: no writes)")
    opts = parser.parse_args(argv)
    if not Path(opts.imaptest).exists():
        parser.error(f"no imaptest at {opts.imaptest} (bench/README.md says how to build it)")
    if opts.rounds < 1:
        parser.error("--rounds takes 1 or more")
    if opts.users > peers.DOVECOT_USERS:
        parser.error(f"at most {peers.DOVECOT_USERS} users (the Dovecot anchor's)")
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    peers.raise_nofile(4 * opts.clients + 256)
    opts.data_dir = peers.keep_mail_in(opts.data_dir)  # mailforge's store, and the mbox
    with tempfile.TemporaryDirectory(prefix="imaptest-bench-") as tmp:
        mbox = Path(tmp) / "bench.mbox"
        write_mbox(mbox, opts.messages, opts.size)
        outcomes = run_rounds(opts, mbox)
    report(outcomes, opts)
    return 0 if all(not o.failure for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
