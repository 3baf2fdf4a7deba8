"""/health for a load balancer's checks (HAProxy's `option httpchk GET /health`): 200 "ok"
while this node serves, 503 and a one-line reason while it starts, stops, or cannot reach its
accounts database.

The answer is cached a second: a balancer checks every node often, and each check must not
cost a database round trip.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

# How long one answer stands: several balancers checking every few hundred milliseconds cost
# the database one query a second.
CACHE_SECONDS = 1.0


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
        self._answer: str | None = None
        self._expires = float("-inf")

    def problem(self) -> str | None:
        """None while healthy, else the reason, one line."""
        with self._lock:
            now = self._clock()
            if now >= self._expires:
                self._answer = self._serving_problem() or self._accounts_problem()
                self._expires = now + CACHE_SECONDS
            return self._answer
