"""Prometheus metrics for every process, aggregated by prometheus-client's multiprocess mode.

Each process (protocol worker, delivery worker, supervisor) writes its values into mmap'd
files of its own under PROMETHEUS_MULTIPROC_DIR; the supervisor's /metrics endpoint sums them.
An update is a dict lookup and a write into the mmap: no syscall, no socket, no shared lock.

Adding a metric: one row in DEFINITIONS; using it: `metrics.inc("name", service=...)`, or for a
hot path `counter = metrics.child("name", service=...)` once, then `counter.inc()`.
Before `enable()` (tests of pure parts, CLI commands, `[metrics] listen = ""`) every call is
a no-op, so instrumented code never checks whether metrics are on.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PREFIX = "mailforge_"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Seconds from queueing to placement: local delivery is milliseconds, remote ones are seconds
# to days (retries), so the buckets span both.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900,
                   3600, 14400, 86400)


@dataclass(frozen=True)
class Definition:
    kind: str  # counter | gauge | histogram
    help: str
    labels: tuple[str, ...] = ()
    # Gauges: how the values of the processes combine (prometheus-client's multiprocess_mode);
    # "livesum" drops a process's share once the supervisor marks it dead.
    mode: str = "livesum"


DEFINITIONS: dict[str, Definition] = {
    "connections_total": Definition("counter", "TCP connections accepted", ("service",)),
    "connections_current": Definition("gauge", "Sessions open now", ("service",)),
    "connections_refused_total": Definition(
        "counter", "Connections refused before the greeting", ("service", "reason")),
    "sessions_total": Definition("counter", "Sessions served (not refused)", ("service",)),
    "commands_total": Definition("counter", "Commands handled", ("service", "outcome")),
    "auth_total": Definition("counter", "Login attempts", ("service", "result")),
    "messages_received_total": Definition("counter", "Messages accepted into the queue", ("service",)),
    "messages_delivered_total": Definition("counter", "Recipient copies delivered", ("via",)),
    "messages_deferred_total": Definition("counter", "Messages deferred for a retry", ("via",)),
    "messages_bounced_total": Definition(
        "counter", "Recipient copies that failed for good (badmail or bounce)", ("via",)),
    "delivery_latency_seconds": Definition(
        "histogram", "Seconds from queueing to delivery, per recipient copy", ("via",)),
    "worker_restarts_total": Definition(
        "counter", "Children that died unasked and were replaced", ("kind", "service")),
    "threadpool_threads": Definition("gauge", "IO pool threads started, summed over the workers", ("service",)),
    "threadpool_max_threads": Definition("gauge", "IO pool threads allowed, summed over the workers ([service] max_threads)", ("service",)),
    "threadpool_queued": Definition(
        "gauge", "IO tasks waiting for a free pool thread (saturation)", ("service",)),
    "threadpool_saturated_total": Definition(
        "counter", "Worker ticks that found IO tasks waiting for a pool thread", ("service",)),
}


class _Off:
    """What `child()` hands out while metrics are off."""

    def inc(self, amount: float = 1) -> None:
        pass

    def dec(self, amount: float = 1) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def observe(self, value: float) -> None:
        pass


OFF = _Off()
_families: dict[str, Any] = {}
_children: dict[tuple, Any] = {}


def enable(directory: Path) -> None:
    """Multiprocess mode in `directory`, emptied: called by the supervisor before any fork, so
    that every child inherits the setting. Values of an earlier run would be summed in."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(mode=0o750, parents=True)
    os.environ[MULTIPROC_ENV] = str(directory)
    import prometheus_client
    from prometheus_client import values

    # It picks its value class (mmap'd files or plain memory) from the environment at import,
    # which may have come first (a test process).
    values.ValueClass = values.get_value_class()
    _families.clear()
    _children.clear()
    for name, definition in DEFINITIONS.items():
        _families[name] = _make(prometheus_client, name, definition)


def _make(client: Any, name: str, definition: Definition) -> Any:
    full = PREFIX + name.removesuffix("_total") if definition.kind == "counter" else PREFIX + name
    if definition.kind == "counter":
        return client.Counter(full, definition.help, definition.labels, registry=None)
    if definition.kind == "gauge":
        return client.Gauge(full, definition.help, definition.labels, registry=None,
                            multiprocess_mode=definition.mode)
    return client.Histogram(full, definition.help, definition.labels, registry=None,
                            buckets=LATENCY_BUCKETS)


def enabled() -> bool:
    return bool(_families)


def child(name: str, **labels: str) -> Any:
    """The labelled value to update on a hot path (keep it); a no-op value while metrics are off."""
    family = _families.get(name)
    if family is None:
        if _families and name not in DEFINITIONS:
            raise KeyError(f"unknown metric {name!r}: add it to metrics.DEFINITIONS")
        return OFF
    key = (name, *labels.items())
    found = _children.get(key)
    if found is None:
        found = _children[key] = family.labels(**labels) if labels else family
    return found


def inc(name: str, amount: float = 1, **labels: str) -> None:
    child(name, **labels).inc(amount)


def dec(name: str, amount: float = 1, **labels: str) -> None:
    child(name, **labels).dec(amount)


def set_value(name: str, value: float, **labels: str) -> None:
    child(name, **labels).set(value)


def observe(name: str, value: float, **labels: str) -> None:
    child(name, **labels).observe(value)


def mark_dead(pid: int) -> None:
    """A reaped child's live gauges (open connections…) stop counting."""
    if _families:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, os.environ[MULTIPROC_ENV])
