"""Stand-ins for the supervisor's children, and a driver that runs the supervisor with them.

Run as `python -c "from tests.unit.supervisor_helpers import main; main()" CONFIG WORKER`, in a
subprocess, so the tests never fork pytest itself. Every stand-in appends "<kind> <pid>" to
<data_dir>/events.log, which lets the tests find (and in the end kill) every process.
"""

from __future__ import annotations

import logging
import os
import resource
import select
import signal
import socket
import sys
import time
from pathlib import Path

from mailforge.config import Config, load
from mailforge.process.supervisor import Supervisor

DRIVER = "from tests.unit.supervisor_helpers import main; main()"
EVENTS = "events.log"
STATS = {"smtp": {"connections": 3, "ips": 2, "refused": {"per_ip": 1}}}


def record(config: Config, kind: str) -> None:
    with open(config.data_dir / EVENTS, "a") as fh:
        fh.write(f"{kind} {os.getpid()}\n")


def _orphaned(parent: int) -> bool:
    # If a test dies before cleaning up, the stand-ins must not outlive the supervisor.
    return os.getppid() != parent


def echo_worker(service, config, listeners, heartbeat) -> int:
    """Heart-beats, answers every connection with one line "<service> <pid>", stops on SIGTERM."""
    record(config, "worker")
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    parent = os.getppid()
    while not stopping and not _orphaned(parent):
        heartbeat.notify()
        ready, _, _ = select.select(listeners, [], [], 0.05)
        for sock in ready:
            try:
                conn, _ = sock.accept()
            except BlockingIOError:
                continue  # another worker won the race
            with conn:
                conn.setblocking(True)
                conn.sendall(f"{service} {os.getpid()}\n".encode())
    return 0


def boot_fail_worker(service, config, listeners, heartbeat) -> int:
    record(config, "worker")
    return 3


def crash_at_boot_worker(service, config, listeners, heartbeat) -> int:
    """Dies before its first heartbeat, but without saying it cannot boot (status 1)."""
    record(config, "worker")
    return 1


def silent_worker(service, config, listeners, heartbeat) -> int:
    """Never heart-beats: the supervisor must abort it. No core file from the SIGABRT."""
    record(config, "worker")
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    parent = os.getppid()
    while not _orphaned(parent):
        time.sleep(0.05)
    return 0


def delivery(config, slot, slots, heartbeat, stopping) -> None:
    record(config, "delivery")
    while not stopping():
        heartbeat()
        time.sleep(0.05)


def ratekeeper(config) -> None:
    socket_path = str(config.ratekeeper_socket)
    record_path = Path(socket_path).parent.parent / EVENTS
    with open(record_path, "a") as fh:
        fh.write(f"ratekeeper {os.getpid()}\n")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(socket_path)
    sock.listen(1)
    parent = os.getppid()
    while not _orphaned(parent):
        time.sleep(0.05)


def recover(queue_dir: Path) -> None:
    with open(queue_dir.parent / EVENTS, "a") as fh:
        fh.write(f"recover {os.getpid()}\n")


WORKERS = {"echo": echo_worker, "boot_fail": boot_fail_worker, "silent": silent_worker,
           "crash_at_boot": crash_at_boot_worker}


def main() -> None:
    config_path, worker = sys.argv[1], sys.argv[2]
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(process)d %(levelname)s %(message)s")
    supervisor = Supervisor(
        load(config_path),
        worker_target=WORKERS[worker],
        delivery_target=delivery,
        ratekeeper_target=ratekeeper,
        recover=recover,
        queue_length=lambda queue_dir: 7,
        ratekeeper_stats=lambda path, timeout: {"connections": STATS, "abuse": {"blocks": 0, "blocked_now": 0}},
    )
    sys.exit(supervisor.run())
