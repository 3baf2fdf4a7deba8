"""When a deferred message is tried again, and when it has waited too long."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

# Each delay is stretched or shrunk by up to this fraction, so messages deferred together
# (a destination that was down) do not all come back in the same second.
JITTER = 0.1


def retry_delay(schedule: Sequence[float], attempts: int,
                rng: Callable[[], float] = random.random) -> float:
    """The wait after failed attempt number `attempts` (0-based); the last delay repeats."""
    base = schedule[min(attempts, len(schedule) - 1)]
    return base * (1 + JITTER * (2 * rng() - 1))


def next_attempt(now: float, received_at: float, schedule: Sequence[float], attempts: int,
                 max_queue_time: float, rng: Callable[[], float] = random.random) -> float:
    """Never later than the expiry time, so a message that keeps failing bounces on time."""
    return min(now + retry_delay(schedule, attempts, rng),
               max(now, received_at + max_queue_time))


def expired(now: float, received_at: float, max_queue_time: float) -> bool:
    return now - received_at >= max_queue_time
