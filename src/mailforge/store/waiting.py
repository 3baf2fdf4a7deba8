"""Whether a thread may wait for a folder's locks: a session's command run on the event loop
must not, since the loop serves every other session of the worker meanwhile.

Inside `refused()`, taking a lock another holder has (a folder's flock, held by another
process through an APPEND's syncs; the folder state's mutex, held by a pool thread) raises
WouldWait instead of waiting. The IMAP machine tries such commands on the loop that way and,
when one raises WouldWait before it changed anything, runs it again in the thread pool,
where waiting is harmless.
"""

from __future__ import annotations

import contextlib
import fcntl
import threading
from collections.abc import Iterator

_refusing = threading.local()


class WouldWait(Exception):
    """A lock is held elsewhere and this thread may not wait for it (see `refused`)."""


@contextlib.contextmanager
def refused() -> Iterator[None]:
    """Within: the store's locks are taken only if free at once, else WouldWait."""
    _refusing.on = True
    try:
        yield
    finally:
        _refusing.on = False


def refusing() -> bool:
    return getattr(_refusing, "on", False)


@contextlib.contextmanager
def held(lock: threading.RLock) -> Iterator[None]:
    """`with lock`, or WouldWait where waiting is refused and another thread holds it."""
    if not lock.acquire(blocking=not refusing()):
        raise WouldWait()
    try:
        yield
    finally:
        lock.release()


def flock_exclusive(fd: int) -> None:
    """flock(LOCK_EX), or WouldWait where waiting is refused and another holder has it."""
    if not refusing():
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise WouldWait() from None
