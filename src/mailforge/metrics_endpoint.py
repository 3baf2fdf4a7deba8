"""The supervisor's /metrics endpoint: every process's values summed, plus what only the
supervisor knows (queue, rate-keeper counters, children), read at scrape time; and /health,
for a load balancer's checks (health.py).

A daemon thread of the supervisor serves it; the supervisor handles no client traffic, and
a scrape never runs in a worker, so a slow scraper costs a session nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from .config import parse_hostport
from .errors import UsageError
from .health import Health
from .metrics import PREFIX, MULTIPROC_ENV

log = logging.getLogger("mailforge.supervisor")


@dataclass
class Snapshot:
    """The supervisor's own view at scrape time."""

    queue_length: int | None
    queue_oldest_age: float | None
    ratekeeper: dict | None  # rate-keeper stats: "abuse", "outbound", "connections"
    children: dict[tuple[str, str], int]  # (kind, service) → processes running
    restarts: dict[tuple[str, str], int]  # (kind, service) → children replaced after dying
    flow: dict[str, Any]  # the queue's flow state, its last sample and limits (flowmonitor.py)


class SupervisorCollector:
    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        if snap.queue_length is not None:
            yield _gauge("queue_length", "Messages waiting in the queue", snap.queue_length)
        if snap.queue_oldest_age is not None:
            yield _gauge("queue_oldest_age_seconds", "Age of the oldest queued message",
                         snap.queue_oldest_age)
        yield from _flow_metrics(snap.flow)
        processes = GaugeMetricFamily(PREFIX + "processes", "Child processes running",
                                      labels=["kind", "service"])
        for (kind, service), count in sorted(snap.children.items()):
            processes.add_metric([kind, service], count)
        yield processes
        restarts = CounterMetricFamily(PREFIX + "worker_restarts", "Children that died unasked "
                                       "and were replaced", labels=["kind", "service"])
        for (kind, service), count in sorted(snap.restarts.items()):
            restarts.add_metric([kind, service], count)
        yield restarts
        yield from _ratekeeper_metrics(snap.ratekeeper or {})


def _gauge(name: str, help: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, help, value=value)


def _flow_metrics(flow: dict[str, Any]) -> Iterator[Metric]:
    """Backpressure as the supervisor's last sample of the queue saw it."""
    state = GaugeMetricFamily(PREFIX + "queue_flow_state", "1 for the state acceptance is in: "
                              "flowing, delaying (in_flow_delay) or refusing (451 4.3.1)",
                              labels=["state"])
    for name in ("flowing", "delaying", "refusing"):
        state.add_metric([name], 1 if flow["state"] == name else 0)
    yield state
    if flow["bytes"] is not None:
        yield _gauge("queue_bytes", "Bytes of the queued messages' files", flow["bytes"])
    yield _gauge("queue_max_messages", "Queued messages past which MAIL is refused",
                 flow["max_messages"])
    yield _gauge("queue_max_bytes", "Queued bytes past which MAIL is refused", flow["max_bytes"])


def _ratekeeper_metrics(stats: dict[str, Any]) -> Iterator[Metric]:
    """Rate-limit blocks as the rate-keeper counts them across all workers and services."""
    abuse, outbound, cluster = stats.get("abuse"), stats.get("outbound"), stats.get("cluster")
    if cluster:
        yield _gauge("cluster_shared", "1 while the limits count over every node (Valkey/Redis "
                     "reachable), 0 while this node falls back to its own counts",
                     int(cluster["shared"]))
        yield CounterMetricFamily(PREFIX + "cluster_fallbacks", "Times this node fell back to "
                                  "its own counts", value=cluster["fallbacks"])
    if abuse:
        yield CounterMetricFamily(PREFIX + "abuse_blocks", "Addresses blocked for failed logins "
                                  "or recipient probes", value=abuse.get("blocks", 0))
        yield CounterMetricFamily(PREFIX + "abuse_tarpitted", "Replies delayed by the tarpit",
                                  value=abuse.get("tarpitted", 0))
        yield _gauge("abuse_blocked_addresses", "Addresses blocked now", abuse.get("blocked_now", 0))
    if outbound:
        yield CounterMetricFamily(PREFIX + "outbound_limit_refusals", "Messages refused by an "
                                  "outbound message limit", value=outbound.get("refused", 0))
        yield _gauge("outbound_limited_senders", "Senders over their outbound limit now",
                     outbound.get("limited_now", 0))


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """A balancer checks every few seconds: no line on stderr for each."""


def _with_health(metrics_app: Callable, health: Health) -> Callable:
    """The WSGI app: /health answered here, everything else by prometheus_client's app."""

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/health":
            return metrics_app(environ, start_response)
        answer = health.answer()
        status = "200 OK" if answer.serving else "503 Service Unavailable"
        body = f"{answer.text}\n".encode()
        start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                                ("Content-Length", str(len(body)))])
        return [body] if environ["REQUEST_METHOD"] != "HEAD" else []

    return app


def _server_class(host: str) -> type[ThreadingWSGIServer]:
    if ":" not in host:
        return ThreadingWSGIServer
    return type("ThreadingWSGIServer6", (ThreadingWSGIServer,), {"address_family": socket.AF_INET6})


def start(listen: str, snapshot: Callable[[], Snapshot], health: Health) -> Any:
    """Serve /metrics and /health on `listen` (host:port) from a daemon thread; the server,
    to close."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, os.environ[MULTIPROC_ENV])
    registry.register(SupervisorCollector(snapshot))
    host, port = parse_hostport(listen)
    app = _with_health(make_wsgi_app(registry), health)
    try:
        server = make_server(host, port, app, _server_class(host), handler_class=_QuietHandler)
    except OSError as exc:
        raise UsageError(f"cannot listen for metrics on {listen}: {exc.strerror or exc}") from None
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("metrics on http://%s/metrics, health on /health", listen)
    return server
