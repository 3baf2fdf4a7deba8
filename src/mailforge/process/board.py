"""One page of memory the supervisor shares with every child it forks: state, not traffic.

Made MAP_SHARED | MAP_ANONYMOUS before the first fork (as the heartbeats are), so every child
inherits it without a file, a chown or a syscall per read or write. It holds:
- the queue's flow state (queue/flow.py): written by the supervisor after each sample of the
  queue, read by the SMTP workers at every MAIL — one byte, which no read can see half-written;
- each delivery slot's storage back-off in seconds (0: none), written by the delivery worker
  of that slot, read by `mailforge status`. Two generations of a slot overlap for a moment
  during a reload; the last to write is the one shown.

Like metrics, a module-level singleton: the supervisor opens it before any fork; until then
(tests of parts, CLI commands) reads answer FLOWING and 0, and writes do nothing.
"""

from __future__ import annotations

import mmap
import struct

from ..queue.flow import FlowState

# Slots past this one (more delivery workers than anyone runs) report no back-off.
MAX_DELIVERY_SLOTS = 256
_STATE_OFFSET = 0
_BACKOFF = struct.Struct("d")
_BACKOFF_OFFSET = 8  # aligned: a double is stored in one access on the CPUs we run on
_SIZE = _BACKOFF_OFFSET + MAX_DELIVERY_SLOTS * _BACKOFF.size

_page: mmap.mmap | None = None


def open_board() -> None:
    """In the supervisor, before the first fork."""
    global _page
    if _page is None:
        _page = mmap.mmap(-1, _SIZE, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)


def publish_flow_state(state: FlowState) -> None:
    if _page is not None:
        _page[_STATE_OFFSET] = state


def flow_state() -> FlowState:
    return FlowState(_page[_STATE_OFFSET]) if _page is not None else FlowState.FLOWING


def report_storage_backoff(slot: int, seconds: float) -> None:
    """A delivery worker: it pauses `seconds` after a storage error; 0 once it is over."""
    if _page is not None and 0 <= slot < MAX_DELIVERY_SLOTS:
        _BACKOFF.pack_into(_page, _BACKOFF_OFFSET + slot * _BACKOFF.size, seconds)


def storage_backoff(slot: int) -> float:
    if _page is None or not 0 <= slot < MAX_DELIVERY_SLOTS:
        return 0.0
    return _BACKOFF.unpack_from(_page, _BACKOFF_OFFSET + slot * _BACKOFF.size)[0]
