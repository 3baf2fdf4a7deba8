"""The dashboard's last hour (admin/history.py): per-minute figures from counter samples,
with a fake clock and fake totals; and the totals read from real multiprocess files."""

from __future__ import annotations

import pytest

from mailforge.admin.history import MINUTES, SAMPLE_EVERY, MetricsHistory


class Counter:
    def __init__(self) -> None:
        self.value = 0.0

    def read(self) -> dict[str, float]:
        return {"messages_received_total": self.value}


def test_minutes_are_the_differences_between_samples(clock):
    clock.now = 3600.0 * 10  # a minute boundary
    counter = Counter()
    history = MetricsHistory(counter.read, clock)
    history.sample()
    for _ in range(int(180 / SAMPLE_EVERY)):  # three minutes: 1 message per sample
        clock.now += SAMPLE_EVERY
        counter.value += 1
        history.sample()
    series = history.series("messages_received_total")
    assert len(series.per_minute) == MINUTES
    # The first sample (at the boundary) belongs to the minute before: 11, 12, 12, then the
    # one taken at the last boundary opens the minute under way.
    assert series.per_minute[-4:] == [11.0, 12.0, 12.0, 1.0]
    assert series.last_hour == counter.value
    assert sum(history.series("absent").per_minute) == 0


def test_fresh_samples_at_most_once_per_interval(clock):
    counter = Counter()
    history = MetricsHistory(counter.read, clock)
    counter.value = 5
    assert history.fresh()["messages_received_total"] == 5
    counter.value = 6
    assert history.fresh()["messages_received_total"] == 5
    clock.now += SAMPLE_EVERY
    assert history.fresh()["messages_received_total"] == 6


def test_totals_are_read_from_every_process_file(tmp_path, monkeypatch):
    from mailforge import metrics
    from mailforge.admin.history import read_totals

    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(tmp_path))
    pytest.importorskip("prometheus_client")
    metrics.enable(tmp_path)
    try:
        metrics.inc("messages_received_total", 3, service="smtp")
        metrics.inc("messages_received_total", 2, service="submission")
        metrics.set_value("connections_current", 4, service="imap")
        totals = read_totals(tmp_path)
    finally:
        metrics.disable()
    assert totals["messages_received_total"] == 5
    assert totals["connections_current:imap"] == 4
    assert totals["messages_bounced_total"] == 0


def test_a_sample_taken_while_a_chart_is_drawn_does_not_break_it(clock):
    """The worker samples on its thread pool while the loop draws the dashboard's charts: a
    sample appended in the middle of `series` must not end it with "deque mutated"."""
    history: MetricsHistory

    class Sampling(dict):
        def get(self, key, default=None):  # what _value_at reads of each sample
            clock.now += SAMPLE_EVERY
            history.sample()
            return super().get(key, default)

    history = MetricsHistory(lambda: Sampling(messages_received_total=1.0), clock)
    history.sample()
    history.sample()
    assert len(history.series("messages_received_total").per_minute) == MINUTES
