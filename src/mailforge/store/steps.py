"""Changes whose syncs the caller may run elsewhere.

A change that must sync before it is answered (APPEND: the message file before it is renamed
into its folder; the folder's directory and change log before the client hears its UID) is a
generator that yields each sync as a Step: a callable that only blocks, with no Python work to
speak of. `run` does the steps in place, where blocking is harmless (a thread of the pool);
the IMAP machine on the event loop hands each step to the pool and goes on with the change on
the loop once it is done (protocols/imap/state.py), so that the change's own work does not
take the GIL from the loop in a pool thread. A step that fails is thrown back into the
change, which cleans up as if its sync had failed in place.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator
from typing import TypeVar

T = TypeVar("T")

Step = Callable[[], None]
Steps = Generator[Step, None, T]


def run(steps: Steps[T]) -> T:
    """Every step of a change done here, in order; the change's result."""
    try:
        step = next(steps)
        while True:
            try:
                step()
            except BaseException as exc:  # noqa: BLE001 - the change's to handle or re-raise
                step = steps.throw(exc)
            else:
                step = steps.send(None)
    except StopIteration as done:
        return done.value


def sync_and_close(fds: list[int]) -> Step:
    """A step: each file's data synced, and every descriptor closed, whatever failed."""
    def step() -> None:
        try:
            for fd in fds:
                os.fdatasync(fd)
        finally:
            for fd in fds:
                os.close(fd)
    return step
