"""The dashboard's last hour: the server's own Prometheus counters (metrics.py), read from
every process's files every SAMPLE_EVERY seconds and kept in memory, so a chart is a walk over
a small list, never a read of every file.

Counters only grow (a dead process's files stay), so a minute's figure is the difference
between the samples around its two ends. The history starts with the worker: a console worker
replaced after a reload begins a new hour.
"""

from __future__ import annotations

import collections
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.multiprocess import MultiProcessCollector

from ..metrics import PREFIX

SAMPLE_EVERY = 5.0
MINUTES = 60
# The series the dashboard charts, by metric (without the prefix), summed over their labels.
CHARTED = ("messages_received_total", "messages_delivered_total", "messages_bounced_total",
           "connections_total")
Totals = dict[str, float]


def read_totals(directory: Path) -> Totals | None:
    """Each charted counter summed over its labels and processes, and the sessions open now
    per service ("connections_current:<service>"); None when a process's file cannot be read
    now: empty for a moment while it is made (metrics.claim_process_files), or gone."""
    totals: Totals = dict.fromkeys(CHARTED, 0.0)
    try:
        families = list(MultiProcessCollector(None, str(directory)).collect())
    except (OSError, ValueError, struct.error):
        return None
    for family in families:
        for sample in family.samples:
            name = sample.name.removeprefix(PREFIX)
            if name in totals:
                totals[name] += sample.value
            elif name == "connections_current":
                key = f"connections_current:{sample.labels.get('service', '')}"
                totals[key] = totals.get(key, 0.0) + sample.value
    return totals


@dataclass(frozen=True)
class Series:
    name: str
    per_minute: list[float]  # oldest first, MINUTES values; the last is the minute under way

    @property
    def last_hour(self) -> float:
        return sum(self.per_minute)


class MetricsHistory:
    def __init__(self, read: Callable[[], Totals | None], clock: Callable[[], float] = time.time) -> None:
        self._read = read
        self._clock = clock
        self._samples: collections.deque[tuple[float, Totals]] = collections.deque(
            maxlen=int(MINUTES * 60 / SAMPLE_EVERY) + 2)

    def sample(self) -> None:
        """A sample, unless the files cannot be read now (the next tick's will be)."""
        taken, totals = self._clock(), self._read()
        if totals is not None:
            self._samples.append((taken, totals))

    def fresh(self) -> Totals:
        """The newest totals, sampled now when the last sample is older than SAMPLE_EVERY."""
        if not self._samples or self._clock() - self._samples[-1][0] >= SAMPLE_EVERY:
            self.sample()
        return self._samples[-1][1] if self._samples else dict.fromkeys(CHARTED, 0.0)

    def series(self, name: str) -> Series:
        now = self._clock()
        current_minute = now - now % 60
        edges = [current_minute - 60 * (MINUTES - 1 - i) for i in range(MINUTES)] + [now + 1]
        # A copy: the worker's tick appends samples from the thread pool meanwhile, and a
        # deque changed under an iteration raises.
        samples = list(self._samples)
        values = [_value_at(samples, name, edge) for edge in edges]
        return Series(name, [max(b - a, 0.0) for a, b in zip(values, values[1:])])


def _value_at(samples: list[tuple[float, Totals]], name: str, moment: float) -> float:
    """The counter at `moment`: the last sample before it; the first one before history."""
    found = samples[0][1].get(name, 0.0) if samples else 0.0
    for taken, totals in samples:
        if taken >= moment:
            break
        found = totals.get(name, 0.0)
    return found
