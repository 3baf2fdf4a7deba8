"""glibc malloc tuning for worker processes.

glibc serves a large allocation with its own mmap and unmaps it on free, until the first such
free: then it raises its mmap threshold to that size (up to 32 MiB) and serves the next ones
from an arena, which keeps them resident. scrypt asks OpenSSL for 16 MiB per password check,
in whichever pool thread runs it, so every pool thread's arena ended up holding 16 MiB: an IMAP
worker grew by 70-130 MiB under the fuzz suite's failed logins and stayed there. A fixed
threshold keeps big buffers (scrypt, a large message) mapped only while in use; an mmap per
login costs nothing beside scrypt itself.
"""

from __future__ import annotations

import ctypes

M_MMAP_THRESHOLD = -3  # <malloc.h>; setting it also turns the dynamic threshold off
WORKER_MMAP_THRESHOLD = 1024 * 1024


def return_large_buffers() -> None:
    """Once per worker process. Not glibc (musl has no mallopt): nothing to do."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, WORKER_MMAP_THRESHOLD)
