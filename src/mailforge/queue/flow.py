"""Backpressure: what the queue's size means for acceptance — flowing, delaying or refusing.

Acceptance can outrun delivery several times over (issue 21: 8,400 messages/s in, 3,000 out),
and then the queue grows without bound. Two answers, as Postfix has them:
- while the queue holds `in_flow_backlog` messages or more and is still growing, each MAIL
  waits `in_flow_delay` (Postfix's in_flow_delay), which slows senders to what delivery moves;
- past `max_messages` or `max_bytes` MAIL gets `451 4.3.1`, before the client sends a body,
  until the queue is back under RESUME_FRACTION of both (hysteresis: no flapping at the line).

The supervisor samples the queue a few times a second and feeds each sample to FlowControl;
the state reaches the SMTP workers through a shared page (process/board.py), so a MAIL costs
the read of one byte, never a look at the disk. This module is pure: no IO, no clock of its own.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass

from ..config import QueueConfig

# Refusing ends once the queue is under this fraction of both limits.
RESUME_FRACTION = 0.9
# `max_messages = 0`: this many, or half the data disk's free inodes where that is fewer
# (every message of the store takes one, big queued messages two).
DEFAULT_MAX_MESSAGES = 100_000
FREE_INODES_SHARE = 0.5
# `max_bytes = 0`: a quarter of the free space: delivery needs room for the copies it makes
# of what is queued (a fan-out makes several), and the logs and mailboxes share the disk.
FREE_SPACE_SHARE = 0.25
# Never derive a limit so small that a nearly full disk at start refuses everything for good;
# the full-disk path (452 4.3.1 after DATA) still guards what is left.
MIN_DERIVED_BYTES = 64 * 1024 * 1024


class FlowState(enum.IntEnum):
    FLOWING = 0
    DELAYING = 1   # MAIL waits in_flow_delay
    REFUSING = 2   # MAIL gets 451 4.3.1

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class QueueUsage:
    """What the queue holds: messages, and the bytes of their files."""

    messages: int
    bytes: int


@dataclass(frozen=True)
class FlowLimits:
    max_messages: int
    max_bytes: int
    backlog: int   # in_flow_backlog
    delay: float   # in_flow_delay; 0: never delaying

    def over(self, usage: QueueUsage) -> bool:
        return usage.messages >= self.max_messages or usage.bytes >= self.max_bytes

    def drained(self, usage: QueueUsage) -> bool:
        return (usage.messages < self.max_messages * RESUME_FRACTION
                and usage.bytes < self.max_bytes * RESUME_FRACTION)


def resolve_limits(queue: QueueConfig, disk: os.statvfs_result) -> FlowLimits:
    """The configured limits, those left at 0 derived from the data disk's `statvfs`."""
    max_messages = queue.max_messages
    if not max_messages:
        max_messages = DEFAULT_MAX_MESSAGES
        if disk.f_files:  # 0 where the file system has no fixed inode table (btrfs)
            max_messages = max(1, min(max_messages, int(disk.f_favail * FREE_INODES_SHARE)))
    max_bytes = queue.max_bytes or max(MIN_DERIVED_BYTES,
                                       int(disk.f_bavail * disk.f_frsize * FREE_SPACE_SHARE))
    return FlowLimits(max_messages, max_bytes, queue.in_flow_backlog, queue.in_flow_delay)


class FlowControl:
    """Each sample of the queue in, the state acceptance should be in out."""

    def __init__(self, limits: FlowLimits) -> None:
        self.limits = limits
        self.state = FlowState.FLOWING
        self.usage: QueueUsage | None = None  # the last sample

    def update(self, usage: QueueUsage) -> bool:
        """Take a new sample; True when the state changed."""
        previous, self.usage = self.usage, usage
        new = self._next_state(usage, previous)
        changed, self.state = new is not self.state, new
        return changed

    def _next_state(self, usage: QueueUsage, previous: QueueUsage | None) -> FlowState:
        limits = self.limits
        if limits.over(usage) or (self.state is FlowState.REFUSING and not limits.drained(usage)):
            return FlowState.REFUSING
        if not limits.delay or usage.messages < limits.backlog or previous is None:
            return FlowState.FLOWING
        if usage.messages > previous.messages:
            return FlowState.DELAYING
        # Level between two samples: stay as we are; shrinking: delivery is catching up.
        if usage.messages == previous.messages and self.state is FlowState.DELAYING:
            return FlowState.DELAYING
        return FlowState.FLOWING
