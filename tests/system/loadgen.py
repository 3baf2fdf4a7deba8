"""Concurrent smtplib clients that remember which messages got 250, bounded in count and time
(and, for the soak suite, by a stop event)."""

from __future__ import annotations

import smtplib
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from .conftest import USER


@dataclass
class LoadResult:
    accepted: set[str] = field(default_factory=set)
    failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Why sends failed: the reply code ("452") or the exception's name ("SMTPServerDisconnected").
    errors: Counter = field(default_factory=Counter)


def message(msgid: str, size: int = 0) -> bytes:
    """A message of about `size` octets (at least ~300): headers, then 78-octet lines."""
    text = (f"From: load@remote.test\r\nTo: {USER}\r\nSubject: load\r\nMessage-ID: <{msgid}>\r\n\r\n"
            f"body of {msgid}\r\n").encode() + b"x" * 200 + b"\r\n"
    line = b"y" * 78 + b"\r\n"
    return text + line * max(0, (size - len(text)) // len(line))


def client(port: int, name: str, count: int, result: LoadResult, deadline: float,
           per_connection: int = 50, stop: threading.Event | None = None,
           make_message: Callable[[str, int], bytes] = lambda msgid, n: message(msgid),
           pause: float = 0.0, retry_pause: float = 0.05) -> None:
    """Send up to `count` messages before `deadline` (or `stop`); `make_message(msgid, n)` for
    the n-th; `pause` between messages; after a failure, `retry_pause` then a new connection."""
    sent = 0
    attempt = 0

    def going() -> bool:
        return sent < count and time.monotonic() < deadline and not (stop and stop.is_set())

    while going():
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
                smtp.ehlo("load.test")
                for _ in range(per_connection):
                    if not going():
                        break
                    # A retried message gets a new id: a message whose 250 was lost may still arrive.
                    msgid = f"{name}-{sent}-{attempt}@load.test"
                    attempt += 1
                    smtp.sendmail("load@remote.test", [USER], make_message(msgid, sent))
                    with result.lock:
                        result.accepted.add(msgid)
                    sent += 1
                    if pause:
                        time.sleep(pause)
        except (smtplib.SMTPException, OSError) as exc:
            why = (str(exc.smtp_code) if isinstance(exc, smtplib.SMTPResponseException)
                   else type(exc).__name__)
            with result.lock:
                result.failed += 1
                result.errors[why] += 1
            time.sleep(retry_pause)


def run_load(port: int, clients: int, messages: int, timeout: float = 120, prefix: str = "c",
             **options) -> tuple[LoadResult, list[threading.Thread]]:
    """Start the clients in threads; the caller joins them (and may kill things meanwhile).
    Their names (in each Message-ID) start with `prefix`, so that groups started apart differ;
    `options` go to each `client` (per_connection, stop, make_message, pause, retry_pause)."""
    result = LoadResult()
    deadline = time.monotonic() + timeout
    threads = [threading.Thread(target=client, kwargs=options, daemon=True,
                                args=(port, f"{prefix}{i}", messages, result, deadline))
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
