"""Liveness proof from a child process to the supervisor (STYLE.md 3).

gunicorn's WorkerTmp toggles the mode of an unlinked temp file and the arbiter reads its
ctime. We keep the idea (a private channel made before fork, one cheap write per beat) but use
an anonymous shared mapping holding `time.monotonic()`:
- no syscall per beat and no file to chown after the worker drops privileges;
- ctime is wall-clock time, so an NTP step forward would make every worker look silent at
  once and get killed; CLOCK_MONOTONIC is system-wide on Linux and macOS, so a value written
  by the child can be compared with the parent's own clock.
"""

from __future__ import annotations

import mmap
import struct
import time

_STAMP = struct.Struct("d")
# A read racing a write could in theory see half of the old and half of the new value;
# reading until two reads agree rules that out without a lock shared across processes.
_MAX_READS = 8


class Heartbeat:
    """Made by the parent before fork; the child calls notify(), the parent last_update()."""

    def __init__(self) -> None:
        # MAP_SHARED | MAP_ANONYMOUS: the same page stays shared by parent and child after fork.
        self._map = mmap.mmap(-1, _STAMP.size, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
        self.notify()

    def notify(self) -> None:
        """Child: prove liveness. Cheap enough to call every second or more often."""
        _STAMP.pack_into(self._map, 0, time.monotonic())

    def last_update(self) -> float:
        """Parent: the `time.monotonic()` of the last notify (creation counts as one)."""
        previous = _STAMP.unpack_from(self._map, 0)[0]
        for _ in range(_MAX_READS):
            current = _STAMP.unpack_from(self._map, 0)[0]
            if current == previous:
                break
            previous = current
        return previous

    def silent_for(self, now: float | None = None) -> float:
        """Seconds since the last notify, by the monotonic clock."""
        return (time.monotonic() if now is None else now) - self.last_update()

    def close(self) -> None:
        if not self._map.closed:
            self._map.close()
