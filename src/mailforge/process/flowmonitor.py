"""The supervisor's watch on the queue: a sample every SAMPLE_INTERVAL, fed to FlowControl
(queue/flow.py), the state published on the shared board (board.py) for the SMTP workers,
and one log line per change of state, never one per message.

It runs in the arbiter's loop: one scandir of queue/active/ per sample, whose entries are
mostly segments of thousands of messages each. A scan that takes long (a huge queue, a slow
disk) spaces the next ones out, so watching never costs the arbiter more than a few percent.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import Config
from ..queue.flow import (RESUME_FRACTION, FlowControl, FlowLimits, FlowState, QueueUsage,
                          resolve_limits)
from . import board

log = logging.getLogger("mailforge.supervisor")

SAMPLE_INTERVAL = 0.25  # seconds; at 8,000 messages/s in, the hard limit is passed by ~2,000
# The next sample waits at least this many times as long as the last scan took.
SCAN_COST_FACTOR = 20


class FlowMonitor:
    def __init__(self, config: Config, usage: Callable[[Path], QueueUsage],
                 clock: Callable[[], float]) -> None:
        self._usage = usage
        self._clock = clock
        self.next_sample = 0.0
        self.since = clock()  # when the state last changed
        self.control = FlowControl(self._limits(config))
        self.queue_dir = config.queue_dir

    def configure(self, config: Config) -> None:
        """A reload: new limits (those derived from the disk derived again), the same state."""
        self.control.limits = self._limits(config)
        self.queue_dir = config.queue_dir
        self.log_limits()

    @staticmethod
    def _limits(config: Config) -> FlowLimits:
        return resolve_limits(config.queue, os.statvfs(config.data_dir))

    def log_limits(self) -> None:
        limits = self.control.limits
        delay = (f"MAIL delayed {limits.delay:g} s while over {limits.backlog} messages and "
                 "growing" if limits.delay else "in_flow_delay off")
        log.info("queue limits: %d messages, %d bytes; %s", limits.max_messages,
                 limits.max_bytes, delay)

    def sample(self, now: float) -> None:
        """Called from the arbiter's loop; does nothing before `next_sample`."""
        if now < self.next_sample:
            return
        started = self._clock()
        try:
            usage = self._usage(self.queue_dir)
        except OSError as exc:  # the state stands until the queue can be read again
            log.debug("queue not sampled: %s", exc)
            self.next_sample = now + SAMPLE_INTERVAL
            return
        self.next_sample = now + max(SAMPLE_INTERVAL,
                                     (self._clock() - started) * SCAN_COST_FACTOR)
        if self.control.update(usage):
            self.since = now
            board.publish_flow_state(self.control.state)
            self._log_change(usage)

    def _log_change(self, usage: QueueUsage) -> None:
        limits, state = self.control.limits, self.control.state
        queued = f"{usage.messages} messages, {usage.bytes} bytes queued"
        if state is FlowState.REFUSING:
            log.warning("queue flow: refusing new mail (451 4.3.1): %s, limits %d messages, "
                        "%d bytes; accepting again under %.0f%% of both", queued,
                        limits.max_messages, limits.max_bytes, RESUME_FRACTION * 100)
        elif state is FlowState.DELAYING:
            log.warning("queue flow: delaying each MAIL %g s: %s and growing (in_flow_backlog "
                        "%d)", limits.delay, queued, limits.backlog)
        else:
            log.info("queue flow: accepting without delay again: %s", queued)

    def status(self, now: float) -> dict[str, Any]:
        limits, usage = self.control.limits, self.control.usage
        return {
            "state": self.control.state.label,
            "since": round(now - self.since, 1),
            "messages": usage.messages if usage else None,
            "bytes": usage.bytes if usage else None,
            "max_messages": limits.max_messages,
            "max_bytes": limits.max_bytes,
            "in_flow_delay": limits.delay,
            "in_flow_backlog": limits.backlog,
        }
