"""What a thread may not do while it serves the event loop: wait for a folder's locks, or
read much of the messages — the loop serves every other session of the worker meanwhile.

Inside `refused()`, taking a lock another holder has (a folder's flock, held by another
process through an APPEND's syncs; the folder state's mutex, held by a pool thread) raises
WouldWait instead of waiting, and so does reading messages past the octets it allows
(`charge_read`). The IMAP machine tries such commands on the loop that way and, when one
raises WouldWait before it changed anything, runs it again in the thread pool, where waiting
and long reads are harmless.
"""

from __future__ import annotations

import fcntl
import threading

_refusing = threading.local()


class WouldWait(Exception):
    """A lock is held elsewhere and this thread may not wait for it (see `refused`)."""


class refused:
    """Within: the store's locks are taken only if free at once, and at most `read_limit`
    octets of messages are read; else WouldWait. (A class, not a generator: it is entered
    for every command run on the loop.)"""

    __slots__ = ("read_limit",)

    def __init__(self, read_limit: int = 0) -> None:
        self.read_limit = read_limit

    def __enter__(self) -> None:
        _refusing.on = True
        _refusing.read_left = self.read_limit

    def __exit__(self, *exc_info: object) -> None:
        _refusing.on = False


def refusing() -> bool:
    return getattr(_refusing, "on", False)


def charge_read(size: int) -> None:
    """Before a message of `size` octets is read: WouldWait where waiting is refused and the
    reads so far and this one pass the limit `refused` was given."""
    if refusing():
        _refusing.read_left -= size
        if _refusing.read_left < 0:
            raise WouldWait()


class held:
    """`with lock`, or WouldWait where waiting is refused and another thread holds it. (A
    class, not a generator: a folder's mutex is taken several times a command.)"""

    __slots__ = ("lock",)

    def __init__(self, lock: threading.RLock) -> None:
        self.lock = lock

    def __enter__(self) -> None:
        if not self.lock.acquire(blocking=not refusing()):
            raise WouldWait()

    def __exit__(self, *exc_info: object) -> None:
        self.lock.release()


def flock_exclusive(fd: int) -> None:
    """flock(LOCK_EX), or WouldWait where waiting is refused and another holder has it."""
    if not refusing():
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise WouldWait() from None
