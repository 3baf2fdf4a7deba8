"""A delivery worker's pause after a storage error.

On a full disk the delivery workers once retried their deferral writes in a tight loop:
47,000 log lines and 2,300 tracebacks a second, on the disk that had to recover (issue 21).
ENOSPC, EDQUOT and EIO belong to the file system, not to the entry that met them: the next
entry would meet them too. So the whole worker pauses, 1, 2, 4 … 30 s while they last, and
goes back to no pause once an entry gets through: one log line per pause, none during it.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

FIRST_PAUSE = 1.0
LONGEST_PAUSE = 30.0
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO})


def storage_error(exc: BaseException) -> bool:
    """A fault of the file system (full, over quota, failing): logged without a traceback."""
    return isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS


class StorageBackoff:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.pause = 0.0  # seconds of the current (or last) pause; 0: no trouble
        self.until = 0.0
        self.errors = 0  # storage errors met, paused or not

    def paused(self) -> bool:
        return self._clock() < self.until

    def failed(self) -> bool:
        """Count a storage error; True when it starts a new pause (the one to log), False
        when it came during one (another entry of the same scan)."""
        self.errors += 1
        if self.paused():
            return False
        self.pause = min(LONGEST_PAUSE, self.pause * 2 or FIRST_PAUSE)
        self.until = self._clock() + self.pause
        return True

    def succeeded(self) -> bool:
        """An entry got through; True when that ends a spell of trouble."""
        if not self.pause:
            return False
        self.pause = self.until = 0.0
        return True
