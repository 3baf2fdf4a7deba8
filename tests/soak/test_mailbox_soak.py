"""IMAP and POP3 soak (issue 21): many IMAP clients and a few POP3 ones for SECONDS; no error
line, no ERROR or traceback in our log, the same workers at the end, and flat worker memory.

The IMAP load is Dovecot's imaptest stress where it is built (MAILFORGE_IMAPTEST, else
/tmp/imaptest/src/imaptest; bench/README.md says how), whose state tracking turns any wrong
untagged response into an error line; else bench.imap_load's client cycle (every tagged reply
must be OK). Worker RSS is sampled every SAMPLE_EVERY seconds from the first sample after the
warm-up; a soak of MEMORY_CHECK_SECONDS or more must stay under MAX_GROWTH, a shorter run
(the smoke in `make test`) only reports it: its memory has not settled yet.
"""

from __future__ import annotations

import asyncio
import os
import poplib
import subprocess
import threading
import time
from pathlib import Path

from bench import load, peers
from bench.imap_load import imap_client
from bench.imaptest import ERROR_LINE, write_mbox
from mailforge.auth.accounts import Accounts
from mailforge.process import privileges
from mailforge.store.maildir import ensure_maildir, mailbox_path
from tests.system.conftest import DOMAIN, PASSWORD

from .conftest import SECONDS
from .test_soak import tracebacks, trouble_ended

IMAPTEST = Path(os.environ.get("MAILFORGE_IMAPTEST", "/tmp/imaptest/src/imaptest"))
# The soak: 50 IMAP clients, each its own user; the smoke makes do with fewer.
IMAP_CLIENTS = 50 if SECONDS >= 60 else 8
POP3_CLIENTS = 4
MESSAGES = 50  # in every mailbox at the start
PREFILLED_SERIALS = 10**6
SAMPLE_EVERY = min(60.0, max(1.0, SECONDS / 5))
MEMORY_CHECK_SECONDS, MAX_GROWTH = 300.0, 0.10


def add_users(server, addresses: list[str]) -> None:
    """Mailboxes as `user add` makes them, each holding MESSAGES messages in new/."""
    config = server.config
    owner = (privileges.resolve(config.server.user, config.server.group)
             if os.geteuid() == 0 and config.server.user else None)
    # Serials of their own: imaptest checks that messages with one Message-ID have the same
    # BODY and size everywhere, and the mbox it APPENDs from is made with serials from 0.
    mail = [load.maildir_message(PREFILLED_SERIALS + n, 2048) for n in range(MESSAGES)]
    with Accounts(config.accounts_db) as accounts:
        for address in addresses:
            accounts.directory.user_add(address, PASSWORD)
            maildir = ensure_maildir(mailbox_path(config.store_dir, address))
            peers.fill_maildir(maildir, mail, owner=owner)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def pop3_client(server, user: str, stop: threading.Event, failures: list[str]) -> None:
    """Log in, STAT, RETR the first three, QUIT, over and over until `stop`."""
    while not stop.is_set():
        try:
            client = poplib.POP3("127.0.0.1", server.pop3_port, timeout=30)
            client.user(user)
            client.pass_(PASSWORD)
            count, _ = client.stat()
            for number in range(1, min(count, 3) + 1):
                client.retr(number)
            client.quit()
        except (poplib.error_proto, OSError) as exc:
            failures.append(f"{user}: {exc!r}")
            time.sleep(0.2)


def imaptest_load(server, users: int, mbox: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(IMAPTEST), "host=127.0.0.1", f"port={server.imap_port}", f"user=imap%d@{DOMAIN}",
         f"pass={PASSWORD}", f"users={users}", f"clients={users}", f"secs={max(1, int(SECONDS))}",
         f"mbox={mbox}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
        env=dict(os.environ, LD_LIBRARY_PATH="/usr/lib/dovecot"))


class OwnLoad(threading.Thread):
    """bench.imap_load's clients, each its own user, until `stop`."""

    def __init__(self, server, users: list[str], stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.server, self.users, self.stop = server, users, stop
        self.stats = load.Stats()

    def run(self) -> None:
        target = peers.Target("mailforge", "127.0.0.1", self.server.imap_port, self.users[0],
                              self.server.pid, None, self.server.conf, "", tuple(self.users),
                              PASSWORD)
        tickets = load.Tickets(10**9, time.monotonic() + SECONDS + 60)
        message = load.maildir_message(10**6, 2048).replace(b"\n", b"\r\n")

        async def clients() -> None:
            async def until_stopped() -> None:
                while not self.stop.is_set():
                    await asyncio.sleep(0.1)
                tickets.left = 0

            await asyncio.gather(until_stopped(), *(
                imap_client(target, user, tickets, self.stats, message, seed)
                for seed, user in enumerate(self.users)))

        asyncio.run(clients())


def test_mailbox_soak(make_server, tmp_path):
    """IMAP_CLIENTS IMAP clients and POP3_CLIENTS POP3 clients for SECONDS: no error line, no
    ERROR or traceback logged, no worker restarted, worker memory flat."""
    server = make_server(imap_services=True, pop3_services=True,
                         imap={"workers": 2, "max_connections": 500, "max_connections_per_ip": 500},
                         pop3={"workers": 1, "max_connections_per_ip": 100},
                         server={"allow_plaintext_auth": True})
    imap_users = [f"imap{n}@{DOMAIN}" for n in range(1, IMAP_CLIENTS + 1)]
    pop3_users = [f"pop{n}@{DOMAIN}" for n in range(1, POP3_CLIENTS + 1)]
    add_users(server, imap_users + pop3_users)
    server.start()
    workers = {service: server.worker_pids(service) for service in ("imap", "pop3")}
    stop = threading.Event()
    pop3_failures: list[str] = []
    pop3 = [threading.Thread(target=pop3_client, args=(server, user, stop, pop3_failures),
                             daemon=True) for user in pop3_users]
    imaptest = None
    own = None
    if IMAPTEST.exists():
        mbox = tmp_path / "soak.mbox"
        write_mbox(mbox, 200, 2048)
        imaptest = imaptest_load(server, IMAP_CLIENTS, mbox)
    else:
        own = OwnLoad(server, imap_users, stop)
        own.start()
    for thread in pop3:
        thread.start()
    pids = [pid for group in workers.values() for pid in group]
    samples: list[dict[int, int]] = []
    try:
        end = time.monotonic() + SECONDS
        while time.monotonic() < end:
            trouble_ended(server, min(SAMPLE_EVERY, max(0.0, end - time.monotonic())))
            samples.append({pid: rss_kib(pid) for pid in pids})
    finally:
        stop.set()
        for thread in pop3:
            thread.join(60)
        output = imaptest.communicate(timeout=120)[0] if imaptest else ""
        if own is not None:
            own.join(60)
    errors = [line for line in output.splitlines() if ERROR_LINE.match(line)]
    if own is not None:
        errors += [f"{kind}: {n}" for kind, n in own.stats.error_kinds.items()]
    growth = {pid: samples[-1][pid] / samples[0][pid] - 1 for pid in pids} if samples else {}
    summary = (f"{'imaptest' if imaptest else 'bench.imap_load'}, {IMAP_CLIENTS} IMAP and "
               f"{POP3_CLIENTS} POP3 clients, {SECONDS:.0f} s; RSS growth "
               + ", ".join(f"{pid}: {g:+.1%}" for pid, g in growth.items()))
    print(summary)
    assert imaptest is None or imaptest.returncode == 0, f"imaptest failed: {output[-3000:]}"
    assert errors == [], f"{summary}\n" + "\n".join(errors[:20])
    assert pop3_failures == [], f"{summary}\n{pop3_failures[:10]}"
    log = server.log()
    assert " ERROR " not in log and tracebacks(log) == [], f"{summary}\n{log[-6000:]}"
    assert {s: server.worker_pids(s) for s in workers} == workers, f"a worker died: {summary}"
    if SECONDS >= MEMORY_CHECK_SECONDS:
        grown = {pid: g for pid, g in growth.items() if g > MAX_GROWTH}
        assert not grown, f"worker memory grew over {MAX_GROWTH:.0%}: {summary}"
