"""Sessions racing on one folder: flags live in the Maildir file name, so a STORE in one
session renames the file that a FETCH (or COPY, or POP3's RETR) in another is about to open.
A message that still exists must always be read; only one that is gone may answer
[EXPUNGEISSUED] (RFC 5530)."""

from __future__ import annotations

import fcntl
import os
import poplib
import re
import select
import threading
import time

import pytest

from .conftest import PASSWORD, USER
from .imap_helpers import RawSession, fill, login, message

MESSAGES = 5
# Bounded either way: enough rounds for the renames to land between a lookup and an open.
ROUNDS = 200
SECONDS = 10.0


@pytest.fixture
def race_server(make_server):
    # Two IMAP workers: the sessions run in different processes, truly at the same time.
    server = make_server(imap_services=True, pop3_services=True,
                         server={"allow_plaintext_auth": True}, imap={"workers": 2})
    server.start()
    return server


def flip_flags(server, stop: threading.Event, errors: list[str]) -> None:
    """Rename every message over and over: +FLAGS then -FLAGS \\Seen, alternately."""
    client = login(server)
    client.select("INBOX")
    add = True
    while not stop.is_set():
        typ, data = client.store(f"1:{MESSAGES}", "+FLAGS" if add else "-FLAGS", r"(\Seen)")
        if typ != "OK":
            errors.append(f"STORE: {typ} {data}")
        add = not add
    client.logout()


def racing(server, body) -> list[str]:
    """Run `body(round)` in rounds while another session flips flags; the failures seen."""
    errors: list[str] = []
    stop = threading.Event()
    flipper = threading.Thread(target=flip_flags, args=(server, stop, errors))
    flipper.start()
    try:
        deadline = time.monotonic() + SECONDS
        for round_ in range(ROUNDS):
            if time.monotonic() > deadline:
                break
            body(round_, errors)
    finally:
        stop.set()
        flipper.join(30)
    return errors


def test_fetch_reads_every_message_while_another_session_renames_them(race_server):
    client = login(race_server)
    fill(client, MESSAGES)
    client.select("INBOX")

    def fetch_all(round_: int, errors: list[str]) -> None:
        typ, data = client.fetch(f"1:{MESSAGES}", "(BODY[])")
        bodies = [part[1] for part in data if isinstance(part, tuple)]
        if typ != "OK":
            errors.append(f"round {round_}: FETCH {typ} {data}")
        elif bodies != [message(n) for n in range(MESSAGES)]:
            errors.append(f"round {round_}: bodies {bodies}")

    errors = racing(race_server, fetch_all)
    client.logout()
    assert errors == []
    assert "FileNotFoundError" not in race_server.log() and "Traceback" not in race_server.log()


def test_copy_copies_every_message_while_another_session_renames_them(race_server):
    client = login(race_server)
    fill(client, MESSAGES)
    client.create("Copies")
    client.select("INBOX")

    def copy_all(round_: int, errors: list[str]) -> None:
        typ, data = client.copy(f"1:{MESSAGES}", "Copies")
        if typ != "OK":
            errors.append(f"round {round_}: COPY {typ} {data}")

    errors = racing(race_server, copy_all)
    assert errors == []
    copied = int(client.select("Copies")[1][0])
    assert copied % MESSAGES == 0 and copied > 0
    typ, data = client.fetch(f"1:{MESSAGES}", "(BODY.PEEK[])")
    assert [part[1] for part in data if isinstance(part, tuple)] == \
        [message(n) for n in range(MESSAGES)]
    client.logout()


def test_pop3_retr_reads_messages_that_imap_renames_meanwhile(race_server):
    client = login(race_server)
    fill(client, MESSAGES)
    client.logout()
    pop = poplib.POP3("127.0.0.1", race_server.pop3_port, timeout=20)
    pop.user(USER)
    pop.pass_(PASSWORD)

    def retr_all(round_: int, errors: list[str]) -> None:
        bodies = []
        for n in range(1, MESSAGES + 1):
            try:
                bodies.append(b"\r\n".join(pop.retr(n)[1]) + b"\r\n")
            except poplib.error_proto as exc:
                errors.append(f"round {round_}: RETR {n}: {exc}")
        # POP3 lists in arrival order; messages that arrived in the same second in any order.
        if sorted(bodies) != [message(n) for n in range(MESSAGES)]:
            errors.append(f"round {round_}: RETR gave {bodies}")

    errors = racing(race_server, retr_all)
    pop.quit()
    assert errors == []


def expunged_by_another_session(server) -> RawSession:
    """A session with INBOX selected whose message 2 another session has just expunged (and
    that has not been told yet)."""
    client = login(server)
    fill(client, 3)
    client.create("Target")
    watcher = RawSession(server.imap_port)
    watcher.login()
    assert watcher.command(b"S", b"SELECT INBOX")[-1].startswith(b"S OK [READ-WRITE]")
    client.select("INBOX")
    client.store("2", "+FLAGS", r"(\Deleted)")
    client.expunge()
    client.logout()
    return watcher


def test_fetch_of_a_message_expunged_by_another_session_is_expungeissued(race_server):
    watcher = expunged_by_another_session(race_server)
    lines = watcher.command(b"F", b"FETCH 1:3 (BODY.PEEK[])")
    assert re.match(rb"F NO \[EXPUNGEISSUED\] ", lines[-1])
    assert sum(1 for line in lines if re.match(rb"\* \d FETCH \(BODY\[\] \{", line)) == 2
    watcher.close()


@pytest.mark.parametrize("verb", [b"COPY", b"MOVE"])
def test_copy_or_move_of_a_message_expunged_by_another_session_is_expungeissued(
        race_server, verb):
    watcher = expunged_by_another_session(race_server)
    lines = watcher.command(b"C", verb + b" 1:3 Target")
    assert re.match(rb"C NO \[EXPUNGEISSUED\] ", lines[-1])
    # Nothing was copied: a COPY that fails leaves the target as it was (RFC 3501 6.4.7).
    assert b"* 0 EXISTS\r\n" in watcher.command(b"E", b"EXAMINE Target")
    watcher.close()
    assert "UNAVAILABLE" not in race_server.log()


def test_a_folder_lock_held_elsewhere_stalls_only_the_command_that_needs_it(make_server):
    """Commands that sync nothing run on the worker's event loop, where the store waits for no
    lock: while another process holds the folder's lock (as through an APPEND's syncs), a STORE
    goes to the thread pool and waits there, and the worker's other sessions, on the same
    folder, go on being answered; the STORE completes once the lock is free."""
    server = make_server(imap_services=True, server={"allow_plaintext_auth": True})
    server.start()
    writer = RawSession(server.imap_port)
    writer.login()
    writer.command(b"A", b"APPEND INBOX {%d+}\r\n%s" % (len(message(1)), message(1)))
    writer.command(b"S", b"SELECT INBOX")
    reader = RawSession(server.imap_port)
    reader.login()
    reader.command(b"S", b"SELECT INBOX")
    lock = os.open(server.maildir() / "mailforge-uidlist.lock", os.O_RDWR)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        writer.send(b"W STORE 1 +FLAGS (\\Flagged)\r\n")
        for n in range(3):  # one IMAP worker: the reader shares the writer's event loop
            assert reader.command(b"N%d" % n, b"NOOP")[-1] == b"N%d OK NOOP completed\r\n" % n
            assert reader.command(b"F%d" % n, b"FETCH 1 (FLAGS)")[0] == \
                b"* 1 FETCH (FLAGS ())\r\n"
        # The STORE waits for the lock: nothing of its answer yet.
        assert select.select([writer.sock], [], [], 0.3)[0] == []
    finally:
        os.close(lock)  # the flock goes with it
    assert writer.until_tagged(b"W") == [b"* 1 FETCH (FLAGS (\\Flagged \\Recent))\r\n",
                                         b"W OK STORE completed\r\n"]
    assert reader.command(b"N", b"NOOP")[0] == b"* 1 FETCH (FLAGS (\\Flagged))\r\n"
    reader.close()
    writer.close()
