"""Soak cases (issues 21 and 22): SMTP load for SECONDS while workers are killed at random, or
while the data disk fills and empties; afterwards every message that got 250 is delivered
exactly once, and every process is where it should be.

Exactly once, not at least once: these are local deliveries, whose Maildir names are the same
on every attempt (README, "Durable queue" and "Delivery"), so a delivery worker killed between
placing a copy and removing the queue entry must not leave a second copy; tests/system/
test_load.py asserts the same after its single kill. A retried send gets a new Message-ID, so
a message whose 250 was lost to a kill may arrive too (delivered ⊇ accepted), never twice.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import smtplib
import threading
import time
from collections import Counter
from collections.abc import Callable

from tests.ports import free_port
from tests.system.conftest import USER
from tests.system.loadgen import delivered_ids, join, message, run_load
from tests.system.test_faults import scrape, status
from tests.system.test_load import assert_all_delivered

from .conftest import SECONDS, SEED

KILL_INTERVAL = (0.2, 0.5)  # seconds between two kills, drawn uniformly
# The kill storm: 20,000 messages from 20 clients (as many as SECONDS allows), and the whole
# tree killed and started again this many times during it.
CLIENTS, MESSAGES, TREE_KILLS = 20, 20_000, 4
SETTLE = 15.0  # for the slots to be filled again, the queue to drain: far more than either takes
DRAIN = 120.0
# Full-disk cycles: the disk is kept full this long, then free this long.
FULL_HOLD, FREE_HOLD = 1.0, 1.0
BIG = 260 * 1024  # over the spool's SPILL_SIZE (256 KiB): its own .msg + .env files
# The full-disk case's clients, each at most this many messages a second (a pause between
# two), so that what they deliver fits the disk: small ones from three clients (a 4 KiB page
# of the tmpfs each), big ones from a fourth (266 KiB each); at most ~0.45 MB a second.
SMALL_CLIENTS, SMALL_RATE, BIG_RATE = 3, 15, 1
# The disk keeps all the delivered mail (it must: removing a copy would hide a second one):
# 40 MB, and room for what a run of SECONDS can deliver (0.6 MB a second: the clients' most,
# and a margin). It takes that much memory once filled.
DISK_MB = 40 + math.ceil(0.6 * SECONDS)
LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ \S+\[\d+\] ")  # time logger[pid]


def trouble_ended(server, seconds: float) -> None:
    """Sleep `seconds` (the soak), failing early if the supervisor dies meanwhile."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert server.proc.poll() is None, \
            f"the supervisor died (seed {SEED}); log:\n{server.log()[-4000:]}"
        time.sleep(min(0.2, max(0.0, end - time.monotonic())))


def settle(condition: Callable[[], bool], timeout: float, why: Callable[[], str]) -> None:
    """Wait for `condition`; past `timeout`, fail with `why()` (asked only then)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{why()} (seed {SEED})")
        time.sleep(0.05)


def live_slots(server, kinds: dict[str, int]) -> bool:
    """Has every slot of each kind ("smtp", "delivery") a ready worker that is running?"""
    try:
        answer = status(server)
    except (OSError, ValueError):
        return False  # the supervisor is busy: ask again
    children = set(server.children())
    for kind, count in kinds.items():
        workers = answer["delivery"] if kind == "delivery" else answer["services"][kind]["workers"]
        slots = {w["slot"] for w in workers
                 if w["ready"] and not w["retiring"] and w["pid"] in children}
        if slots != set(range(count)):
            return False
    rk = answer["ratekeeper"]
    return rk["state"] == "running" and rk["pid"] in children


def queued(server) -> list[str]:
    """What the queue still holds for delivery: entries, sealed segments, segments with records."""
    queue = server.config.queue_dir
    names = [p.name for p in (queue / "active").iterdir()]
    for path in (queue / "segments").iterdir():
        try:
            if path.stat().st_size:
                names.append(path.name)
        except FileNotFoundError:
            pass  # sealed meanwhile
    return names


def drain(server, accepted: set[str]) -> None:
    """Wait until the queue is empty and every accepted message delivered, then check that
    each was delivered exactly once (naming the duplicates' files if not)."""
    settle(lambda: not queued(server), DRAIN,
           lambda: f"queue never drained: {queued(server)[:5]}; log:\n{server.log()[-3000:]}")
    paths = server.delivered()
    copies = Counter(delivered_ids(paths))
    twice = sorted(msgid for msgid, n in copies.items() if n > 1)
    if twice:
        files = [p.name for p in paths if delivered_ids([p]) == twice[:1]]
        raise AssertionError(f"{len(twice)} messages delivered more than once (seed {SEED}); "
                             f"{twice[0]} as {files}")
    assert_all_delivered(server, accepted, exactly_once=False)


def tracebacks(log: str) -> list[str]:
    """The first line of each log record that carries a traceback."""
    found, record = [], ""
    for line in log.splitlines():
        if LOG_RECORD.match(line):
            record = line
        elif line.startswith("Traceback") and record:
            found.append(record)
            record = ""
    return found


def send_one(server, name: str) -> str:
    """One message on a connection of its own; its Message-ID (asserted accepted)."""
    msgid = f"{name}@soak.test"
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        assert client.sendmail("load@remote.test", [USER], message(msgid)) == {}
    return msgid


def restarts(text: str) -> int:
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("mailforge_worker_restarts_total{")))


class Killer(threading.Thread):
    """SIGKILLs a random ready SMTP worker, delivery worker or the rate-keeper every 0.2-0.5 s
    until `stop`; each victim is a child of this test's supervisor, and no pid is killed twice.
    Holding `paused` keeps it from killing (while the whole tree is killed and started again)."""

    def __init__(self, server, rng, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.server, self.rng, self.stop = server, rng, stop
        self.paused = threading.Lock()
        self.kills: Counter = Counter()
        self.since_start = 0  # kills since the supervisor last started: its restart count
        self.killed: set[int] = set()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for _ in range(int(SECONDS / KILL_INTERVAL[0]) + 1):
                if self.stop.wait(self.rng.uniform(*KILL_INTERVAL)):
                    return
                with self.paused:
                    self.kill_one()
        except BaseException as exc:  # noqa: BLE001  (reported by the test)
            self.error = exc

    def kill_one(self) -> None:
        try:
            answer = status(self.server)
        except (OSError, ValueError, AssertionError):
            return  # the supervisor is busy restarting: next time
        workers = [("smtp", w) for w in answer["services"]["smtp"]["workers"]]
        workers += [("delivery", w) for w in answer["delivery"]]
        children = set(self.server.children())
        victims = [(kind, w["pid"]) for kind, w in workers
                   if w["ready"] and not w["retiring"] and w["pid"] in children
                   and w["pid"] not in self.killed]
        rk = answer["ratekeeper"]
        if rk["state"] == "running" and rk["pid"] in children and rk["pid"] not in self.killed:
            victims.append(("ratekeeper", rk["pid"]))
        if not victims:
            return
        kind, pid = self.rng.choice(victims)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        self.killed.add(pid)
        self.kills[kind] += 1
        self.since_start += 1

    def kill_tree(self, slots: dict[str, int]) -> None:
        """kill -9 of the supervisor and all its children at once, then a new start."""
        with self.paused:
            self.server.kill_tree()
            self.kills["tree"] += 1
            self.server.start()
            self.since_start = 0
            settle(lambda: live_slots(self.server, slots), SETTLE,
                   lambda: f"workers never ready after a tree kill:\n{self.server.log()[-3000:]}")


def test_kill_storm(make_server, rng):
    """CLIENTS clients (five messages a connection) while a protocol worker, a delivery worker
    or the rate-keeper is killed every 0.2-0.5 s, and the whole tree TREE_KILLS times (then
    started again); then the slots fill again, the queue drains, nothing is lost or doubled."""
    port = free_port()
    server = make_server(smtp={"workers": 2}, delivery={"workers": 2},
                         metrics={"listen": f"127.0.0.1:{port}"})
    server.start()
    slots = {"smtp": 2, "delivery": 2}
    settle(lambda: live_slots(server, slots), SETTLE, lambda: "workers never ready")
    children = len(server.children())
    stop_load, stop_kills = threading.Event(), threading.Event()
    result, clients = run_load(server.port, clients=CLIENTS, messages=MESSAGES // CLIENTS,
                               timeout=SECONDS + 60, per_connection=5, stop=stop_load)
    killer = Killer(server, rng, stop_kills)
    killer.start()
    try:
        for _ in range(TREE_KILLS):
            trouble_ended(server, SECONDS / (TREE_KILLS + 1))
            killer.kill_tree(slots)
        trouble_ended(server, SECONDS / (TREE_KILLS + 1))
    finally:
        stop_kills.set()
        killer.join(10)
        stop_load.set()
        join(clients, 60)
    summary = (f"seed {SEED}: {len(result.accepted)} accepted, {result.failed} failed "
               f"{dict(result.errors)}, kills {dict(killer.kills)}")
    print(summary)
    assert killer.error is None, f"the killer failed: {killer.error!r}"
    assert sum(killer.kills.values()) >= SECONDS / 2, f"too few kills: {summary}"
    assert killer.kills["tree"] == TREE_KILLS, summary
    assert result.accepted, f"nothing accepted: {summary}"
    settle(lambda: live_slots(server, slots), SETTLE,
           lambda: f"a slot stayed empty ({summary}):\n{server.log()[-3000:]}")
    accepted = result.accepted | {send_one(server, "after-storm")}
    drain(server, accepted)
    assert server.proc.poll() is None, f"the supervisor died: {summary}"
    assert len(server.children()) == children, f"children: {server.children()} ({summary})"
    assert restarts(scrape(port)) == killer.since_start, \
        f"restarts other than the kills: {summary}\n{server.log()[-3000:]}"
    # A SIGKILLed process writes nothing: a traceback here is a survivor's.
    assert tracebacks(server.log()) == [], f"{summary}\n{server.log()[-6000:]}"


def small(msgid: str, n: int) -> bytes:
    """300 octets to 3 KB: a segment record."""
    return message(msgid, n % 11 * 300)


def big(msgid: str, n: int) -> bytes:
    """260-266 KiB: files of its own."""
    return message(msgid, BIG + n % 7 * 1024)


def test_full_disk_cycles(small_disk_factory, make_server, tmp_path):
    """Three clients of small messages and one of >256 KiB ones while the data disk is filled to
    the last block for a second, then freed for a second, over and over: while full they get
    4xx (never 5xx) and retry; afterwards every accepted message is delivered exactly once and
    no process has died."""
    disk = small_disk_factory(DISK_MB)
    port = free_port()
    server = make_server(root=disk.path, smtp={"workers": 2},
                         delivery={"workers": 2, "retry_schedule": [0.5]},
                         metrics={"listen": f"127.0.0.1:{port}"})
    # The log lives off the small disk, so that what is logged while it is full is kept.
    shutil.move(server.dir / "log", tmp_path / "log")
    (server.dir / "log").symlink_to(tmp_path / "log")
    server.start()
    settle(lambda: live_slots(server, {"smtp": 2, "delivery": 2}), SETTLE,
           lambda: "workers never ready")
    children = set(server.children())
    stop = threading.Event()
    options = dict(timeout=SECONDS + 60, per_connection=5, stop=stop, retry_pause=0.2)
    result, clients = run_load(server.port, SMALL_CLIENTS, int(SECONDS * SMALL_RATE) + 20,
                               prefix="small", make_message=small, pause=1 / SMALL_RATE, **options)
    big_result, big_clients = run_load(server.port, 1, int(SECONDS * BIG_RATE) + 5, prefix="big",
                                       make_message=big, pause=1 / BIG_RATE, **options)
    cycles = 0
    try:
        end = time.monotonic() + SECONDS
        while time.monotonic() < end:
            disk.fill()
            trouble_ended(server, FULL_HOLD)
            disk.free()
            trouble_ended(server, FREE_HOLD)
            cycles += 1
    finally:
        disk.free()
        stop.set()
        join(clients + big_clients, 60)
    summary = (f"{cycles} cycles: small {len(result.accepted)} accepted, {result.failed} failed "
               f"{dict(result.errors)}; big {len(big_result.accepted)} accepted, "
               f"{big_result.failed} failed {dict(big_result.errors)}; "
               f"disk {DISK_MB} MB, {disk.available() >> 20} MB free")
    print(summary)
    for load in (result, big_result):
        assert load.accepted, f"nothing accepted: {summary}"
        assert load.errors, f"the disk was never full for a send: {summary}"
        # Nothing is killed here: a send that failed was answered 4xx, not 5xx, not dropped.
        assert all(why.startswith("4") for why in load.errors), f"not a 4xx: {summary}"
    accepted = result.accepted | big_result.accepted | {send_one(server, "after-full")}
    drain(server, accepted)
    assert server.proc.poll() is None, f"the supervisor died: {summary}"
    assert set(server.children()) == children, f"children died: {summary}\n{server.log()[-3000:]}"
    assert not list((server.config.queue_dir / "incoming").iterdir()), "files left in incoming/"
    text = scrape(port)
    assert 'mailforge_messages_delivered_total{via="local"}' in text
    assert restarts(text) == 0, summary
    log = server.log()
    # A full disk is said in one line where it is met, never with a traceback.
    assert tracebacks(log) == [], f"{summary}\n{tracebacks(log)[:5]}\n{log[-6000:]}"
