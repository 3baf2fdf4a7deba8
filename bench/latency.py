"""Latency percentiles for the bench reports: nearest-rank, so every figure is one that was seen."""

from __future__ import annotations

import math
from collections.abc import Sequence

# The percentiles every report shows, then the worst case.
PERCENTILES = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99))


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile: the smallest value with at least `fraction` of all at or
    below it (of 100 values, p99 is the 99th smallest, not the largest)."""
    if not values:
        raise ValueError("no values")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction {fraction} is outside 0..1")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def summary(values: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99 and max of `values`; empty when there are none."""
    if not values:
        return {}
    ordered = sorted(values)
    figures = {name: percentile(ordered, fraction) for name, fraction in PERCENTILES}
    figures["max"] = ordered[-1]
    return figures
