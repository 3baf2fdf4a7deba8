"""Concurrent smtplib clients that remember which messages got 250, bounded in count and time."""

from __future__ import annotations

import smtplib
import threading
import time
from dataclasses import dataclass, field

from .conftest import USER


@dataclass
class LoadResult:
    accepted: set[str] = field(default_factory=set)
    failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def message(msgid: str) -> bytes:
    return (f"From: load@remote.test\r\nTo: {USER}\r\nSubject: load\r\nMessage-ID: <{msgid}>\r\n\r\n"
            f"body of {msgid}\r\n").encode() + b"x" * 200 + b"\r\n"


def client(port: int, name: str, count: int, result: LoadResult, deadline: float,
           per_connection: int = 50) -> None:
    sent = 0
    attempt = 0
    while sent < count and time.monotonic() < deadline:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
                smtp.ehlo("load.test")
                for _ in range(per_connection):
                    if sent >= count or time.monotonic() > deadline:
                        break
                    # A retried message gets a new id: a message whose 250 was lost may still arrive.
                    msgid = f"{name}-{sent}-{attempt}@load.test"
                    attempt += 1
                    smtp.sendmail("load@remote.test", [USER], message(msgid))
                    with result.lock:
                        result.accepted.add(msgid)
                    sent += 1
        except (smtplib.SMTPException, OSError):
            with result.lock:
                result.failed += 1
            time.sleep(0.05)


def run_load(port: int, clients: int, messages: int, timeout: float = 120) -> tuple[LoadResult, list[threading.Thread]]:
    """Start the clients in threads; the caller joins them (and may kill things meanwhile)."""
    result = LoadResult()
    deadline = time.monotonic() + timeout
    threads = [threading.Thread(target=client, args=(port, f"c{i}", messages, result, deadline), daemon=True)
               for i in range(clients)]
    for thread in threads:
        thread.start()
    return result, threads


def join(threads: list[threading.Thread], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.1, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "load clients did not finish in time"


def delivered_ids(paths) -> list[str]:
    ids = []
    for path in paths:
        for line in path.read_bytes().split(b"\n"):
            if line.startswith(b"Message-ID: <"):
                ids.append(line[13:-1].decode())
                break
    return ids
