"""Prometheus metrics for every process, aggregated by prometheus-client's multiprocess mode.

Each child process (protocol worker, delivery worker) writes its values into mmap'd files of
its own under PROMETHEUS_MULTIPROC_DIR; the supervisor's /metrics endpoint sums them. An update
is a dict lookup and a write into the mmap: no syscall, no socket, no shared lock.

A write into a mapped file whose page has no block behind it is SIGBUS when the file system is
full: no exception, the process dies. So the files live on a memory file system of their own
(not the spool's disk), each child reserves its files' blocks before its first update
(`claim_process_files`), and the supervisor writes none: what it counts itself it serves from
memory (metrics_endpoint.Snapshot).

Adding a metric: one row in DEFINITIONS; using it: `metrics.inc("name", service=...)`, or for a
hot path `counter = metrics.child("name", service=...)` once, then `counter.inc()`.
Before `enable()` (tests of pure parts, CLI commands, `[metrics] listen = ""`) every call is
a no-op, so instrumented code never checks whether metrics are on.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("mailforge.metrics")

PREFIX = "mailforge_"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Memory, not disk: where the per-process files go unless [metrics] directory says otherwise.
MEMORY_FS = Path("/dev/shm")
# The size prometheus-client gives a new per-process file (mmap_dict._INITIAL_MMAP_SIZE): a
# process's few hundred values fit, so the files never grow past what was reserved.
PROCESS_FILE_SIZE = 1 << 16
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


# Every metric has labels: a family without any makes its value, and writes it, in the
# supervisor at enable().
DEFINITIONS: dict[str, Definition] = {
    "connections_total": Definition("counter", "TCP connections accepted", ("service",)),
    "connections_current": Definition("gauge", "Sessions open now", ("service",)),
    "connections_refused_total": Definition(
        "counter", "Connections refused before the greeting", ("service", "reason")),
    "sessions_total": Definition("counter", "Sessions served (not refused)", ("service",)),
    "proxied_sessions_total": Definition(
        "counter", "POP3/IMAP sessions of mailboxes another node owns, proxied to it (result "
        "ok) or refused for now because it could not be reached (unavailable)",
        ("service", "node", "result")),
    "commands_total": Definition("counter", "Commands handled", ("service", "outcome")),
    "auth_total": Definition("counter", "Login attempts", ("service", "result")),
    "messages_received_total": Definition("counter", "Messages accepted into the queue", ("service",)),
    "messages_delivered_total": Definition("counter", "Recipient copies delivered", ("via",)),
    "messages_deferred_total": Definition("counter", "Messages deferred for a retry", ("via",)),
    "messages_bounced_total": Definition(
        "counter", "Recipient copies that failed for good (badmail or bounce)", ("via",)),
    "inflow_delayed_total": Definition(
        "counter", "MAIL commands delayed by [queue] in_flow_delay while the queue grew",
        ("service",)),
    "inflow_refused_total": Definition(
        "counter", "MAIL commands refused (451 4.3.1) while the queue was over its limit",
        ("service",)),
    "delivery_storage_errors_total": Definition(
        "counter", "Storage errors (a full disk, a quota, EIO) that paused a delivery worker",
        ("error",)),
    "delivery_storage_backoff_seconds": Definition(
        "gauge", "Seconds a delivery worker pauses after a storage error (0: none)", ("slot",),
        mode="livemax"),
    "delivery_latency_seconds": Definition(
        "histogram", "Seconds from queueing to delivery, per recipient copy", ("via",)),
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


def make_directory(configured: str, data_dir: Path) -> Path:
    """A new private directory for this run's files, inside `configured` (relative to the data
    dir), else on MEMORY_FS, else under <data_dir>/run. Directories an earlier run of the same
    data dir left behind (a supervisor killed with -9) are removed: their values would not be
    summed in, but they would pile up in memory."""
    if configured:
        parent = data_dir / configured
    elif MEMORY_FS.is_dir() and os.access(MEMORY_FS, os.W_OK | os.X_OK):
        parent = MEMORY_FS
    else:
        parent = data_dir / "run"
    prefix = f"mailforge-metrics-{hashlib.sha256(bytes(data_dir.resolve())).hexdigest()[:12]}-"
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(prefix + "*"):
        if stale.is_dir() and not stale.is_symlink() and stale.stat().st_uid == os.geteuid():
            shutil.rmtree(stale, ignore_errors=True)
    directory = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    directory.chmod(0o750)
    return directory


def enable(directory: Path) -> None:
    """Multiprocess mode in `directory` (new and empty): called by the supervisor before any
    fork, so that every child inherits the setting."""
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


def directory() -> Path | None:
    """Where this run's files are, while metrics are on: a child's sandbox lets it write there."""
    return Path(os.environ[MULTIPROC_ENV]) if _families else None


def disable() -> None:
    _families.clear()
    _children.clear()


def claim_process_files() -> None:
    """In a child, before its first update: give its files (<kind>_<pid>.db, prometheus-client's
    names) all their blocks now, so that no later write into their mapping can meet a full file
    system. Without them the process runs with its metrics off, which it logs: counting is not
    worth a mail process."""
    if not _families:
        return
    pid = os.getpid()
    for kind in sorted(_file_kinds()):
        path = os.path.join(os.environ[MULTIPROC_ENV], f"{kind}_{pid}.db")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            os.posix_fallocate(fd, 0, max(PROCESS_FILE_SIZE, os.fstat(fd).st_size))
        except OSError as exc:
            if os.fstat(fd).st_size == 0:
                os.unlink(path)  # an empty file is one the endpoint cannot read
            log.warning("metrics off in process %d: no room for its values in %s: %s",
                        pid, os.path.dirname(path), exc.strerror or exc)
            disable()
            return
        finally:
            os.close(fd)


def _file_kinds() -> set[str]:
    """prometheus-client keeps one file per value type, and per mode for gauges."""
    return {f"gauge_{d.mode}" if d.kind == "gauge" else d.kind for d in DEFINITIONS.values()}


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
