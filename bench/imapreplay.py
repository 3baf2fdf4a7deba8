"""imaptest's command mix replayed in one process, straight into the IMAP state machine over
the real Maildir store: CPU per command with no socket, no thread pool and no other process,
so that a change to the command paths shows in one run (imaptest's own figures swing with the
host from one run to the next).

    python -m bench.imapreplay [--users 10] [--messages 200] [--commands 20000] [--seed 1]
        [--profile FILE] [--no-sync]

The mix follows imaptest's default profile under `logout=0` (FETCH of up to 100 messages'
fields and header fields, a single message's header or body, STORE of flags and of
\\Deleted, EXPUNGE, APPEND, LIST, STATUS; COPY by `--mix`), each user with its own session
and INBOX. `--profile FILE` writes cProfile's statistics of the replay;
`--no-sync` makes fsync and fdatasync no-ops, to see the commands' own cost.
"""

from __future__ import annotations

import argparse
import cProfile
import collections
import os
import random
import tempfile
import time
from pathlib import Path

from mailforge.auth.api import StoreSettings
from mailforge.protocols.imap.state import Blocking, IMAPMachine, IMAPSettings
from mailforge.protocols.imap.summary import SUMMARIZER
from mailforge.protocols.session import Action
from mailforge.speedups import CommandParser
from mailforge.store.folders import open_mailbox

from .load import maildir_message

PASSWORD = "secret"
FIELDS = ("UID", "FLAGS", "ENVELOPE", "INTERNALDATE", "BODY", "BODYSTRUCTURE", "RFC822.SIZE")
HEADER_FIELDS = ("From", "To", "Cc", "Subject", "References", "In-Reply-To", "Message-ID")
BODY_ITEMS = ("BODY.PEEK[HEADER]", "RFC822.HEADER", "BODY.PEEK[]", "BODY.PEEK[1]",
              "BODY.PEEK[TEXT]")
FLAGS = ("\\Seen", "\\Flagged", "\\Answered", "\\Draft", "$Label1", "$Label2")
# Shares of the commands imaptest sends under `logout=0` (its Totals line of a 15 s run:
# List 9,045, Stat 9,055, Fetc 17,951, Fet2 25,575, Stor 7,318, Dele 9,173, Expu 17,968,
# Appe 10,368; no COPY), per 100. COPY is there for `--mix`.
MIX = {"fetch": 17, "fetch2": 24, "store": 7, "delete": 9, "expunge": 17, "append": 10,
       "copy": 0, "list": 8, "status": 8}


class Accounts:
    def check_password(self, address: str, password: str) -> bool:
        return password == PASSWORD


class Settings:
    def store_settings(self, address: str) -> StoreSettings:
        return StoreSettings()  # no quota, no public folders


class Session:
    def __init__(self, store: Path, user: str) -> None:
        settings = IMAPSettings("bench.test", tls_available=False, allow_plaintext_auth=True,
                                max_append=10 * 1024 * 1024)
        self.machine = IMAPMachine(settings, Accounts(),
                                   lambda address: open_mailbox(store, Settings(), address,
                                                                summarizer=SUMMARIZER))
        self.parser = CommandParser(max_literal=10 * 1024 * 1024)
        self.send(f"a LOGIN {user} {PASSWORD}\r\n".encode())

    def send(self, data: bytes) -> bytes:
        out = []
        while data:
            command, used = self.parser.feed(data)
            data = data[used:]
            if command is None:
                continue
            # As the driver does (protocols/imapd.py): on the loop where it may, else (or
            # when the loop gives it back) as the pool would run it.
            machine = self.machine
            reply = None if machine.runs_in_thread(command) else machine.handle_on_loop(command)
            while isinstance(reply, Blocking):  # a sync the driver would run in the pool
                reply.step()
                reply = machine.resume_on_loop(reply, None)
            if reply is None:
                reply = machine.handle(command)
            if reply.action is Action.OPEN_MAILDROP:
                reply = self.machine.mailbox_opened()
            out.append(reply.text)
        return b"".join(out)

    @property
    def exists(self) -> int:
        selected = self.machine.selected
        return len(selected.folder.messages()) if selected is not None else 0


def command(kind: str, session: Session, rng: random.Random, message: bytes) -> bytes:
    count = session.exists
    if kind == "append":
        return b"x APPEND INBOX {%d+}\r\n%s\r\n" % (len(message), message)
    if kind == "list":
        return b'x LIST "" *\r\n'
    if kind == "status":
        return b"x STATUS INBOX (MESSAGES UNSEEN RECENT)\r\n"
    if kind == "expunge":
        return b"x EXPUNGE\r\n"
    if not count:
        return b"x NOOP\r\n"
    if kind == "fetch":
        first = rng.randint(1, count)
        last = min(count, first + rng.randint(0, 99))
        items = []
        for _ in range(rng.randint(1, 4)):
            if rng.randint(0, 3):
                items.append(rng.choice(FIELDS))
            else:
                names = " ".join(rng.choice(HEADER_FIELDS) for _ in range(rng.randint(1, 4)))
                items.append(f"BODY.PEEK[HEADER.FIELDS ({names})]")
        return f"x FETCH {first}:{last} ({' '.join(items)})\r\n".encode()
    if kind == "fetch2":
        return f"x FETCH {rng.randint(1, count)} (UID {rng.choice(BODY_ITEMS)})\r\n".encode()
    if kind == "store":
        flags = " ".join(rng.sample(FLAGS, rng.randint(1, 3)))
        sign = rng.choice("+-")
        return f"x STORE {rng.randint(1, count)} {sign}FLAGS ({flags})\r\n".encode()
    if kind == "delete":
        first = rng.randint(1, count)
        return f"x STORE {first}:{min(count, first + rng.randint(0, 2))} +FLAGS \\Deleted\r\n".encode()
    first = rng.randint(1, count)
    return f"x COPY {first}:{min(count, first + 1)} INBOX\r\n".encode()


def mix_of(text: str) -> dict[str, int]:
    shares = {}
    for word in text.split(","):
        kind, _, weight = word.partition("=")
        if kind not in MIX or not weight.isdigit():
            raise argparse.ArgumentTypeError(f"{word!r}: not kind=weight with a kind of {list(MIX)}")
        shares[kind] = int(weight)
    return shares


def replay(opts: argparse.Namespace, store: Path) -> dict[str, list[float]]:
    users = [f"replay{n}@bench.test" for n in range(1, opts.users + 1)]
    messages = [maildir_message(serial, 2048).replace(b"\n", b"\r\n") for serial in range(200)]
    sessions = [Session(store, user) for user in users]
    for session in sessions:
        for serial in range(opts.messages):
            session.send(b"x APPEND INBOX {%d+}\r\n%s\r\n" % (len(messages[serial % 200]),
                                                             messages[serial % 200]))
        session.send(b"x SELECT INBOX\r\n")
    rng = random.Random(opts.seed)
    kinds, weights = zip(*opts.mix.items())
    costs: dict[str, list[float]] = collections.defaultdict(list)
    for n in range(opts.commands):
        session = rng.choice(sessions)
        kind = rng.choices(kinds, weights)[0]
        line = command(kind, session, rng, messages[n % 200])
        started = time.process_time()
        reply = session.send(line)
        costs[kind].append(time.process_time() - started)
        if b"x OK" not in reply and b"x NO" not in reply:
            raise SystemExit(f"{line[:80]!r} -> {reply[-200:]!r}")
    return costs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.imapreplay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--messages", type=int, default=30, help="messages in each INBOX at the start")
    parser.add_argument("--commands", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", help="write cProfile statistics here")
    parser.add_argument("--no-sync", action="store_true", help="fsync and fdatasync do nothing")
    parser.add_argument("--mix", type=mix_of, default=MIX,
                        help="the shares of the commands, as kind=weight,... (default %(default)s)")
    opts = parser.parse_args(argv)
    if opts.no_sync:
        os.fsync = os.fdatasync = lambda fd: None
    with tempfile.TemporaryDirectory(prefix="mailforge-replay-") as tmp:
        profiler = cProfile.Profile() if opts.profile else None
        if profiler is not None:
            profiler.enable()
        costs = replay(opts, Path(tmp))
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(opts.profile)
    total = sum(sum(values) for values in costs.values())
    commands = sum(len(values) for values in costs.values())
    print(f"{commands} commands, {1e6 * total / commands:.1f} µs of CPU per command")
    for kind, values in sorted(costs.items(), key=lambda item: -sum(item[1])):
        print(f"  {kind:8} {len(values):6}  {1e6 * sum(values) / len(values):8.1f} µs"
              f"  {100 * sum(values) / total:5.1f}% of the CPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
