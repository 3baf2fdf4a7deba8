"""/health for a load balancer's checks (HAProxy's `option httpchk GET /health`): 200 "ok"
while this node serves, 503 and a one-line reason while it starts or stops.

A PostgreSQL accounts database that does not answer makes the answer 200 "degraded: …", not
503: every node shares that database, so a failing check would take them all out of the
balancer at once, and clients would meet refused connections instead of the temporary
answers the node gives meanwhile (`454 4.7.0`, `-ERR [SYS/TEMP]`, `NO [UNAVAILABLE]`).
Monitoring reads the reason from the body.

Whether the node serves is asked at every check (it is the supervisor's own state, and a
node that stops must leave the balancer at once: its listeners are closed already); the
database's answer is cached a second, as each check must not cost a database round trip.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import NamedTuple

# How long the database's answer stands: several balancers checking every few hundred
# milliseconds cost it one query a second.
CACHE_SECONDS = 1.0


class Answer(NamedTuple):
    serving: bool  # 200 when true, else 503
    text: str  # one line: "ok", "degraded: why", or why the node does not serve


class Health:
    def __init__(self, serving_problem: Callable[[], str | None],
                 accounts_problem: Callable[[], str | None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`serving_problem`: why the node does not serve now (None when it does);
        `accounts_problem`: why the accounts database does not answer (None when it does)."""
        self._serving_problem = serving_problem
        self._accounts_problem = accounts_problem
        self._clock = clock
        self._lock = threading.Lock()  # checks arrive on several threads; one asks at a time
        self._accounts_answer: str | None = None
        self._expires = float("-inf")

    def answer(self) -> Answer:
        serving_problem = self._serving_problem()
        if serving_problem:
            return Answer(False, serving_problem)
        accounts_problem = self._cached_accounts_problem()
        return Answer(True, f"degraded: {accounts_problem}" if accounts_problem else "ok")

    def _cached_accounts_problem(self) -> str | None:
        with self._lock:
            now = self._clock()
            if now >= self._expires:
                self._accounts_answer = self._accounts_problem()
                self._expires = now + CACHE_SECONDS
            return self._accounts_answer
