"""Memory tuning for worker processes: glibc's malloc and Python's cycle collector.

glibc serves a large allocation with its own mmap and unmaps it on free, until the first such
free: then it raises its mmap threshold to that size (up to 32 MiB) and serves the next ones
from an arena, which keeps them resident. scrypt asks OpenSSL for 16 MiB per password check,
in whichever pool thread runs it, so every pool thread's arena ended up holding 16 MiB: an IMAP
worker grew by 70-130 MiB under the fuzz suite's failed logins and stayed there. A fixed
threshold keeps big buffers (scrypt, a large message) mapped only while in use; an mmap per
login costs nothing beside scrypt itself.

The cycle collector ran every 700 container allocations (CPython's default), so every few
IMAP commands, and each run walked the young objects: ~2% of an IMAP worker's CPU under
imaptest. What the worker built before serving (modules, config) is frozen out of every
collection, and the first generation is collected after GC_FIRST_GENERATION allocations.
"""

from __future__ import annotations

import ctypes
import gc

M_MMAP_THRESHOLD = -3  # <malloc.h>; setting it also turns the dynamic threshold off
WORKER_MMAP_THRESHOLD = 1024 * 1024
GC_FIRST_GENERATION = 20_000


def return_large_buffers() -> None:
    """Once per worker process. Not glibc (musl has no mallopt): nothing to do."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, WORKER_MMAP_THRESHOLD)


def settle_collector() -> None:
    """Once per worker process, before it serves."""
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(GC_FIRST_GENERATION, second, third)
